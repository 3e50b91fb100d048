#!/usr/bin/env bash
# The main job on the embedded default: MovieLens-100K through the pipeline.
# Usage: scripts/main.sh [RUN_DIR]   (default runs/ml-100k)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
RUN_DIR=${1:-runs/ml-100k}
start=$(date +%s)
.venv/bin/alignrec prepare --dataset ml-100k --out "$RUN_DIR"
echo "done in $(( $(date +%s) - start )) s; outputs in $RUN_DIR" >&2
