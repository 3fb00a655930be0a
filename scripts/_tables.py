"""Tables of results: the papers' layouts beside published rows, per-method summaries, Markdown rendering.

``build_tables`` makes ``Table`` objects (rows of ``Cell`` values) that ``collect_results.py`` renders
and ``plot_results.py`` draws; ``method_summary`` / ``run_record`` turn the runs of the MiniLM demo and
accuracy benchmark into rows; ``markdown_table`` and ``format_stat`` render and round every table the
scripts print.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft.config import METHOD_NAMES
from scripts._runs import GroupKey, GroupResult, Run, format_setting, loss_history, mean_std, read_json

REPO_ROOT = Path(__file__).resolve().parents[1]
PAPER_RESULTS = REPO_ROOT / "results" / "paper_results.json"

_ACC, _QA = ("accuracy",), ("f1", "em")
REPORTED_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mnli": ("MNLI", _ACC), "qqp": ("QQP", _ACC), "qnli": ("QNLI", _ACC), "sst2": ("SST-2", _ACC),
    "stsb": ("STS-B", ("pearson",)), "mrpc": ("MRPC", _ACC), "rte": ("RTE", _ACC),
    "cola": ("CoLA", ("matthews_correlation",)),
    "superglue-multirc": ("MultiRC", ("f1",)), "superglue-boolq": ("BoolQ", _ACC), "superglue-wic": ("WiC", _ACC),
    "superglue-wsc.fixed": ("WSC", _ACC), "superglue-cb": ("CB", _ACC),
    "nq": ("NQ", _QA), "hotpotqa": ("HotpotQA", _QA), "searchqa": ("SearchQA", _QA), "newsqa": ("NewsQA", _QA),
    "winogrande": ("WinoGrande", _ACC), "yelp_polarity": ("Yelp-2", _ACC), "scitail": ("SciTail", _ACC),
    "paws": ("PAWS-Wiki", _ACC),
}  # fmt: skip
"""task_name -> (paper column label, test metrics the papers report; the first is the headline one).

From the released DePT checkpoints matched against the papers' rows: QQP, MRPC and CB are accuracy,
STS-B Pearson, CoLA Matthews correlation, MultiRC F1, MRQA F1 (EM also shown). Averages are plain
means of these per-task numbers.
"""

METRIC_SHORT = {"f1": "F1", "em": "EM", "accuracy": "Acc", "pearson": "Pearson", "matthews_correlation": "MCC"}

METHOD_ORDER = ("full-finetuning", "head-only", *METHOD_NAMES)
"""Table row order: the baselines, then ``peft.config.METHOD_NAMES`` (prompt-only, decomposed, ACCEPT's
variants); any other (prompt kind, update kind) pair sorts after them by name."""

FEW_SHOT_KS = (4, 16, 32)


def reported_metrics(task: str, fallback: str | None = None) -> tuple[str, ...]:
    """Test metrics to report for ``task``; unknown tasks use ``fallback`` (their selection metric)."""
    if task in REPORTED_METRICS:
        return REPORTED_METRICS[task][1]
    return (fallback,) if fallback else ()


def task_label(task: str) -> str:
    return REPORTED_METRICS[task][0] if task in REPORTED_METRICS else task


@dataclass(frozen=True)
class Layout:
    """One of the papers' tables: its tasks, and the name of its average column in the paper data."""

    name: str
    title: str
    tasks: tuple[str, ...]
    paper_means: tuple[str, ...] = ()
    few_shot: bool = False


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("glue", "GLUE", ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola"), ("GLUE_avg",)),
        Layout("superglue", "SuperGLUE", ("superglue-multirc", "superglue-boolq", "superglue-wic",
                                          "superglue-wsc.fixed", "superglue-cb"), ("SuperGLUE_avg",)),
        Layout("mrqa", "MRQA 2019", ("nq", "hotpotqa", "searchqa", "newsqa"), ("MRQA_avg", "avg")),
        Layout("others", "Other tasks", ("winogrande", "yelp_polarity", "scitail", "paws"), ("Others_avg",)),
        Layout("fewshot", "Few-shot", tuple(REPORTED_METRICS), few_shot=True),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Column:
    """A table column: one (task, metric[, k]) or, when ``members`` is set, the mean of those columns.

    ``primary`` marks the headline metric of its task(s) (the one a paper's single-metric table holds);
    ``paper_label`` is the column name in the published data.
    """

    label: str
    metric: str
    primary: bool
    paper_label: str
    task: str | None = None
    k: int | None = None
    members: tuple[Column, ...] = ()

    @property
    def is_mean(self) -> bool:
        return bool(self.members)


def layout_columns(layout: Layout, ks: Sequence[int] = ()) -> list[Column]:
    """Task columns (then mean columns) of a layout; the few-shot layout gets one column per (task, k)."""
    if layout.few_shot:
        return [Column(f"{task_label(t)} k={k}", reported_metrics(t)[0], True, "", task=t, k=k)
                for t in layout.tasks for k in ks]  # fmt: skip
    multi = any(len(reported_metrics(t)) > 1 for t in layout.tasks)
    columns: list[Column] = []
    for t in layout.tasks:
        for i, metric in enumerate(reported_metrics(t)):
            label = f"{task_label(t)} {METRIC_SHORT.get(metric, metric)}" if multi else task_label(t)
            columns.append(Column(label, metric, i == 0, task_label(t), task=t))
    for i in range(max(len(reported_metrics(t)) for t in layout.tasks)):
        members = tuple(c for c in columns if not c.is_mean and reported_metrics(c.task).index(c.metric) == i)
        metric = members[0].metric
        label = f"Avg {METRIC_SHORT.get(metric, metric)}" if multi else "Avg"
        columns.append(Column(label, metric, i == 0, "", members=members))
    return columns


@dataclass
class Cell:
    """One table value: mean (x100 units as written by the metrics), sample std, n seeds.

    ``complete`` is False when the best setting lacks seeds that other settings have; ``detail`` holds
    the chosen setting and seeds for our cells.
    """

    mean: float | None
    std: float | None = None
    n: int | None = None
    complete: bool = True
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    """A table row: ``kind`` is "ours", "paper" or "diff"."""

    kind: str
    label: str
    params: str
    cells: dict[str, Cell]
    source: str = ""


@dataclass
class Table:
    layout: Layout
    model: str
    columns: list[Column]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


def human_count(n: int) -> str:
    """Parameter count the way the papers print it: 74880 -> 74.9K, 220000000 -> 220M."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            text = f"{n / scale:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(n)


def params_label(counts: set[int]) -> str:
    if not counts:
        return "–"
    low, high = min(counts), max(counts)
    return human_count(low) if low == high else f"{human_count(low)}–{human_count(high)}"


def method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def fill_means(row: Row, columns: Sequence[Column]) -> None:
    """Set the row's mean cells: the plain mean of its member cells, only when every member has a value."""
    for col in columns:
        if col.is_mean and col.label not in row.cells:
            values = [row.cells.get(m.label) for m in col.members]
            if values and all(v is not None and v.mean is not None for v in values):
                mean = statistics.fmean(v.mean for v in values)
                row.cells[col.label] = Cell(mean, complete=all(v.complete for v in values))


def our_rows(layout: Layout, model: str, results: dict[GroupKey, GroupResult]) -> tuple[list[Column], list[Row]]:
    """Columns and one row per method for ``model`` (methods without any task of the layout are left out)."""
    mine = {key: res for key, res in results.items()
            if key[0] == model and key[2] in layout.tasks and (key[3] is not None) == layout.few_shot}  # fmt: skip
    ks = sorted({key[3] for key in mine} | set(FEW_SHOT_KS)) if layout.few_shot else []
    columns = layout_columns(layout, ks)
    if layout.few_shot:
        present = {key[2] for key in mine}
        columns = [c for c in columns if c.task in present]
    rows = []
    for method in sorted({key[1] for key in mine}, key=method_sort_key):
        cells: dict[str, Cell] = {}
        params: set[int] = set()
        for col in columns:
            res = mine.get((model, method, col.task, col.k)) if not col.is_mean else None
            if res is None or col.metric not in res.test:
                continue
            detail = {"setting": format_setting(res.setting), "seeds": res.seeds, "val_metric": res.selection_metric,
                      "val_mean": res.val_mean}  # fmt: skip
            cells[col.label] = Cell(*res.test[col.metric], res.complete, detail)
            params |= res.params
        row = Row("ours", method, params_label(params), cells)
        fill_means(row, columns)
        rows.append(row)
    return columns, rows


def load_paper(path: str | Path = PAPER_RESULTS) -> dict[str, Any]:
    with Path(path).open(encoding="utf-8") as handle:
        return json.load(handle)


def paper_rows(layout: Layout, model: str, columns: Sequence[Column], paper: dict[str, Any]) -> list[Row]:
    """Published rows for this layout and model, one per row name (tables listed in the file's order)."""
    rows: dict[str, Row] = {}
    for table in paper["tables"]:
        use = table.get("use", {})
        if layout.name not in use.get("layouts", []) or table.get("model") != model:
            continue
        selected = use.get("rows") or {name: {"name": name, "metric": use.get("metric", "reported")} for name in table["rows"]}
        for source_name, spec in selected.items():
            values = table["rows"][source_name]
            name, metric = spec["name"], spec["metric"]
            row = rows.get(name)
            if row is None:
                label = table.get("params_label", {}).get(source_name)
                row = rows[name] = Row("paper", name, label or "–", {}, source=table["id"])
            for col in columns:
                if (metric == "reported" and not col.primary) or metric not in ("reported", col.metric):
                    continue
                names = layout.paper_means if col.is_mean else (col.paper_label,)
                for paper_col in names:
                    if values.get(paper_col) is not None and col.label not in row.cells:
                        row.cells[col.label] = Cell(float(values[paper_col]))
    return list(rows.values())


def diff_rows(ours: Sequence[Row], published: Sequence[Row], method_rows: dict[str, str]) -> list[Row]:
    """Ours minus the published row each method is compared with (cells where both exist)."""
    by_name = {row.label: row for row in published}
    out = []
    for row in ours:
        ref = by_name.get(method_rows.get(row.label, ""))
        if ref is None:
            continue
        cells = {label: Cell(cell.mean - ref.cells[label].mean) for label, cell in row.cells.items()
                 if cell.mean is not None and label in ref.cells and ref.cells[label].mean is not None}  # fmt: skip
        out.append(Row("diff", f"Δ {row.label} − {ref.label}", "", cells, source=ref.source))
    return out


def build_tables(results: dict[GroupKey, GroupResult], layouts: Sequence[str] | None = None,
                 paper: dict[str, Any] | None = None) -> list[Table]:  # fmt: skip
    """One table per (layout, model) that has results (``layouts`` None: every layout); with ``paper``,
    published and difference rows too."""
    models = sorted({key[0] for key in results})
    tables = []
    for name in layouts or LAYOUTS:
        layout = LAYOUTS[name]
        for model in models:
            columns, rows = our_rows(layout, model, results)
            if not rows:
                continue
            table = Table(layout, model, columns, rows)
            if paper is not None:
                published = paper_rows(layout, model, columns, paper)
                if published:
                    table.rows += published + diff_rows(rows, published, paper.get("method_rows", {}))
                else:
                    table.notes.append(f"no published {layout.title} numbers for {model} in the paper data")
            tables.append(table)
    return tables


def format_stat(mean: float | None, std: float | None = None, decimals: int = 1, signed: bool = False) -> str:
    """``72.0 ± 2.0`` (several seeds), ``72.0`` (one seed or a published value), ``+0.4`` (``signed``), ``–`` (none)."""
    if mean is None:
        return "–"
    text = f"{mean:+.{decimals}f}" if signed else f"{mean:.{decimals}f}"
    return text if std is None else f"{text} ± {std:.{decimals}f}"


def _numeric(column: list[str]) -> bool:
    """Every cell reads as a number or is empty / a dash, and at least one is a number."""
    starts = [c.lstrip("+-−Δ ")[:1] for c in column if c not in ("", "–", "n/a")]
    return bool(starts) and all(c.isdigit() for c in starts)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A GitHub Markdown table; a column whose cells all read as numbers (or are empty) is right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    align = ["---:" if _numeric([r[i] for r in cells]) else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in cells]


def run_record(run: Run, metric: str) -> dict[str, Any]:
    """One finished run of the MiniLM demo or benchmark: its scores, size, times and loss curve."""
    results = run.results or {}
    launch = read_json(run.path / "launch.json") or {}
    return {
        "task": run.task, "method": run.method, "seed": run.seed, "metric": metric,
        "max_steps": run.get("max_steps"), "trainable_params": run.trainable_params,
        "trainable_percent": float(results["trainable_params_percent"]),
        "validation": float(results[f"eval_{metric}"]), "test": float(results[f"test_{metric}"]),
        "train_seconds": float(results.get("train_runtime", 0.0)),
        "wall_seconds": float(launch.get("wall_seconds", results.get("train_runtime", 0.0))),
        "train_loss": results.get("train_loss"), "loss_curve": loss_history(run),
    }  # fmt: skip


def method_summary(result: GroupResult, metric: str, shape: str) -> dict[str, Any]:
    """One method's runs over seeds: mean and sample std of the test and validation metric, size, times."""
    records = [run_record(run, metric) for run in result.runs]
    test_mean, test_std, _ = result.test[metric]
    first = records[0]
    return {
        "task": first["task"], "method": first["method"], "shape": shape, "metric": metric,
        "seeds": result.seeds, "max_steps": first["max_steps"], "trainable_params": first["trainable_params"],
        "trainable_percent": first["trainable_percent"], "test_mean": test_mean, "test_std": test_std,
        "validation_mean": result.val_mean, "validation_std": result.val_std,
        "train_seconds_mean": mean_std([r["train_seconds"] for r in records])[0],
        "wall_seconds_mean": mean_std([r["wall_seconds"] for r in records])[0],
    }  # fmt: skip


def render_summary(rows: Sequence[dict[str, Any]], decimals: int = 1) -> list[str]:
    """The MiniLM demo / benchmark table: one row per (task, method), scores as mean ± std over seeds."""
    headers = ["task (metric, steps)", "method", "shape", "trainable params", "% of model", "test mean ± std",
               "validation mean ± std", "seeds", "train s / run", "wall s / run"]  # fmt: skip
    body = [
        [f"{r['task']} ({r['metric']}, {r['max_steps']})", r["method"], r["shape"], f"{r['trainable_params']:,}",
         f"{r['trainable_percent']:.4f}", format_stat(r["test_mean"], r["test_std"], decimals),
         format_stat(r["validation_mean"], r["validation_std"], decimals), len(r["seeds"]),
         f"{r['train_seconds_mean']:.0f}", f"{r['wall_seconds_mean']:.0f}"]
        for r in rows
    ]  # fmt: skip
    return markdown_table(headers, body)
