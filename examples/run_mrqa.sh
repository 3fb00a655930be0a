#!/usr/bin/env bash
# ACCEPT (SCPP + SCAP) on the MRQA tasks with T5-base: L = 512, 300k steps, batch 16 x 2 accumulation.
# Budget at L=512: SCPP (32, 20) = 44,160 + SCAP (128, 8) = 30,720 (the same added size as DePT m=60, r=24).
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="newsqa hotpotqa searchqa nq"
MAX_LENGTH=512
PREFIX_LENGTH=60
R=24                                  # DePT's MRQA rank (r (L + d) = 30,720); unused with SCAP
SUB_DIM_SCPP=32; CODEBOOK_SIZE_SCPP=20
SUB_DIM_SCAP=128; CODEBOOK_SIZE_SCAP=8
STEPS=300000
LRS="3e-1 4e-1 5e-1"
ADDED_LRS="1e-4 5e-4 1e-3 5e-3"
BATCH=16
GRAD_ACCUM=2                          # effective batch 32, as DePT's MRQA runs
WARMUP=1800
SEEDS="42"
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/mrqa}

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
  --gradient_accumulation_steps $GRAD_ACCUM --generation_max_length 20 \
  "${PAPER_SCHEDULE[@]}"
