# Sourced by the example scripts: LAUNCH, the launcher flags of scripts/sweep.py, from these variables
# (set them in the environment or edit the defaults here):
#   LAUNCHER=local|slurm   local: this machine (the default); slurm: one job array, one task per run
#   WORKERS=N              runs at a time: local, one per GPU (or the CPU cores split between them);
#                          slurm, the array's parallelism (1: no limit of ours)
#   PARTITION, TIME_MIN, GPUS_PER_TASK, CPUS_PER_TASK, MEM_GB: what each Slurm array task asks for
# Any flag of scripts/sweep.py can also be given to the example script itself, e.g. --dry_run.
# shellcheck disable=SC2034
LAUNCH=(
  --launcher "${LAUNCHER:-local}" --workers "${WORKERS:-1}"
  ${PARTITION:+--partition "$PARTITION"} ${TIME_MIN:+--time_min "$TIME_MIN"}
  ${GPUS_PER_TASK:+--gpus_per_task "$GPUS_PER_TASK"} ${CPUS_PER_TASK:+--cpus_per_task "$CPUS_PER_TASK"}
  ${MEM_GB:+--mem_gb "$MEM_GB"}
)
