#!/usr/bin/env bash
# ADePT (dense prompt + token-wise update ReLU(e A + a) B + b): m = 60, r = 19, L = 256, T5-base:
# 46,080 + 19 * (2 * 768 + 1) + 768 = 76,051 parameters (PT with 100 tokens: 76,800). The authors'
# settings: lr 0.3 / 0.4, added lr 1e-4 (the token-wise network's), batch 32, warmup 500. Text init
# (ADePT keeps DePT's default) unless TEXT_INIT=False. Weight decay: the published --weight_decay 1e-2 is
# ignored by ADePT's optimizer as by DePT's (docs/fidelity.md#f-optim); WEIGHT_DECAY=1e-2 applies it here.
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
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
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/ADePT" \
  --name "{task_name}/lr{learning_rate}_alr{lora_embedding_lr}_pl{prefix_length}_r{r}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep learning_rate $LRS --sweep lora_embedding_lr $ADDED_LRS --sweep seed $SEEDS \
  --when "task_name=${LARGE_TASKS// /,}" max_steps=300000 \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_type PROMPT_TUNING_LORAX --text_init $TEXT_INIT \
  --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
  --max_steps 30000 --warmup_steps $WARMUP \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}" --weight_decay "$WEIGHT_DECAY"
