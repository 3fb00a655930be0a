#!/usr/bin/env bash
# DePT baseline (m = 60, r = 30, L = 256: 46,080 + 30,720 = 76,800 = PT with 100 tokens), T5-base.
# Text init (DePT's default) unless TEXT_INIT=False. Steps and grids as in DePT's README/released runs.
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="cola sst2 mrpc qqp stsb mnli qnli rte"
LARGE_TASKS="mnli qqp qnli"
MAX_LENGTH=256
PREFIX_LENGTH=60
R=30
TEXT_INIT=True
LRS="3e-1 4e-1"                       # DePT README grid
ADDED_LRS="5e-4 5e-3 3e-1"            # DePT README --lora_embedding_lr grid
BATCH=32
WARMUP=500
SEEDS="42"
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/baselines}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/DePT" \
  --name "{task_name}/lr{learning_rate}_alr{lora_embedding_lr}_pl{prefix_length}_r{r}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep learning_rate $LRS --sweep lora_embedding_lr $ADDED_LRS --sweep seed $SEEDS \
  --when "task_name=${LARGE_TASKS// /,}" max_steps=300000 \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_type PROMPT_TUNING_LORA --text_init $TEXT_INIT \
  --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
  --max_steps 30000 --warmup_steps $WARMUP \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}"
