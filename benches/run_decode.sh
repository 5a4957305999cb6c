#!/usr/bin/env bash
# Decode + 8-frame sampling throughput: regionfeat vs decord vs PyAV on the same files, in the
# same run (issue 2). Each tool runs --rounds times, interleaved (regionfeat, decord, PyAV,
# regionfeat, ...) so background load hits all three alike; the best round counts.
#   benches/run_decode.sh [--workers N] [--repeat R] [--rounds K] [--results DIR] [VIDEO... | --list FILE]
# --workers 1: one decoder thread each; --workers N: regionfeat decodes N videos at a time (one
# thread each), decord and PyAV use a pool of N processes.
set -euo pipefail
source "$(dirname "$0")/common.sh"
WORKERS=1; REPEAT=2; ROUNDS=3; RESULTS=""; LIST=""; VIDEOS=()
while (( $# )); do
  case "$1" in
    --workers) WORKERS=$2; shift 2;; --repeat) REPEAT=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;;
    --results) RESULTS=$2; shift 2;; --list) LIST=$2; shift 2;; *) VIDEOS+=("$1"); shift;;
  esac
done
if [[ -z "$LIST" ]]; then
  LIST="$(mktemp)"
  if (( ${#VIDEOS[@]} )); then printf '%s\n' "${VIDEOS[@]}" > "$LIST"; else ls "$ROOT"/examples/webvid/videos/*/*.mp4 > "$LIST"; fi
fi
RESULTS="${RESULTS:-$(mktemp -d)}"; mkdir -p "$RESULTS"
[[ -n "${DECODE_BIN:-}" ]] || build_bins
tag="w$WORKERS"
for r in $(seq 1 "$ROUNDS"); do
  "$DECODE_BIN" --list "$LIST" --repeat "$REPEAT" --workers "$WORKERS" --json --times-out "$RESULTS/times_regionfeat.json" > "$RESULTS/dec_${tag}_rf_$r.json"
  "$PY" "$ROOT/benches/decode_ref.py" decord --list "$LIST" --repeat "$REPEAT" --procs "$WORKERS" --json --times-out "$RESULTS/times_decord.json" > "$RESULTS/dec_${tag}_decord_$r.json"
  "$PY" "$ROOT/benches/decode_ref.py" pyav --list "$LIST" --repeat "$REPEAT" --procs "$WORKERS" --json --times-out "$RESULTS/times_pyav.json" > "$RESULTS/dec_${tag}_pyav_$r.json"
done
read -r RF RFC < <("$PY" "$ROOT/benches/fmt.py" decode-best "$RESULTS"/dec_${tag}_rf_*.json)
read -r DE DEC < <("$PY" "$ROOT/benches/fmt.py" decode-best "$RESULTS"/dec_${tag}_decord_*.json)
read -r PA PAC < <("$PY" "$ROOT/benches/fmt.py" decode-best "$RESULTS"/dec_${tag}_pyav_*.json)
MIS=$("$PY" "$ROOT/benches/compare_times.py" "$RESULTS/times_regionfeat.json" "$RESULTS/times_decord.json" "$RESULTS/times_pyav.json")
N=$(wc -l < "$LIST")
echo "decode+sample 8 frames, $N videos, $WORKERS worker(s) (best of $ROUNDS rounds x $REPEAT passes):"
echo "  wall videos/s: regionfeat $RF  decord $DE  pyav $PA  -> regionfeat/decord $(ratio "$RF" "$DE")x  regionfeat/pyav $(ratio "$RF" "$PA")x  (goal: regionfeat/decord >= 2)"
echo "  CPU ms/video:  regionfeat $RFC  decord $DEC  pyav $PAC  -> regionfeat/decord $(ratio "$DEC" "$RFC")x  regionfeat/pyav $(ratio "$PAC" "$RFC")x  (CPU-time ratio, robust to background load)"
echo "$MIS" | sed 's/^/  frame choice vs regionfeat: /'
"$PY" -c 'import json,sys; json.dump(dict(workers=int(sys.argv[1]),videos=int(sys.argv[2]),regionfeat=float(sys.argv[3]),decord=float(sys.argv[4]),pyav=float(sys.argv[5]),mismatch=sys.argv[6],cpu_ms=[float(x) for x in sys.argv[8:11]]), open(sys.argv[7],"w"))' \
  "$WORKERS" "$N" "$RF" "$DE" "$PA" "$MIS" "$RESULTS/decode_$tag.json" "$RFC" "$DEC" "$PAC"
