"""Run a grid of ``train.py`` runs: one after another, N at a time on this machine, or as a Slurm job array.

The grid is a JSON file (``--grid``, format in ``scripts/_sweep_grid.py``) or built from the command line,
as every ``examples/run_*.sh`` does: the fixed ``train.py`` flags after ``--``, the swept flags with
``--sweep FLAG V1 V2 ...``, axes that only name runs with ``--label NAME V1 ...``, flags that depend on
an axis with ``--when NAME=V1,V2 FLAG=VALUE ...``, the folders with ``--root`` and ``--name``. Runs start
longest first (the per-run estimate of ``scripts/cost.py``). A failed run never stops the grid: it ends
with a summary (finished / failed with the reason / held by another worker) and exits 1 when a run failed.
Rerunning the grid skips finished runs (``train.py`` exits 0 for them) and resumes interrupted ones; two
invocations at once split the work through ``train.py``'s lock on each ``--output_dir``.

    python scripts/sweep.py --root outputs/x --name "{task_name}/lr{learning_rate}_seed{seed}" \\
        --sweep task_name rte mrpc --sweep learning_rate 3e-1 4e-1 --sweep seed 42 43 \\
        --workers 2 --dry_run -- --model_name_or_path t5-base --peft_type PROMPT_TUNING_LORA ...
    python scripts/sweep.py --grid my_grid.json --launcher slurm --partition gpu --time_min 1440
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from scripts._sweep_grid import Grid, GridError, Run, load_grid, parse_assignments, parse_flags, rule_from_cli  # noqa: E402
from scripts._sweep_launch import (  # noqa: E402
    NOT_RUN,
    SlurmOptions,
    Task,
    balanced_shares,
    launch_local,
    launch_serial,
    launch_slurm,
    visible_gpus,
)
from scripts._sweep_run import FAILED, FINISHED, HELD, INTERRUPTED, Outcome  # noqa: E402

logger = logging.getLogger("sweep")


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """This script's options, and the fixed ``train.py`` flags (everything after the first ``--``)."""
    argv = list(argv)
    fixed = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the grid")
    g.add_argument("--grid", help="a grid JSON file (instead of the options below and the flags after --)")
    g.add_argument("--root", help="folder of the grid's runs")
    g.add_argument("--name", help='run folder below --root, e.g. "{task_name}/lr{learning_rate}_seed{seed}"')
    g.add_argument("--sweep", nargs="+", action="append", default=[], metavar=("FLAG", "VALUE"),
                   help="a swept train.py flag and its values (repeat; the first varies slowest)")  # fmt: skip
    g.add_argument("--label", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                   help="an axis that sets no flag itself: for --name and --when")  # fmt: skip
    g.add_argument("--when", nargs="+", action="append", default=[], metavar=("NAME=V1,V2", "FLAG=VALUE"),
                   help="set FLAG=VALUE ... in the runs whose axis or flag NAME is one of V1,V2 (repeat)")  # fmt: skip
    g.add_argument("--save_grid", help="write the grid as JSON to this file")
    r = p.add_argument_group("running it")
    r.add_argument("--dry_run", action="store_true", help="print the runs, their estimate and the wall-clock; run nothing")
    r.add_argument("--launcher", choices=("local", "slurm"), default="local")
    r.add_argument("--workers", type=int, default=1,
                   help="local: runs at a time (one GPU each, or the CPU cores split); slurm: array tasks at a "
                        "time (default: no limit)")  # fmt: skip
    r.add_argument("--gpus", default="auto", help='local GPUs: "auto" (CUDA_VISIBLE_DEVICES, nvidia-smi), "none", "0,1"')
    r.add_argument("--log_dir", help="submitit's folder (default: <root>/.sweep/<launcher>)")
    s = p.add_argument_group("slurm (one array task per run)")
    s.add_argument("--partition")
    s.add_argument("--time_min", type=int, default=24 * 60, help="time limit per task; a run that needs more is requeued")
    s.add_argument("--gpus_per_task", type=int, default=1)
    s.add_argument("--cpus_per_task", type=int)
    s.add_argument("--mem_gb", type=float)
    s.add_argument("--max_timeouts", type=int, default=20, help="requeues after a time-out before a run fails")
    s.add_argument("--slurm_setup", action="append", default=[], help="a shell line run before each task (repeat)")
    s.add_argument("--slurm_option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=myproject (repeat)")  # fmt: skip
    args = p.parse_args(own)
    args.axis_order = [own[i + 1] for i, token in enumerate(own[:-1]) if token in ("--sweep", "--label")]
    return args, fixed


def build_grid(args: argparse.Namespace, fixed: Sequence[str]) -> Grid:
    """The grid of ``--grid``, or of the command line; GridError on an incomplete one."""
    if args.grid:
        if fixed or args.sweep or args.label or args.when or args.root or args.name:
            raise GridError("--grid: give the grid either as a file or with --root/--name/--sweep/-- flags, not both")
        return load_grid(args.grid)
    if not args.root or not args.name:
        raise GridError("--root and --name are needed (or --grid FILE)")
    axes = {}
    for option, items in [("--sweep", a) for a in args.sweep] + [("--label", a) for a in args.label]:
        if len(items) < 2 or items[0] in axes:
            raise GridError(f"{option} {' '.join(items)}: give a new axis name and at least one value")
        axes[items[0]] = items[1:]
    ordered = {name: axes[name] for name in sorted(axes, key=args.axis_order.index)}  # as on the command line
    labels = tuple(items[0] for items in args.label)
    return Grid(args.root, args.name, parse_flags(fixed), ordered, labels, tuple(rule_from_cli(w) for w in args.when))


def estimate_hours(runs: Sequence[Run]) -> list[float]:
    """GPU-hours per run (``scripts/cost.py``'s fixed-padding estimate)."""
    from scripts.cost import parse_args as cost_args
    from scripts.cost import run_hours

    assumptions = cost_args(["--data_dir", "", "--tokenizer", ""])
    return [run_hours(run.flags, assumptions) for run in runs]


def longest_first(runs: Sequence[Run], hours: Sequence[float]) -> tuple[list[Run], list[float]]:
    """The runs by estimated hours, longest first (ties keep the grid's order)."""
    order = sorted(range(len(runs)), key=lambda i: -hours[i])
    return [runs[i] for i in order], [hours[i] for i in order]


def wall_clock(hours: Sequence[float], workers: int) -> float:
    """Hours until the last of ``workers`` workers ends, each taking the next run longest first."""
    shares = balanced_shares(hours, max(1, workers))
    return max(sum(hours[i] for i in share) for share in shares)


def format_hours(h: float) -> str:
    return f"{h:,.1f} h" if h >= 1 else f"{h * 60:.2g} min" if h * 60 >= 1 else f"{h * 3600:.2g} s"


def dry_run(runs: Sequence[Run], hours: Sequence[float], workers: int) -> str:
    """The number of runs, the estimate and wall-clock, then every run's command, longest first."""
    total = sum(hours)
    lines = [f"{len(runs)} runs, estimated {format_hours(total)} on one GPU each (scripts/cost.py, every row "
             "padded to --max_seq_length: an upper bound)",
             f"wall-clock: {format_hours(wall_clock(hours, 1))} with 1 worker"
             + (f", {format_hours(wall_clock(hours, workers))} with {workers} workers" if workers > 1 else "")
             + f" (longest run {format_hours(max(hours, default=0.0))})", ""]  # fmt: skip
    for i, (run, h) in enumerate(zip(runs, hours, strict=True), 1):
        lines += [f"[{i}/{len(runs)}] {format_hours(h)}  {run.output_dir}", f"  {run.command()}"]
    return "\n".join(lines)


def reconcile(outcome: Outcome, cwd: str) -> Outcome:
    """A run reported as not run whose folder holds its results was finished before its worker died."""
    if outcome.status == NOT_RUN and (Path(cwd) / outcome.output_dir / "all_results.json").is_file():
        return Outcome(outcome.output_dir, FINISHED, None, "", outcome.seconds)
    return outcome


def summary(outcomes: Sequence[Outcome]) -> str:
    """One line of counts, then one line per run that did not finish (failed with exit code and reason)."""
    counts = {status: sum(o.status == status for o in outcomes) for status in (FINISHED, FAILED, HELD, INTERRUPTED, NOT_RUN)}
    head = (f"grid: {len(outcomes)} runs: {counts[FINISHED]} finished, {counts[FAILED]} failed, "
            f"{counts[HELD]} skipped (held by another worker)")  # fmt: skip
    head += "".join(f", {counts[s]} {s}" for s in (INTERRUPTED, NOT_RUN) if counts[s])
    lines = [head]
    for o in outcomes:
        if o.status != FINISHED:
            code = f" (exit {o.code})" if o.code is not None else ""
            lines.append(f"  {o.status}{code}: {o.output_dir}: {o.reason}")
    return "\n".join(lines)


def exit_status(outcomes: Sequence[Outcome]) -> int:
    """130 when interrupted, 1 when a run failed or was not run, else 0 (held runs belong to another worker)."""
    if any(o.status == INTERRUPTED for o in outcomes):
        return 130
    return 1 if any(o.status in (FAILED, NOT_RUN) for o in outcomes) else 0


def launch(args: argparse.Namespace, grid: Grid, runs: Sequence[Run], hours: Sequence[float]) -> list[Outcome]:
    cwd = os.getcwd()
    tasks = [Task(run.output_dir, run.argv, cwd) for run in runs]
    folder = Path(args.log_dir or Path(grid.root) / ".sweep" / args.launcher)
    if args.launcher == "slurm":
        options = SlurmOptions(args.partition, args.time_min, args.gpus_per_task, args.cpus_per_task, args.mem_gb,
                               args.workers if args.workers > 1 else 0, args.max_timeouts, tuple(args.slurm_setup),
                               parse_assignments(args.slurm_option, "--slurm_option"))  # fmt: skip
        return launch_slurm(tasks, options, folder, f"sweep-{Path(grid.root).name}")
    gpus = visible_gpus(args.gpus)
    if args.workers > 1:
        return launch_local(tasks, hours, args.workers, gpus, folder)
    one_gpu = {"CUDA_VISIBLE_DEVICES": gpus[0]} if gpus else {}  # one GPU per run, as with N workers
    return launch_serial([Task(t.output_dir, t.argv, t.cwd, one_gpu) for t in tasks])


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="sweep: %(message)s")
    args, fixed = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.workers < 1:
            raise GridError(f"--workers {args.workers}: give at least 1")
        grid = build_grid(args, fixed)
        runs = grid.runs()
    except GridError as exc:
        logger.error("error: %s", exc)
        return 2
    if args.save_grid:
        Path(args.save_grid).write_text(json.dumps(grid.to_json(), indent=2) + "\n", encoding="utf-8")
    runs, hours = longest_first(runs, estimate_hours(runs))
    if args.dry_run:
        print(dry_run(runs, hours, args.workers))
        return 0
    logger.info("%d runs, longest first: %s launcher, %d worker(s)", len(runs), args.launcher, args.workers)
    try:
        outcomes = [reconcile(o, os.getcwd()) for o in launch(args, grid, runs, hours)]
    except KeyboardInterrupt:
        where = "the Slurm job array goes on (scancel it to stop it)" if args.launcher == "slurm" else "stopped"
        logger.warning("interrupted: %s; rerun the same command to continue (finished runs are kept)", where)
        return 130
    print(summary(outcomes), flush=True)
    return exit_status(outcomes)


if __name__ == "__main__":
    sys.exit(main())
