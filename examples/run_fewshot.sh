#!/usr/bin/env bash
# Few-shot: start from a transferred adapter (--peft_model_id, e.g. the source run of run_transfer.sh)
# and train on k = 4, 16, 32 examples of each target task (the sample depends on --seed).
# The saved adapter decides the method and shapes; steps and evaluation interval are this script's choice.
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
ADAPTER=${ADAPTER:-outputs/transfer/t5-base/ACCEPT/source-mnli/lr3e-1_alr1e-4_pl60_st300000_seed42}
TASKS="superglue-boolq superglue-cb scitail"
K_SHOTS="4 16 32"
SEEDS="42 43 44"
MAX_LENGTH=256
LR=3e-1
ADDED_LR=1e-4
STEPS=1000
BATCH=32
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/fewshot}

EVAL_STEPS=100; LOGGING_STEPS=50             # few-shot runs are short
source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/$(basename "$ADAPTER")" \
  --name "{task_name}/k{k_shot_example}_lr{learning_rate}_alr{added_embedding_lr}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep k_shot_example $K_SHOTS --sweep seed $SEEDS \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_model_id "$ADAPTER" --max_seq_length $MAX_LENGTH \
  --learning_rate $LR --added_embedding_lr $ADDED_LR \
  --max_steps $STEPS --warmup_steps 0 \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}"
