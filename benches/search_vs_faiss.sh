#!/usr/bin/env bash
# Issue 11: `regionfeat search` one-query ranking at 12k and 1M items vs faiss-cpu IndexFlatIP,
# same embeddings (f16 rows; faiss gets them widened to f32), same 20 queries, k=10.
# faiss-cpu goes into its own venv (benches/data/faiss-venv), not the project's .venv.
# Usage: benches/search_vs_faiss.sh [DIM=256]
# SEARCH_BENCH_DATA / FAISS_VENV move the generated rows (512 MiB at 1M) and the venv elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
DIM=${1:-256}
D=${SEARCH_BENCH_DATA:-benches/data/search}
mkdir -p "$D"
VENV=${FAISS_VENV:-benches/data/faiss-venv}
if [ ! -x "$VENV/bin/python" ]; then
  .venv/bin/python -m venv "$VENV"
  "$VENV/bin/pip" install -q faiss-cpu numpy
fi
PY="$VENV/bin/python"
cargo build -q --release --bench search
BIN=$(ls -t target/release/deps/search-* | grep -v '\.d$' | head -1)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for N in ${SEARCH_BENCH_SIZES:-12000 1000000}; do
  [ -f "$D/rows_$N.f16" ] || "$PY" benches/search_vs_faiss.py gen "$D" "$N" "$DIM" 20
  "$BIN" "$D/rows_$N.f16" "$DIM" "$D/queries.f32" 10 "$D/regionfeat_$N.json"
  "$PY" benches/search_vs_faiss.py faiss "$D" "$N" "$DIM" 10 "$D/faiss_$N.json"
  "$PY" benches/search_vs_faiss.py compare "$D/regionfeat_$N.json" "$D/faiss_$N.json"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done
