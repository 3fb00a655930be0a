#!/usr/bin/env bash
# ADePT (dense prompt + token-wise update ReLU(e A + a) B + b): m = 60, r = 19, L = 256, T5-base:
# 46,080 + 19 * (2 * 768 + 1) + 768 = 76,051 parameters (PT with 100 tokens: 76,800). The authors'
# settings: lr 0.3 / 0.4, added lr 1e-4 (the token-wise network's), batch 32, warmup 500. Text init
# (ADePT keeps DePT's default) unless TEXT_INIT=False. Weight decay: the published --weight_decay 1e-2 is
# ignored by ADePT's optimizer as by DePT's (docs/fidelity.md#f-optim); WEIGHT_DECAY=1e-2 applies it here.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="cola sst2 mrpc qqp stsb mnli qnli rte"
LARGE_TASKS="mnli qqp qnli"
MAX_LENGTH=256
PREFIX_LENGTH=60
R=19
TEXT_INIT=True
LRS="3e-1 4e-1"
ADDED_LRS="1e-4"
BATCH=32
WARMUP=500
WEIGHT_DECAY=${WEIGHT_DECAY:-0}
SEEDS="42"
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/baselines}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0

for TASK in $TASKS; do
  STEPS=30000
  [[ " $LARGE_TASKS " == *" $TASK "* ]] && STEPS=300000
  for LR in $LRS; do
    for ALR in $ADDED_LRS; do
      for SEED in $SEEDS; do
        OUT=$OUT_ROOT/$MODEL/ADePT/$TASK/lr${LR}_alr${ALR}_pl${PREFIX_LENGTH}_r${R}_L${MAX_LENGTH}_st${STEPS}_seed${SEED}
        python train.py \
          --model_name_or_path "$MODEL" --task_name "$TASK" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
          --peft_type PROMPT_TUNING_LORAX --text_init $TEXT_INIT \
          --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
          --learning_rate $LR --lora_embedding_lr $ALR \
          --max_steps $STEPS --warmup_steps $WARMUP --seed $SEED \
          --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
          "${PAPER_SCHEDULE[@]}" --weight_decay "$WEIGHT_DECAY" \
          --output_dir "$OUT"
      done
    done
  done
done
