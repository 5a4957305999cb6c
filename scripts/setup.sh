#!/usr/bin/env bash
# Installs everything regionfeat needs on a fresh Debian 12 machine, then builds it.
#   - apt: FFmpeg dev libs, HDF5, clang (bindgen), pkg-config
#   - .venv: onnxruntime (its libonnxruntime.so is what the binary loads), h5py, torch, ...
#   - the bundled test detector (examples/models/test-grid.onnx), vg-tiny and vit-tiny
#   - cargo build --release (and --features train when REGIONFEAT_TRAIN=1)
# Idempotent: steps already done are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS="pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
libswresample-dev libavfilter-dev libavdevice-dev ffmpeg libhdf5-dev"
missing=""
for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "== apt-get install$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  $PY -m venv .venv
fi
stamp=.venv/.regionfeat-reqs
reqs=""
for r in requirements.txt detector/requirements.txt tests/train/requirements.txt; do [ -f "$r" ] && reqs="$reqs $r"; done
want=$(cat $reqs | sha256sum | cut -c1-16)
if [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  echo "== pip install -r$reqs"
  .venv/bin/pip install -q --upgrade pip
  for r in $reqs; do .venv/bin/pip install -q -r "$r"; done
  echo "$want" > $stamp
fi

mkdir -p examples/models
if [ ! -f examples/models/test-grid.onnx ] || [ detector/make_test_detector.py -nt examples/models/test-grid.onnx ]; then
  .venv/bin/python detector/make_test_detector.py examples/models/test-grid.onnx
fi

# vg-tiny: the real VG Faster R-CNN graph (narrow, seeded weights) for the demo and the tests.
if [ ! -f examples/models/vg-tiny.onnx ] || [ -n "$(find detector -name '*.py' ! -name 'vit.py' ! -name 'export_grid.py' ! -path '*/tests/*' -newer examples/models/vg-tiny.onnx | head -n1)" ]; then
  .venv/bin/python detector/export.py --preset vg-tiny --seed 0 --out examples/models/vg-tiny.onnx
fi

# vit-tiny: the ViT grid model (narrow, seeded weights) for the grid demo and tests.
if [ ! -f examples/models/vit-tiny.onnx ] || [ detector/vit.py -nt examples/models/vit-tiny.onnx ] || [ detector/export_grid.py -nt examples/models/vit-tiny.onnx ]; then
  .venv/bin/python detector/export_grid.py --preset vit-tiny --seed 0 --out examples/models/vit-tiny.onnx
fi

source scripts/env.sh
echo "== cargo build --release"
cargo build --release --quiet
