#!/usr/bin/env bash
# ACCEPT (SCPP + SCAP) on GLUE with T5-base: the paper's setting (ACCEPT README and example scripts).
# Budget: SCPP (s_p=32, C_p=20) = 44,160 + SCAP (s_a=256, C_a=20) = 30,720 -> 74,880 ("74.9K", Table 1),
# within PT with 100 tokens (76,800). Edit the variables, then: bash examples/run_glue.sh
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

for TASK in $TASKS; do
  STEPS=30000
  [[ " $LARGE_TASKS " == *" $TASK "* ]] && STEPS=300000
  for LR in $LRS; do
    for ALR in $ADDED_LRS; do
      for SEED in $SEEDS; do
        OUT=$OUT_ROOT/$MODEL/ACCEPT/$TASK/lr${LR}_alr${ALR}_pl${PREFIX_LENGTH}_p${SUB_DIM_SCPP}x${CODEBOOK_SIZE_SCPP}_a${SUB_DIM_SCAP}x${CODEBOOK_SIZE_SCAP}_L${MAX_LENGTH}_st${STEPS}_seed${SEED}
        python train.py \
          --model_name_or_path "$MODEL" --task_name "$TASK" ${DATA_DIR:+--data_dir "$DATA_DIR"} \
          --peft_type PROMPT_TUNING_LORA --scpp True --scap True \
          --prefix_length $PREFIX_LENGTH --r $R --max_seq_length $MAX_LENGTH \
          --sub_dim_scpp $SUB_DIM_SCPP --codebook_size_scpp $CODEBOOK_SIZE_SCPP \
          --sub_dim_scap $SUB_DIM_SCAP --codebook_size_scap $CODEBOOK_SIZE_SCAP \
          --learning_rate $LR --added_embedding_lr $ALR \
          --max_steps $STEPS --warmup_steps $WARMUP --seed $SEED \
          --per_device_train_batch_size $BATCH --per_device_eval_batch_size $BATCH \
          "${PAPER_SCHEDULE[@]}" \
          --output_dir "$OUT"
      done
    done
  done
done
