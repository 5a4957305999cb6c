#!/usr/bin/env bash
# A 4-way SLURM job array over one manifest. Each array task owns every 4th shard
# (regionfeat reads SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT / SLURM_ARRAY_TASK_MIN).
# Pre-empted or timed-out tasks are simply resubmitted: committed shards are skipped,
# partial ones redone, stale locks of dead tasks taken over.
#
#   sbatch examples/slurm_extract.sh
#
#SBATCH --job-name=regionfeat
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --requeue
set -euo pipefail
MANIFEST=${MANIFEST:-/data/webvid/results_2M_train.csv}
ROOT=${ROOT:-/data/webvid/videos}
DETECTOR=${DETECTOR:-/models/vg-r101.onnx}
OUT=${OUT:-/feats/webvid}
DEVICE=${DEVICE:-cuda:0}
REGIONFEAT=${REGIONFEAT:-regionfeat}

# shellcheck disable=SC2086  # REGIONFEAT_ARGS is a list of extra flags
"$REGIONFEAT" extract --manifest "$MANIFEST" --root "$ROOT" --detector "$DETECTOR" \
  --out "$OUT" --device "$DEVICE" --quiet ${REGIONFEAT_ARGS:-}
# Once every task has finished (e.g. a dependent job: sbatch --dependency=afterany:<jobid>):
#   regionfeat verify --manifest "$MANIFEST" --root "$ROOT" --out "$OUT"
