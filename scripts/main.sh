#!/usr/bin/env bash
# The main job on the embedded default: MovieLens-100K through the whole pipeline
# (prepare -> SASRec behaviour embeddings -> Alignment Tokenization -> dense sequential tasks ->
# LoRA fine-tune of the first layers of SmolLM2-135M -> constrained beam search beside SASRec
# and popularity on every test user -> pre-cache -> report).
# Usage: scripts/main.sh [extra `alignrec run` options, e.g. --set finetune.max_steps=500]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/ml100k  # configs/ml100k.yaml's, unless an argument sets it
for arg in "$@"; do
    case "$arg" in out=*) out=${arg#out=} ;; --set=out=*) out=${arg#--set=out=} ;; esac
done
start=$(date +%s)
.venv/bin/alignrec run configs/ml100k.yaml "$@"
echo "main job finished in $(( $(date +%s) - start )) s" >&2
echo "report: $out/report/report.md" >&2
echo "serve it: .venv/bin/alignrec serve --run $out --fallback popularity" >&2
