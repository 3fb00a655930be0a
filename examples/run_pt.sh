#!/usr/bin/env bash
# Vanilla prompt tuning at the same budget: m = 100 tokens x 768 = 76,800 parameters, T5-base.
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="cola sst2 mrpc qqp stsb mnli qnli rte"
LARGE_TASKS="mnli qqp qnli"
MAX_LENGTH=256
PREFIX_LENGTH=100
TEXT_INIT=True
LRS="3e-1 4e-1"
BATCH=32
WARMUP=500
SEEDS="42"
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/baselines}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/PT" \
  --name "{task_name}/lr{learning_rate}_pl{prefix_length}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep learning_rate $LRS --sweep seed $SEEDS \
  --when "task_name=${LARGE_TASKS// /,}" max_steps=300000 \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_type PROMPT_TUNING --text_init $TEXT_INIT \
  --prefix_length $PREFIX_LENGTH --max_seq_length $MAX_LENGTH \
  --max_steps 30000 --warmup_steps $WARMUP \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}"
