"""Accuracy benchmark on real data: head-only, PT, DPT, ULPT, DePT, ADePT, ACCEPT (SCPP / SCAP / both) and full
fine-tuning on a frozen (or, for full fine-tuning, trained) pretrained MiniLM, several seeds, a fixed step
budget per task.

Every run is one ``train.main(argv)`` call (the same code as ``python train.py``) into
``OUTPUT_DIR/runs/<task>/<method>/seed<k>``; a run whose ``all_results.json`` already holds test
metrics is kept, so an interrupted benchmark continues where it stopped. Budgets: PT with ``--m_pt``
tokens (DPT and ULPT: the same rows, the largest prompt rank within it); DePT, ADePT and ACCEPT split the same
budget at ``--m_dept`` (``scripts/_grid.py``).

Writes ``OUTPUT_DIR/bench_accuracy.md`` (mean ± std over seeds of the task's metric on the test and
validation splits, trainable parameters, times), ``bench_accuracy.json`` (every run and the aggregates)
and ``bench_accuracy.png``/``.pdf`` (test metric vs trainable parameters per task).

Usage::

    python scripts/bench_accuracy.py --data_dir DATA --output_dir outputs/bench_accuracy
    python scripts/bench_accuracy.py --data_dir DATA --tasks rte sst2 --seeds 42
    python scripts/bench_accuracy.py --data_dir DATA --methods PT DPT ULPT DePT ADePT ACCEPT
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

from data.tasks import get_task  # noqa: E402
from scripts import minilm_runs  # noqa: E402
from scripts._grid import ModelConfigError  # noqa: E402
from scripts._tables import METHOD_ORDER, render_summary  # noqa: E402
from scripts.plot_results import plot_params  # noqa: E402


@dataclass(frozen=True)
class TaskSetting:
    """Fixed per-task budget: optimizer steps at ``batch_size`` and evaluation sizes."""

    max_steps: int
    batch_size: int = 16
    max_eval_samples: int | None = 200
    max_predict_samples: int | None = 400
    note: str = ""


# Steps scale inversely with the tasks' typical token length (dynamic padding, L = 128). Measured on 2
# lightly loaded cores: sst2 runs take 20-50 s, so the grid of the seven methods before DPT, ULPT and ADePT
# (6 tasks x 7 methods x 3 seeds) was estimated at about 70 minutes, the ten methods now at about 100; use
# --methods, --steps_scale or fewer --seeds/--tasks for a shorter run.
TASK_SETTINGS: dict[str, TaskSetting] = {
    "sst2": TaskSetting(150),
    "cola": TaskSetting(150),
    "mrpc": TaskSetting(80),
    "rte": TaskSetting(60),
    "superglue-cb": TaskSetting(60, note="250 training rows"),
    "superglue-boolq": TaskSetting(40, max_predict_samples=300,
                                   note="few-shot: the local train split has only 64 rows (10 epochs); passages truncated to L"),
}  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", type=Path, required=True, help="real data root: <data_dir>/<task>/<split>.jsonl")
    p.add_argument("--output_dir", type=Path, default=Path("outputs/bench_accuracy"))
    p.add_argument("--tasks", nargs="+", default=list(TASK_SETTINGS), choices=list(TASK_SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    p.add_argument("--steps_scale", type=float, default=1.0, help="multiply every task's step budget")
    p.add_argument("--report_only", action="store_true", help="only aggregate the finished runs")
    minilm_runs.add_method_flags(p, METHOD_ORDER)
    return p.parse_args(argv)


def plan(args: argparse.Namespace, model_dir: Path) -> list[minilm_runs.Job]:
    """One job per task x method x seed (tasks without a data folder are skipped, with a line saying so)."""
    jobs = []
    for task_name in args.tasks:
        if not (args.data_dir / task_name).is_dir():
            print(f"skip {task_name}: expected {args.data_dir / task_name}/{{train,validation}}.jsonl", flush=True)
            continue
        setting = TASK_SETTINGS[task_name]
        steps = max(1, round(setting.max_steps * args.steps_scale))
        specs = minilm_runs.specs_from_args(args, model_dir, get_task(task_name).num_labels)
        flags = minilm_runs.common_flags(args.max_seq_length, setting.batch_size, steps, setting.max_eval_samples,
                                         setting.max_predict_samples) + ["--disable_tqdm", "True"]  # fmt: skip
        jobs += [minilm_runs.Job.under(args.output_dir, task_name, spec, seed, flags)
                 for spec in specs for seed in args.seeds]  # fmt: skip
    return jobs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"error: --data_dir {args.data_dir} does not exist", file=sys.stderr)
        return 2
    try:
        model_dir = minilm_runs.resolve_model(args.model_name_or_path)
        jobs = plan(args, model_dir)
    except (minilm_runs.ModelPackageMissing, ModelConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metric = lambda task: get_task(task).metric_for_best_model  # noqa: E731
    start = time.perf_counter()
    if not args.report_only:
        minilm_runs.run_jobs(jobs, model_dir, args.data_dir, metric, reuse_finished=True)
    elapsed = time.perf_counter() - start
    rows, records = minilm_runs.summarize(jobs, metric)
    total = sum(r["wall_seconds"] for r in records)
    notes = [f"- {t}: {s.note}" for t, s in TASK_SETTINGS.items() if s.note and any(r["task"] == t for r in rows)]
    lines = ["# MiniLM accuracy benchmark", "", *render_summary(rows)]
    lines += ["", "Notes:", *notes] if notes else []
    text = "\n".join([*lines, "", f"Wall time of the runs summed: {total / 60:.1f} min"]) + "\n"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "bench_accuracy.md").write_text(text, encoding="utf-8")
    report = {"data_dir": str(args.data_dir), "model": str(model_dir), "max_seq_length": args.max_seq_length,
              "m_pt": args.m_pt, "m_dept": args.m_dept,
              "learning_rates": {k: getattr(args, f"{k}_lr") for k in asdict(minilm_runs.LearningRates())},
              "task_settings": {t: asdict(s) for t, s in TASK_SETTINGS.items() if t in args.tasks},
              "this_invocation_seconds": elapsed, "runs_wall_seconds": total, "aggregates": rows, "runs": records}  # fmt: skip
    (args.output_dir / "bench_accuracy.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if rows:
        plot_params(rows, args.output_dir / "bench_accuracy")
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
