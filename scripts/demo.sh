#!/usr/bin/env bash
# Set up a fresh machine and run the main job on the bundled samples (examples/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
./target/release/regionfeat extract "$@"
