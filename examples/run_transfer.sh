#!/usr/bin/env bash
# Transfer: train ACCEPT on a source task, then initialise each target task's SCPP and SCAP codebooks
# and weights from it (--pretrain_init, ACCEPT's mechanism) and train on the target task.
# Two grids: the source run, then the targets once it has finished (a failed source stops the script).
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
SOURCE_TASK=mnli
SOURCE_STEPS=300000
TARGET_TASKS="rte mrpc stsb cola superglue-boolq superglue-cb"
TARGET_STEPS=30000
MAX_LENGTH=256
PREFIX_LENGTH=60
SUB_DIM_SCPP=32; CODEBOOK_SIZE_SCPP=20
SUB_DIM_SCAP=256; CODEBOOK_SIZE_SCAP=20
LR=3e-1
ADDED_LR=1e-4
TARGET_LRS="3e-1 5e-1"
BATCH=32
WARMUP=1800
SEED=42
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/transfer}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

ROOT=$OUT_ROOT/$MODEL/ACCEPT
SOURCE_NAME=source-$SOURCE_TASK/lr${LR}_alr${ADDED_LR}_pl${PREFIX_LENGTH}_st${SOURCE_STEPS}_seed${SEED}
# shellcheck disable=SC2086
COMMON=(
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"}
  --peft_type PROMPT_TUNING_LORA --scpp True --scap True
  --prefix_length $PREFIX_LENGTH --max_seq_length $MAX_LENGTH
  --sub_dim_scpp $SUB_DIM_SCPP --codebook_size_scpp $CODEBOOK_SIZE_SCPP
  --sub_dim_scap $SUB_DIM_SCAP --codebook_size_scap $CODEBOOK_SIZE_SCAP
  --added_embedding_lr $ADDED_LR --warmup_steps $WARMUP --seed $SEED
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH
  "${PAPER_SCHEDULE[@]}"
)

python scripts/sweep.py "${LAUNCH[@]}" "$@" --root "$ROOT" --name "$SOURCE_NAME" \
  -- "${COMMON[@]}" --task_name $SOURCE_TASK --learning_rate $LR --max_steps $SOURCE_STEPS

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" --root "$ROOT" \
  --name "{task_name}/from-${SOURCE_TASK}_lr{learning_rate}_alr{added_embedding_lr}_pl{prefix_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TARGET_TASKS --sweep learning_rate $TARGET_LRS \
  -- "${COMMON[@]}" --max_steps $TARGET_STEPS \
  --pretrain_init True --pretrain_scpp_ckpt "$ROOT/$SOURCE_NAME" --pretrain_scap_ckpt "$ROOT/$SOURCE_NAME"
