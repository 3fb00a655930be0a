#!/usr/bin/env bash
# ACCEPT (SCPP + SCAP) on GLUE with T5-base: the paper's setting (ACCEPT README and example scripts).
# Budget: SCPP (s_p=32, C_p=20) = 44,160 + SCAP (s_a=256, C_a=20) = 30,720 -> 74,880 ("74.9K", Table 1),
# within PT with 100 tokens (76,800). Edit the variables, then: bash examples/run_glue.sh
# (--dry_run lists the 96 runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="cola sst2 mrpc qqp stsb mnli qnli rte"
LARGE_TASKS="mnli qqp qnli"          # > 100k training rows: 300k steps, the others 30k (ACCEPT README)
MAX_LENGTH=256
PREFIX_LENGTH=60
R=30                                  # DePT rank; unused with SCAP, kept for the run name
SUB_DIM_SCPP=32; CODEBOOK_SIZE_SCPP=20
SUB_DIM_SCAP=256; CODEBOOK_SIZE_SCAP=20
LRS="3e-1 4e-1 5e-1"                  # prompt-side learning rates (ACCEPT qnli script)
ADDED_LRS="1e-4 5e-4 1e-3 5e-3"       # added-side learning rates (ACCEPT boolq script)
BATCH=32
WARMUP=1800
SEEDS="42"
DATA_DIR=${DATA_DIR:-}                # local data root (<dir>/<task>/<split>.jsonl); empty = HF hub
OUT_ROOT=${OUT_ROOT:-outputs/glue}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/ACCEPT" \
  --name "{task_name}/lr{learning_rate}_alr{added_embedding_lr}_pl{prefix_length}_p{sub_dim_scpp}x{codebook_size_scpp}_a{sub_dim_scap}x{codebook_size_scap}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep learning_rate $LRS --sweep added_embedding_lr $ADDED_LRS --sweep seed $SEEDS \
  --when "task_name=${LARGE_TASKS// /,}" max_steps=300000 \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_type PROMPT_TUNING_LORA --scpp True --scap True \
  --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
  --sub_dim_scpp $SUB_DIM_SCPP --codebook_size_scpp $CODEBOOK_SIZE_SCPP \
  --sub_dim_scap $SUB_DIM_SCAP --codebook_size_scap $CODEBOOK_SIZE_SCAP \
  --max_steps 30000 --warmup_steps $WARMUP \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}"
