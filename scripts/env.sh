# Environment for building and running regionfeat from this checkout (sourced by the scripts).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_site=$(ls -d "$_root"/.venv/lib/python3*/site-packages 2>/dev/null | head -n1)
# libtorch for the `train` feature comes from the torch wheel in .venv.
if [ -n "$_site" ] && [ -d "$_site/torch/lib" ]; then
  export LIBTORCH="$_site/torch"
  export LIBTORCH_BYPASS_VERSION_CHECK=${LIBTORCH_BYPASS_VERSION_CHECK:-0}
fi
# The binary finds .venv's libonnxruntime.so by itself; set ORT_DYLIB_PATH to override.
export REGIONFEAT_PYTHON="$_root/.venv/bin/python"
unset _root _site
