#!/usr/bin/env bash
# The paper's experiments on the real data sets with the CPU budgets of docs/experiments.md.
# Every command resumes where it stopped: run it again after a kill. Run folders stay on the machine: a session on
# a fresh machine starts them again, so size each run to end (evaluation included) in the session that starts it.
#
#   scripts/paper_cpu.sh llm DATASET ours|lcrec [--set ...]   # instruments | games: one LLM run folder
#   scripts/paper_cpu.sh ablations SEED [--cell NAME ...]     # Industrial: the ablation sweep of one seed
#   scripts/paper_cpu.sh baselines DATASET MODEL ...          # instruments | games: classic models to early stopping
#   scripts/paper_cpu.sh item_head SEED [--cell NAME ...]     # Industrial: configs/paper/item_head.yaml for one seed
#
# llm: runs/exp-DATASET (ours: alignment codes, dense windows) or runs/exp-DATASET-lcrec (LC-Rec-style:
#   RQ-VAE codes, one-target prompts); 4 decoder layers of SmolLM2-135M, LoRA dropout 0.1, the code-only
#   head, the sequential task alone (no item text in these copies), 1 torch thread (two runs share the
#   2 cores). Pass the step budget, e.g. --set finetune.max_steps=4650 (3 epochs of Instruments' windows).
# ablations: runs/sweeps/ablations_industrial_seedSEED, every cell of configs/paper/ablations.yaml at one
#   budget: 2 decoder layers, no LoRA dropout, 2,000 steps of 16 (about 7 epochs of the sequential task),
#   the four task families with the auxiliary ones capped (negative ratio 0.05 per target, 500 text and
#   300 TS-Align examples, texts cut to 32 words) so that the sequential task keeps about 70% of the
#   examples. Seed 0 also trains the classic models.
# baselines: benchmarks/baselines.py table with the settings of benchmarks/configs/baselines.yaml (Games: early
#   stopping, no time budget), one thread, beside another run (so outside the bench lock), continuing each model
#   from its checkpoint in runs/collab-bench; prepares runs/DATASET first when it is missing.
# item_head: runs/sweeps/item_head_industrial_seedSEED, the cells of configs/paper/item_head.yaml on Industrial at the
#   ablations' budget with the sequential task alone (the best ablation cell), every stage seeded from SEED, the
#   ranking checked on every validation user every 500 steps (the checkpoint and the ranker chosen there), both
#   protocols scored (evaluate.exclude: both), and
#   FMLP-Rec (Industrial's best classic model) trained to early stopping in every seed's run.
# llm, ablations and item_head use SASRec item embeddings for the tokenizer, as the main job does (configs/ml100k.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
export ALIGNREC_PROGRESS=${ALIGNREC_PROGRESS:-0}

common=(
  --set finetune.head=code --set tasks.sequential_format=dense --set finetune.batch_size=16
  --set finetune.learning_rate=0.002 --set finetune.lr_scheduler=cosine --set finetune.warmup_ratio=0.02
  --set finetune.lora_r=8 --set finetune.max_length=256 --set finetune.logging_steps=50
  --set finetune.rank_eval_steps=0 --set finetune.early_stopping_patience=0 --set finetune.new_token_init=default
  --set finetune.torch_threads=1 --set tasks.max_valid_samples=200
  --set behaviour.model=sasrec --set behaviour.embedding_dim=64 --set behaviour.loss=ce --set behaviour.train_stride=5
  --set behaviour.dropout=0.1
  --set evaluate.batch_size=32 --set evaluate.shard_users=2000 --set threads=1
)

case "${1:-}" in
  llm)
    dataset=${2:?dataset}; variant=${3:?ours or lcrec}; shift 3
    out=runs/exp-$dataset; extra=()
    case $variant in
      ours) ;;
      lcrec) out=runs/exp-$dataset-lcrec; extra=(--set tokenizer.method=rqvae --set tasks.sequential_format=lcrec) ;;
      *) echo "paper_cpu.sh llm: variant must be ours or lcrec, got '$variant'" >&2; exit 2 ;;
    esac
    exec .venv/bin/alignrec run "configs/$dataset.yaml" "${common[@]}" \
      --set finetune.llm_layers=4 --set finetune.lora_dropout=0.1 --set 'tasks.tasks=[sequential]' \
      --set finetune.save_steps=300 --set behaviour.max_train_minutes=10.0 --set 'baselines=[{model: pop}]' \
      --set "out=$out" "${extra[@]}" "$@"
    ;;
  ablations)
    seed=${2:?seed}; shift 2
    classic=(); [ "$seed" != 0 ] && classic=(--set 'baselines=[]')  # seed 0 trains them once
    exec .venv/bin/alignrec sweep configs/paper/ablations.yaml --base configs/industrial.yaml "${common[@]}" \
      --set finetune.llm_layers=2 --set finetune.lora_dropout=0.0 --set finetune.max_steps=2000 \
      --set finetune.save_steps=250 --set behaviour.max_train_minutes=4.0 \
      --set tasks.negative_ratio=0.05 --set 'tasks.task_limits={text: 500, ts_align: 300}' --set tasks.max_text_words=32 \
      --set "tokenizer.seed=$seed" --set "tasks.seed=$((42 + seed))" --set "finetune.seed=$((42 + seed))" \
      "${classic[@]}" --out "runs/sweeps/ablations_industrial_seed$seed" \
      --results "runs/sweeps/ablations_industrial_seed$seed" "$@"
    ;;
  item_head)
    seed=${2:?seed}; shift 2
    exec .venv/bin/alignrec sweep configs/paper/item_head.yaml --base configs/industrial.yaml "${common[@]}" \
      --set finetune.llm_layers=2 --set finetune.lora_dropout=0.0 --set finetune.max_steps=2000 \
      --set finetune.save_steps=500 --set finetune.rank_eval_steps=500 --set finetune.rank_eval_users=3285 \
      --set behaviour.max_train_minutes=4.0 --set 'tasks.tasks=[sequential]' --set evaluate.exclude=both \
      --set "behaviour.seed=$((2024 + seed))" --set "tokenizer.seed=$seed" --set "tasks.seed=$((42 + seed))" \
      --set "finetune.seed=$((42 + seed))" --set "baselines=[{model: pop}, {model: fmlp, seed: $((2024 + seed))}]" \
      --out "runs/sweeps/item_head_industrial_seed$seed" --results "runs/sweeps/item_head_industrial_seed$seed" "$@"
    ;;
  baselines)
    dataset=${2:?dataset}; shift 2
    case $dataset in
      instruments) inter=Instruments.inter.json ;;
      games) inter=Games.inter.json ;;
      *) echo "paper_cpu.sh baselines: dataset must be instruments or games, got '$dataset'" >&2; exit 2 ;;
    esac
    [ -f "runs/$dataset/dataset/stats.json" ] || .venv/bin/alignrec prepare --format lcrec \
      --inter "../shared/data/amazon18/$inter" --max-history 20 --out "runs/$dataset"
    exec .venv/bin/python benchmarks/baselines.py table --dataset "$dataset" --threads 1 --no-lock --resume --models "$@"
    ;;
  *)
    sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
