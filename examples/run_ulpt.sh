#!/usr/bin/env bash
# ULPT (prompt s * (Z W) + b, W a frozen random projection): m = 100, r = 2, L = 256, T5-base; the
# settings of ULPT's README (lr 0.6, batch 16, warmup 500, 30,000 steps). Trainable: 100 * 2 + 2 * 768 =
# 1,736 parameters (2.3% of PT with 100 tokens). NUM_RANDOM_PROJ > 1 gives each m / G rows their own W.
# Weight decay: the README's --weight_decay 1e-5 sits on DePT's training script, whose optimizer ignores
# it (docs/fidelity.md#f-optim); WEIGHT_DECAY=1e-5 applies it here.
# (--dry_run lists the runs; WORKERS, LAUNCHER and the Slurm variables: examples/launch.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=t5-base
TASKS="cola sst2 mrpc qqp stsb mnli qnli rte"
LARGE_TASKS="mnli qqp qnli"
MAX_LENGTH=256
PREFIX_LENGTH=100
LODIM_R=2
NUM_RANDOM_PROJ=1
LRS="6e-1"                            # ULPT README
BATCH=16
WARMUP=500
WEIGHT_DECAY=${WEIGHT_DECAY:-0}
SEEDS="42"
DATA_DIR=${DATA_DIR:-}
OUT_ROOT=${OUT_ROOT:-outputs/baselines}

source examples/paper_schedule.sh     # PAPER_SCHEDULE: eval/checkpoint flags, --weight_decay 0
source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# shellcheck disable=SC2086
exec python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/$MODEL/ULPT" \
  --name "{task_name}/lr{learning_rate}_pl{prefix_length}_r{lodim_r}_g{num_random_proj}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --sweep task_name $TASKS --sweep learning_rate $LRS --sweep seed $SEEDS \
  --when "task_name=${LARGE_TASKS// /,}" max_steps=300000 \
  -- \
  --model_name_or_path "$MODEL" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
  --peft_type PROMPT_TUNING_LODIM --lodim_r $LODIM_R --num_random_proj $NUM_RANDOM_PROJ \
  --prefix_length $PREFIX_LENGTH --max_seq_length $MAX_LENGTH \
  --max_steps 30000 --warmup_steps $WARMUP \
  --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
  "${PAPER_SCHEDULE[@]}" --weight_decay "$WEIGHT_DECAY"
