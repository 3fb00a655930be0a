#!/usr/bin/env bash
# ACCEPT (SCPP + SCAP) on SuperGLUE with T5-base (paper setting; every task < 100k rows -> 30k steps).
# Same budget as run_glue.sh (74,880 trainable parameters). Edit the variables, then run.
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="superglue-multirc superglue-boolq superglue-wic superglue-wsc.fixed superglue-cb"
MAX_LENGTH=256                        # ACCEPT README (DePT's released MultiRC run used 348)
PREFIX_LENGTH=60
R=30
SUB_DIM_SCPP=32; CODEBOOK_SIZE_SCPP=20
SUB_DIM_SCAP=256; CODEBOOK_SIZE_SCAP=20
STEPS=30000
LRS="3e-1 4e-1 5e-1"
ADDED_LRS="1e-4 5e-4 1e-3 5e-3"
BATCH=32
WARMUP=1800
SEEDS="42"
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/superglue}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/ACCEPT" \
  --name "{task_name}/lr{learning_rate}_alr{added_embedding_lr}_pl{prefix_length}_p{sub_dim_scpp}x{codebook_size_scpp}_a{sub_dim_scap}x{codebook_size_scap}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep learning_rate $LRS --sweep added_embedding_lr $ADDED_LRS --sweep seed $SEEDS \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_type PROMPT_TUNING_LORA --scpp True --scap True \
  --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
  --sub_dim_scpp $SUB_DIM_SCPP --codebook_size_scpp $CODEBOOK_SIZE_SCPP \
  --sub_dim_scap $SUB_DIM_SCAP --codebook_size_scap $CODEBOOK_SIZE_SCAP \
  --max_steps $STEPS --warmup_steps $WARMUP \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}"
