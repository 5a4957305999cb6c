#!/usr/bin/env bash
# The benchmark suite (issue 7; BENCHMARKS.md). Generates inputs into benches/data/ (git-ignored),
# then measures, each as a ratio taken in this run on the same inputs:
#   1. decode + 8-frame sampling vs decord and PyAV (1 thread each; all cores)
#   2. end-to-end `regionfeat extract` vs benches/python_pipeline.py (same model, batch, selection)
#   3. pipeline efficiency: end-to-end frames/s / detector-alone frames/s (benches/detector_alone.rs)
#   4. bytes per video: regionfeat shards (f16/f32 x gzip/lzf) vs DemoVLP per-frame .npz
#   5. scaling: 1 vs N decode threads; peak RSS at 10 / 100 / 1000 items
# Usage: benches/run_all.sh [--quick] [--detector MODEL.onnx] [--device cpu|cuda:0] [--batch-size 8]
#   --quick     24 videos (5 and 15 s) instead of 36 (5/20/60 s), 2 rounds instead of 3 (~15 min on 2 cores)
#   --detector  default: benches/data/vg-tiny.onnx exported by detector/export.py (seeded), else the
#               bundled test detector
#   --device    detector device for items 2, 3, 5 (cuda:N needs a CUDA onnxruntime; see BENCHMARKS.md)
# Results: benches/data/results/<date>/summary.txt (+ the raw JSON of every measurement).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
QUICK=""; DETECTOR=""; DEVICE=cpu; BATCH=8
while (( $# )); do
  case "$1" in
    --quick) QUICK=--quick; shift;; --detector) DETECTOR=$2; shift 2;; --device) DEVICE=$2; shift 2;;
    --batch-size) BATCH=$2; shift 2;; *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
ROUNDS=3; [[ -n "$QUICK" ]] && ROUNDS=2
NPROC=$(nproc)
DATA=benches/data
OUT="$DATA/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
say() { echo "$@" | tee -a "$SUMMARY"; }
T0=$(date +%s)

build_bins
benches/gen_data.sh $QUICK >&2
if [[ -z "$DETECTOR" ]]; then
  DETECTOR="$DATA/vg-tiny.onnx"
  if [[ ! -s "$DETECTOR" ]]; then
    "$PY" detector/export.py --preset vg-tiny --seed 0 --out "$DETECTOR" >&2 2>&1 || DETECTOR=examples/models/test-grid.onnx
  fi
fi
VIDEOS_JSONL="$DATA/manifests/videos.jsonl"
NVID=$(wc -l < "$DATA/videos.txt")
say "regionfeat benchmarks $(date -Iseconds) on $(hostname): $NPROC cores, $(awk '/MemTotal/{printf "%.0f GB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); detector $DETECTOR on $DEVICE, batch $BATCH; $NVID videos (${QUICK:-full})"
say "git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"

# ---- 1. decode + sampling -------------------------------------------------------------------------
say ""; say "## 1. decode + 8-frame sampling (RGB24, original size)"
benches/run_decode.sh --list "$DATA/videos.txt" --workers 1 --repeat 1 --rounds "$ROUNDS" --results "$OUT" 2>>"$OUT/log.txt" | tee -a "$SUMMARY"
benches/run_decode.sh --list "$DATA/videos.txt" --workers "$NPROC" --repeat 1 --rounds "$ROUNDS" --results "$OUT" 2>>"$OUT/log.txt" | tee -a "$SUMMARY"

# ---- 2. end to end ----------------------------------------------------------------------------------
# extract_run NAME EXTRA_ARGS... : runs regionfeat extract under /usr/bin/time, JSON summary + RSS.
extract_run() {
  local name=$1; shift
  rm -rf "$OUT/$name"
  /usr/bin/time -f '{"rss_kb": %M, "cpu_s": %U, "sys_s": %S, "wall_s": %e}' -o "$OUT/$name.time" \
    "$RF_BIN" extract --detector "$DETECTOR" --device "$DEVICE" --batch-size "$BATCH" --out "$OUT/$name" --quiet --json "$@" \
    > "$OUT/$name.json" 2>>"$OUT/log.txt" || true
}
ips() { "$PY" benches/fmt.py rate "$1"; }
say ""; say "## 2. end to end: regionfeat extract vs Python pipeline (PyAV + numpy + onnxruntime + h5py), $NVID videos"
best_rf=0; best_rf_f=0; best_py=0; best_py_f=0
for r in $(seq 1 "$ROUNDS"); do
  extract_run "e2e_rf_$r" --manifest "$VIDEOS_JSONL"
  read -r i f c < <(ips "$OUT/e2e_rf_$r.json"); echo "$c" > "$OUT/e2e_rf_$r.cpu"
  best_rf=$("$PY" -c "print(max($best_rf,$i))"); best_rf_f=$("$PY" -c "print(max($best_rf_f,$f))")
  rm -rf "$OUT/e2e_py_$r"
  "$PY" benches/python_pipeline.py --manifest "$VIDEOS_JSONL" --detector "$DETECTOR" --device "$DEVICE" --batch-size "$BATCH" \
    --out "$OUT/e2e_py_$r" --json > "$OUT/e2e_py_$r.json" 2>>"$OUT/log.txt"
  i=$(jfield "$OUT/e2e_py_$r.json" items_per_s); f=$(jfield "$OUT/e2e_py_$r.json" frames_per_s)
  best_py=$("$PY" -c "print(max($best_py,$i))"); best_py_f=$("$PY" -c "print(max($best_py_f,$f))")
done
say "  items/s: regionfeat $(printf %.2f "$best_rf")  python $(printf %.2f "$best_py")  ratio $(ratio "$best_rf" "$best_py")x (goal >= 1.5; best of $ROUNDS)"
say "  same work: $("$PY" benches/compare_shards.py "$OUT/e2e_rf_1/shard-000000.h5" "$OUT/e2e_py_1/shard-000000.h5" | tail -1)"
say "  CPU seconds (round 1): regionfeat $(cat "$OUT/e2e_rf_1.cpu") (user+sys, all threads)  python $(jfield "$OUT/e2e_py_1.json" cpu_seconds)"
say "  regionfeat stage busy (round 1, summed over threads): $("$PY" benches/fmt.py busy "$OUT/e2e_rf_1.json")"
say "  python busy (round 1): $("$PY" benches/fmt.py pybusy "$OUT/e2e_py_1.json")"

# ---- 3. pipeline efficiency ------------------------------------------------------------------------
say ""; say "## 3. pipeline efficiency: end-to-end frames/s / detector-alone frames/s (same model, batch $BATCH)"
"$DETECTOR_BIN" --detector "$DETECTOR" --manifest "$VIDEOS_JSONL" --batch-size "$BATCH" --device "$DEVICE" --repeat 1 --json \
  > "$OUT/detector_alone.json" 2>>"$OUT/log.txt"
DET_F=$(jfield "$OUT/detector_alone.json" frames_per_s)
say "  detector alone $(printf %.1f "$DET_F") frames/s, end to end $(printf %.1f "$best_rf_f") frames/s: efficiency $(ratio "$best_rf_f" "$DET_F") (goal >= 0.95)"

# ---- 4. bytes per video -----------------------------------------------------------------------------
say ""; say "## 4. bytes per 8-frame video on disk (same regions; K=30)"
head -n 12 "$VIDEOS_JSONL" > "$OUT/bytes.jsonl"; cp "$OUT/bytes.jsonl" "$DATA/manifests/bytes.jsonl"
for v in "f16 gzip" "f16 lzf" "f32 gzip" "f32 lzf"; do
  set -- $v
  extract_run "bytes_$1_$2" --manifest "$DATA/manifests/bytes.jsonl" --feature-dtype "$1" --compression "$2" --shard-size 1024
done
"$PY" benches/npz_size.py "$OUT/bytes_f32_gzip/shard-000000.h5" "$OUT/npz" --json > "$OUT/npz.json" 2>>"$OUT/log.txt"
NPZ=$(jfield "$OUT/npz.json" bytes_per_video); NV=$(jfield "$OUT/npz.json" videos)
say "  DemoVLP per-frame npz (f32, savez_compressed): $(printf %.0f "$NPZ") bytes/video"
for v in f16_gzip f16_lzf f32_gzip f32_lzf; do
  B=$(stat -c %s "$OUT/bytes_$v/shard-000000.h5")
  PER=$("$PY" -c "print($B/$NV)")
  say "  regionfeat $v: $(printf %.0f "$PER") bytes/video  ratio vs npz $(ratio "$PER" "$NPZ")x$([[ $v == f16_gzip ]] && echo ' (default; goal <= 0.5)')"
done

# ---- 5. scaling -------------------------------------------------------------------------------------
say ""; say "## 5. scaling"
extract_run "threads_1" --manifest "$VIDEOS_JSONL" --decode-threads 1
read -r t1 _ _ < <(ips "$OUT/threads_1.json")
say "  decode threads 1: $(printf %.2f "$t1") items/s;  $NPROC: $(printf %.2f "$best_rf") items/s (speed-up $(ratio "$best_rf" "$t1")x)"
RSS_DET="$DETECTOR"; [[ -n "$QUICK" ]] && RSS_DET=examples/models/test-grid.onnx
for n in 10 100 1000; do
  DETECTOR_SAVE=$DETECTOR; DETECTOR=$RSS_DET
  extract_run "rss_$n" --manifest "$DATA/manifests/repeat$n.jsonl"
  DETECTOR=$DETECTOR_SAVE
  say "  peak RSS at $n items: $("$PY" benches/fmt.py rss "$OUT/rss_$n.time") [$(basename "$RSS_DET")]"
done
say ""; say "total benchmark time $(( $(date +%s) - T0 )) s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
say "results in $OUT"
