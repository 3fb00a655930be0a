#!/usr/bin/env bash
# The smallest grid, on a tiny random T5 built locally: PT, DePT and ACCEPT x 2 seeds = 6 runs, offline,
# CPU, about a minute per worker. Try the grid runner with it:
#   bash examples/run_tiny.sh --dry_run        # the 6 commands, longest first, and their estimate
#   WORKERS=2 bash examples/run_tiny.sh        # 2 runs at a time (the CPU cores split between them)
# Data: ../shared/data-real/rte when present (first rows only), else tiny synthetic RTE rows.
# The frozen backbone is random, so accuracy stays near 0: this checks the pipeline and its output
# files (outputs/tiny/runs/...), not the method; examples/run_demo.sh shows learning.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_ROOT=${OUT_ROOT:-outputs/tiny}
METHODS="PT DePT ACCEPT"
SEEDS="42 43"
TASK=rte
MAX_LENGTH=64
PREFIX_LENGTH=4
R=2
STEPS=20
LR=3e-1
ADDED_LR=1e-3
TOKENIZER=../shared/t5-tokenizer
REAL_DATA=../shared/data-real
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

MODEL=$OUT_ROOT/model
if [[ -d $REAL_DATA/$TASK ]]; then DATA_DIR=$REAL_DATA; else DATA_DIR=$OUT_ROOT/data; fi
if [[ ! -f $MODEL/config.json ]]; then
  python scripts/make_tiny_model.py --out_dir "$MODEL" \
    $([[ -d $TOKENIZER ]] && echo --tokenizer "$TOKENIZER") \
    $([[ $DATA_DIR == "$OUT_ROOT/data" ]] && echo --data_dir "$DATA_DIR")
fi

source examples/launch.sh             # LAUNCH: --launcher/--workers/Slurm flags from LAUNCHER, WORKERS, ...

# A rerun keeps finished runs (train.py says so and exits 0); delete $OUT_ROOT/runs to start over.
# --weight_decay 0: the original optimizer ignored --weight_decay (it always used 0).
# shellcheck disable=SC2086
status=0
python scripts/sweep.py "${LAUNCH[@]}" "$@" \
  --root "$OUT_ROOT/runs" \
  --name "{method}/{task_name}/lr{learning_rate}_alr{added_embedding_lr}_pl{prefix_length}_r{r}_L{max_seq_length}_st{max_steps}_seed{seed}" \
  --label method $METHODS --sweep seed $SEEDS \
  --when method=PT peft_type=PROMPT_TUNING \
  --when method=DePT peft_type=PROMPT_TUNING_LORA \
  --when method=ACCEPT peft_type=PROMPT_TUNING_LORA scpp=True scap=True \
         sub_dim_scpp=8 codebook_size_scpp=2 sub_dim_scap=8 codebook_size_scap=2 \
  -- \
  --model_name_or_path "$MODEL" --task_name $TASK --data_dir "$DATA_DIR" \
  --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
  --learning_rate $LR --added_embedding_lr $ADDED_LR --weight_decay 0 \
  --max_steps $STEPS --warmup_steps 2 --per_device_train_batch_size 8 --per_device_eval_batch_size 32 \
  --max_train_samples 64 --max_eval_samples 32 --max_predict_samples 32 \
  --eval_strategy steps --eval_steps 10 --save_strategy steps --save_steps 10 \
  --load_best_model_at_end --save_total_limit 1 --logging_steps 5 \
  --do_train --do_eval --do_predict --report_to tensorboard || status=$?
if [[ " $* " != *" --dry_run "* ]]; then
  echo "note: the backbone is random, so 0.0 accuracy and empty predictions are expected; this run checks"
  echo "      the pipeline and its output files, not learning (bash examples/run_demo.sh shows learning)."
fi
exit $status
