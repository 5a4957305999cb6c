#!/usr/bin/env bash
# Set up a fresh machine and run every test: Rust (unit + integration, with and without the
# `train` feature) and the Python checks (detector tooling, h5py reader example).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
echo "== cargo test"
cargo test --quiet 2>&1
echo "== cargo test --features train (trainer: libtorch from .venv)"
cargo test --quiet --features train --lib 2>&1
cargo test --quiet --features train --test integration -- train_cli:: train_dist:: benchmarks:: 2>&1
if [ -d detector/tests ]; then
  echo "== pytest detector/tests"
  .venv/bin/python -m pytest -q detector/tests
fi
