# Sourced by the benchmark scripts: paths, the Python interpreter, and the release binaries
# (built once, then run directly so nothing rebuilds in the middle of a measurement).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$(ls "$ROOT"/.venv/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so.1* 2>/dev/null | sort | tail -1)}"

# build_bins: sets RF_BIN (regionfeat CLI), DECODE_BIN, DETECTOR_BIN.
build_bins() {
  ( cd "$ROOT" && cargo build -q --release --bin regionfeat ) >&2
  local tdir="${CARGO_TARGET_DIR:-$ROOT/target}"
  RF_BIN="$tdir/release/regionfeat"
  local json
  json="$(cd "$ROOT" && cargo bench -q --no-run --bench decode --bench detector_alone --message-format=json 2>/dev/null)"
  DECODE_BIN="$(printf '%s\n' "$json" | "$PY" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="decode" and m.get("executable"): print(m["executable"])')"
  DETECTOR_BIN="$(printf '%s\n' "$json" | "$PY" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="detector_alone" and m.get("executable"): print(m["executable"])')"
  [[ -x "$RF_BIN" && -x "$DECODE_BIN" && -x "$DETECTOR_BIN" ]] || { echo "build failed" >&2; return 1; }
}

# jq-free JSON field: jfield FILE KEY
jfield() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# ratio A B (A/B, 2 decimals)
ratio() { "$PY" -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}" if b else "nan")' "$1" "$2"; }
