"""Figures from train.py runs: learning curves of several runs, ours vs the paper per task, and the
score of each method against its trainable parameters (the MiniLM accuracy benchmark's figure).

Usage::

    python scripts/plot_results.py curves RUN_OR_ROOT [...] --out figs/rte_curves
    python scripts/plot_results.py bars ROOT [...] --layout glue [--compare-paper] --out figs/glue_bars

Each figure is written as ``<out>.png`` and ``<out>.pdf``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from scripts._runs import Run, discover_runs, loss_history  # noqa: E402
from scripts._tables import LAYOUTS, METHOD_ORDER, PAPER_RESULTS, build_tables, load_paper  # noqa: E402
from scripts.collect_results import collect  # noqa: E402

logger = logging.getLogger("plot_results")

Series = tuple[list[int], list[float]]


def curves(run: Run) -> tuple[Series, tuple[str | None, list[int], list[float]]]:
    """(train-loss steps, values) and (metric, eval steps, values) from trainer_state.json's log_history."""
    history = (run.state or {}).get("log_history", [])
    metric = run.metric_for_best_model
    loss = loss_history(run)
    key = f"eval_{metric}"
    evals = [(e["step"], e[key]) for e in history if key in e and "step" in e]
    return ([s for s, _ in loss], [v for _, v in loss]), (metric, [s for s, _ in evals], [v for _, v in evals])


def save(fig: plt.Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``; return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
        logger.info("wrote %s", path)
    plt.close(fig)
    return paths


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Run directories relative to their common parent (their names encode the swept values)."""
    if len(runs) == 1:
        return [runs[0].path.name]
    common = Path(os.path.commonpath([r.path.resolve() for r in runs]))
    return [str(r.path.resolve().relative_to(common)) for r in runs]


def plot_curves(runs: Sequence[Run], out: str | Path) -> list[Path]:
    """Train loss and validation metric vs step, one line per run, on one two-panel figure."""
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    metrics = set()
    for run, label in zip(runs, run_labels(runs), strict=True):
        (loss_steps, losses), (metric, eval_steps, values) = curves(run)
        if not loss_steps and not eval_steps:
            logger.warning("%s has no log_history in trainer_state.json", run.path)
        ax_loss.plot(loss_steps, losses, marker=".", label=label)
        ax_metric.plot(eval_steps, values, marker=".", label=label)
        metrics.add(metric)
    ax_loss.set(xlabel="step", ylabel="train loss", title="Training loss")
    metric_name = metrics.pop() if len(metrics) == 1 else "metric_for_best_model"
    ax_metric.set(xlabel="step", ylabel=f"eval_{metric_name}", title="Validation")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    ax_metric.legend(fontsize="small")
    return save(fig, out)


def plot_bars(roots: Sequence[str], layout: str, out: str | Path, model: str | None, compare_paper: bool,
              paper_file: str | Path = PAPER_RESULTS) -> list[Path]:
    """Per-task test scores of our methods (error bar = std over seeds) beside the published rows they match."""
    collection = collect(roots)
    paper = load_paper(paper_file) if compare_paper else None
    tables = [t for t in build_tables(collection.results, [layout], paper) if model in (None, t.model)]
    if not tables:
        raise SystemExit(f"no {layout} results{f' for {model}' if model else ''} under {' '.join(roots)}")
    table = tables[0]
    columns = [c for c in table.columns if c.primary]
    ours = [r for r in table.rows if r.kind == "ours"]
    method_rows = (paper or {}).get("method_rows", {})
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {r.label: palette[i % len(palette)] for i, r in enumerate(ours)}
    published = [r for r in table.rows if r.kind == "paper" and r.label in {method_rows.get(o.label) for o in ours}]
    for row in published:  # a published row takes the colour of the first method compared with it
        color[f"paper:{row.label}"] = next(color[o.label] for o in ours if method_rows.get(o.label) == row.label)
    rows = ours + published
    fig, ax = plt.subplots(figsize=(min(16.0, 2.0 + 0.25 * len(columns) * len(rows)), 4))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        xs, heights, errs = [], [], []
        for j, col in enumerate(columns):
            cell = row.cells.get(col.label)
            if cell is not None and cell.mean is not None:
                xs.append(j + (i - (len(rows) - 1) / 2) * width)
                heights.append(cell.mean)
                errs.append(cell.std or 0.0)
        is_paper = row.kind == "paper"
        ax.bar(xs, heights, width, yerr=None if is_paper else errs, capsize=2,
               label=f"{row.label} (paper)" if is_paper else row.label,
               color=color[f"paper:{row.label}" if is_paper else row.label],
               hatch="//" if is_paper else None, alpha=0.55 if is_paper else 0.9)
    ax.set_xticks(range(len(columns)), [c.label for c in columns])
    ax.set(ylabel="test score", title=f"{table.layout.title} ({table.model})")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return save(fig, out)


def plot_params(rows: Sequence[dict[str, Any]], out: str | Path) -> list[Path]:
    """Test mean vs trainable parameters (log x), one panel per task, error bars = std over seeds.

    ``rows`` are the per-method summaries of ``scripts/_tables.py`` (``method_summary``).
    """
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cols = min(3, len(tasks))
    nrows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.8 * nrows), squeeze=False)
    markers = dict(zip(METHOD_ORDER, "osD<>^hv*P", strict=True))  # one per method; DPT, ULPT, ADePT: < > h
    for ax, task in zip(axes.flat, tasks, strict=False):
        for r in (r for r in rows if r["task"] == task):
            ax.errorbar(r["trainable_params"], r["test_mean"], yerr=r["test_std"] or 0.0,
                        marker=markers.get(r["method"], "x"), linestyle="none", capsize=3, label=r["method"])  # fmt: skip
        metric = next(r["metric"] for r in rows if r["task"] == task)
        ax.set(xscale="log", title=task, xlabel="trainable parameters", ylabel=f"test {metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_curves = sub.add_parser("curves", help="learning curves of several runs on one figure")
    p_curves.add_argument("paths", nargs="+", help="run directories or roots holding them")
    p_curves.add_argument("--out", required=True, help="output path without extension")
    p_bars = sub.add_parser("bars", help="test score per task, ours vs paper")
    p_bars.add_argument("roots", nargs="+")
    p_bars.add_argument("--layout", choices=tuple(LAYOUTS), default="glue")
    p_bars.add_argument("--model", help="model short name (default: the first with results)")
    p_bars.add_argument("--compare-paper", action="store_true")
    p_bars.add_argument("--paper-file", default=str(PAPER_RESULTS))
    p_bars.add_argument("--out", required=True, help="output path without extension")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "curves":
        runs = discover_runs(args.paths)
        if not runs:
            raise SystemExit(f"no run directories under {' '.join(args.paths)}")
        return plot_curves(runs, args.out)
    return plot_bars(args.roots, args.layout, args.out, args.model, args.compare_paper, args.paper_file)


if __name__ == "__main__":
    main()
