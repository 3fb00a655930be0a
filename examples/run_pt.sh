#!/usr/bin/env bash
# Vanilla prompt tuning at the same budget: m = 100 tokens x 768 = 76,800 parameters, T5-base.
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

for TASK in $TASKS; do
  STEPS=30000
  [[ " $LARGE_TASKS " == *" $TASK "* ]] && STEPS=300000
  for LR in $LRS; do
    for SEED in $SEEDS; do
      OUT=$OUT_ROOT/$MODEL/PT/$TASK/lr${LR}_pl${PREFIX_LENGTH}_L${MAX_LENGTH}_st${STEPS}_seed${SEED}
      python train.py \
        --model_name_or_path "$MODEL" --task_name "$TASK" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
        --peft_type PROMPT_TUNING --text_init $TEXT_INIT \
        --prefix_length $PREFIX_LENGTH --max_seq_length $MAX_LENGTH \
        --learning_rate $LR \
        --max_steps $STEPS --warmup_steps $WARMUP --seed $SEED \
        --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
        "${PAPER_SCHEDULE[@]}" \
        --output_dir "$OUT"
    done
  done
done
