#!/usr/bin/env bash
# Grid-model benchmarks (issue 10; BENCHMARKS.md "Grid shards"), ratios taken in one run on the
# same inputs:
#   1. speed: `regionfeat extract --model vit.onnx` vs benches/grid_pytorch.py (the same ViT in
#      PyTorch eager on CPU: same frames, same batches), frames/s, best of --rounds
#   2. bytes per 8-frame video: grid shards at 14x14 and --grid-pool 7 vs a region shard
#      (K=30, D=2048: the test detector exported with --feature-dim 2048), f16 + gzip
# Usage: benches/grid_bench.sh [--preset vit-b16|vit-tiny] [--videos 12] [--batch-size 8] [--rounds 2]
# The model is detector/export_grid.py's seeded preset (benches/data/<preset>.onnx; the same
# preset and seed are rebuilt in PyTorch by the baseline). Results: benches/data/results/grid-<date>/.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
PRESET=vit-b16; NV=12; BATCH=8; ROUNDS=2
while (( $# )); do
  case "$1" in
    --preset) PRESET=$2; shift 2;; --videos) NV=$2; shift 2;; --batch-size) BATCH=$2; shift 2;;
    --rounds) ROUNDS=$2; shift 2;; *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
DATA=benches/data
OUT="$DATA/results/grid-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
say() { echo "$@" | tee -a "$SUMMARY"; }
NPROC=$(nproc)

( cargo build -q --release --bin regionfeat ) >&2
RF_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/regionfeat"
benches/gen_data.sh --quick >&2
MODEL="$DATA/$PRESET.onnx"
[[ -s "$MODEL" ]] || "$PY" detector/export_grid.py --preset "$PRESET" --seed 0 --out "$MODEL" >&2
REGION_MODEL="$DATA/test-grid-2048.onnx"
[[ -s "$REGION_MODEL" ]] || "$PY" detector/make_test_detector.py "$REGION_MODEL" --feature-dim 2048 >&2
MANIFEST="$DATA/manifests/grid.jsonl"
head -n "$NV" "$DATA/manifests/videos.jsonl" > "$MANIFEST"

say "regionfeat grid benchmarks $(date -Iseconds): $NPROC cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); model $PRESET (seeded), batch $BATCH, $NV videos x 8 frames"
say "git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"

rf() {  # rf NAME ARGS...: regionfeat extract, JSON summary + /usr/bin/time
  local name=$1; shift
  rm -rf "$OUT/$name"
  /usr/bin/time -f '{"rss_kb": %M, "cpu_s": %U, "sys_s": %S, "wall_s": %e}' -o "$OUT/$name.time" \
    "$RF_BIN" extract --manifest "$MANIFEST" --batch-size "$BATCH" --out "$OUT/$name" --quiet --json "$@" \
    > "$OUT/$name.json" 2>>"$OUT/log.txt"
}
fps() { "$PY" benches/fmt.py rate "$1" | awk '{print $2}'; }

say ""; say "## 1. grid extraction speed, frames/s (CPU, best of $ROUNDS)"
"$PY" benches/grid_pytorch.py --manifest "$MANIFEST" --preset "$PRESET" --out "$OUT/warm" --batch-size "$BATCH" --json > /dev/null 2>>"$OUT/log.txt"
best_rf=0; best_rf1=0; best_py=0
for r in $(seq 1 "$ROUNDS"); do
  rf "rf_default_$r" --model "$MODEL"
  rf "rf_1dec_$r" --model "$MODEL" --decode-threads 1 --intra-threads "$NPROC"
  "$PY" benches/grid_pytorch.py --manifest "$MANIFEST" --preset "$PRESET" --out "$OUT/py_$r" --batch-size "$BATCH" --json \
    > "$OUT/py_$r.json" 2>>"$OUT/log.txt"
  best_rf=$("$PY" -c "print(max($best_rf, $(fps "$OUT/rf_default_$r.json")))")
  best_rf1=$("$PY" -c "print(max($best_rf1, $(fps "$OUT/rf_1dec_$r.json")))")
  best_py=$("$PY" -c "print(max($best_py, $(jfield "$OUT/py_$r.json" frames_per_s)))")
done
say "  regionfeat (default: decode threads $((NPROC / 2 > 0 ? NPROC / 2 : 1)), ONNX Runtime the other cores): $(printf %.2f "$best_rf") frames/s"
say "  regionfeat (--decode-threads 1 --intra-threads $NPROC):          $(printf %.2f "$best_rf1") frames/s"
say "  PyTorch eager ($(jfield "$OUT/py_1.json" torch_threads) threads, PyAV decode):                $(printf %.2f "$best_py") frames/s"
say "  ratio regionfeat/PyTorch: $(ratio "$best_rf" "$best_py")x default, $(ratio "$best_rf1" "$best_py")x with all cores to ONNX Runtime"
cpu_rf() { "$PY" -c 'import json,sys; print(min(sum(json.load(open(f))[k] for k in ("cpu_s","sys_s")) for f in sys.argv[1:]))' "$@"; }
cpu_py() { "$PY" -c 'import json,sys; print(min(json.load(open(f))["cpu_seconds"] for f in sys.argv[1:]))' "$@"; }
C_RF=$(cpu_rf "$OUT"/rf_default_*.time); C_PY=$(cpu_py "$OUT"/py_*.json)
say "  CPU seconds for the $((NV * 8)) frames (user+sys, least of $ROUNDS; robust to load): regionfeat $(printf %.1f "$C_RF")  PyTorch $(printf %.1f "$C_PY")  ratio $(ratio "$C_PY" "$C_RF")x less CPU"
say "  PyTorch busy (round 1): $("$PY" -c 'import json,sys; b=json.load(open(sys.argv[1]))["busy"]; print(", ".join(f"{k} {v:.2f}s" for k,v in b.items()))' "$OUT/py_1.json")"
say "  regionfeat stage busy (round 1): $("$PY" benches/fmt.py busy "$OUT/rf_default_1.json")"

say ""; say "## 2. bytes per 8-frame video (f16 + gzip 4)"
rf grid14 --model "$MODEL"
rf grid7 --model "$MODEL" --grid-pool 7
rf regions --model "$REGION_MODEL"
per() { "$PY" -c 'import os,sys; print(os.path.getsize(sys.argv[1]) / int(sys.argv[2]))' "$OUT/$1/shard-000000.h5" "$NV"; }
D=$("$PY" -c 'import h5py,sys; print(h5py.File(sys.argv[1])["grid_features"].shape[-1])' "$OUT/grid14/shard-000000.h5")
R=$(per regions)
say "  region shard (K=30, D=2048, test detector): $(printf %.0f "$R") bytes/video"
for g in grid14 grid7; do
  B=$(per "$g")
  RAW=$("$PY" -c "print(8 * (196 if '$g' == 'grid14' else 49) * $D * 2)")
  say "  grid $([[ $g == grid14 ]] && echo 14x14 || echo 7x7), D=$D: $(printf %.0f "$B") bytes/video (raw f16 $(printf %.0f "$RAW"); compression $(ratio "$B" "$RAW")); vs region shard $(ratio "$B" "$R")x"
done
say ""; say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"
