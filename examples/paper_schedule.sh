# Sourced by the example sweeps: the evaluation/checkpoint schedule of the papers' runs (evaluate and
# checkpoint every EVAL_STEPS, keep the best checkpoint by the task's metric) and the optimizer setting
# the originals really used. Set EVAL_STEPS / LOGGING_STEPS before sourcing to change them.
# --weight_decay 0: the original optimizer ignored --weight_decay (it always used 0).
# shellcheck disable=SC2034
PAPER_SCHEDULE=(
  --weight_decay 0
  --eval_strategy steps --eval_steps "${EVAL_STEPS:-1000}" --save_strategy steps --save_steps "${EVAL_STEPS:-1000}"
  --load_best_model_at_end --save_total_limit 1 --logging_steps "${LOGGING_STEPS:-500}"
  --do_train --do_eval --do_predict --report_to tensorboard
)
