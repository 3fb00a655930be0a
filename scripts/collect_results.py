"""Collect train.py runs into the papers' tables (GLUE, SuperGLUE, MRQA, others, few-shot).

For each (model, method, task, k-shot) the hyperparameter setting with the best mean *validation*
metric (``eval_<metric_for_best_model>``) is chosen; its *test* metric is reported as mean ± sample std
over seeds. Settings missing a seed that their siblings have, and crashed runs, are listed, never
averaged silently.

Usage::

    python scripts/collect_results.py outputs/ [more roots] [--compare-paper] [--format md|latex|csv]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from scripts._runs import GroupKey, GroupResult, Run, discover_runs, format_setting, group_name, group_runs  # noqa: E402
from scripts._tables import (  # noqa: E402
    LAYOUTS,
    PAPER_RESULTS,
    Cell,
    Row,
    Table,
    build_tables,
    format_stat,
    load_paper,
    markdown_table,
    reported_metrics,
)

logger = logging.getLogger("collect_results")


@dataclass
class Collection:
    """Selected results per group, the problems found per group, and runs that have no config."""

    results: dict[GroupKey, GroupResult]
    problems: dict[GroupKey, list[str]]
    orphans: list[Run]


def collect(roots: Sequence[str | Path], ignore: Sequence[str] = ()) -> Collection:
    """Discover runs under ``roots``, group them and select each group's best setting by validation."""
    groups, orphans = group_runs(discover_runs(roots), ignore)
    results, problems = {}, {}
    for key, group in groups.items():
        selection = {r.metric_for_best_model for r in group.runs} - {None}
        fallback = next(iter(selection)) if len(selection) == 1 else None
        test_metrics = reported_metrics(key[2], fallback)
        needed = [f"eval_{m}" for m in sorted(selection)] + [f"test_{m}" for m in test_metrics]
        notes = group.problems(needed)
        result = group.select(test_metrics)
        if result is None:
            notes.append("no finished run with the validation and test metrics")
        else:
            results[key] = result
        if notes:
            problems[key] = notes
    return Collection(results, problems, orphans)


def format_cell(cell: Cell | None, decimals: int, signed: bool = False) -> str:
    """``85.12 ± 0.30`` (ours), ``85.1`` (published or n=1), ``+0.4`` (differences); ``*`` = incomplete."""
    if cell is None:
        return "–"
    return format_stat(cell.mean, cell.std, decimals, signed) + ("" if cell.complete else "*")


def row_label(row: Row) -> str:
    return f"paper: {row.label}" if row.kind == "paper" else row.label


def table_title(table: Table) -> str:
    return f"{table.layout.title} ({table.model})"


def source_lines(table: Table, paper: dict | None) -> list[str]:
    """One citation line per published table used in ``table``."""
    if paper is None:
        return []
    used = {row.source for row in table.rows if row.kind == "paper"}
    return [f"{t['name']}: {t['source']}" for t in paper["tables"] if t["id"] in used]


def render_markdown(tables: Sequence[Table], collection: Collection, decimals: int, paper: dict | None = None) -> str:
    """All tables, the selected settings and the incomplete groups as Markdown."""
    out = []
    for table in tables:
        out += [f"## {table_title(table)}", ""]
        labels = [c.label for c in table.columns]
        body = [[row_label(row), row.params] + [format_cell(row.cells.get(label), decimals, row.kind == "diff")
                for label in labels] for row in table.rows]  # fmt: skip
        out += markdown_table(["Method", "#Params", *labels], body)
        out += ["", "Test split; mean ± sample std (ddof=1) over seeds of the setting chosen by validation. "
                "Avg = mean of the task means, shown only when every task is present. "
                "`*` = chosen setting lacks seeds (see Incomplete)."]
        out += [f"Published: {line}" for line in source_lines(table, paper)]
        out += [f"Note: {note}" for note in table.notes]
        out.append("")
    if collection.results:
        out += ["## Selected hyperparameters", ""]
        body = []
        for (model, method, task, k), res in collection.results.items():
            setting = format_setting(res.setting) or "(single setting)"
            test = ", ".join(f"{m} {format_cell(Cell(mean, std, n, res.complete), decimals)}"
                             for m, (mean, std, n) in res.test.items())  # fmt: skip
            n = next(iter(res.test.values()))[2] if res.test else 0
            body.append([model, method, task, "" if k is None else k, setting, f"eval_{res.selection_metric}",
                         f"{res.val_mean:.{decimals}f}", test, n, ", ".join(str(s) for s in res.seeds)])  # fmt: skip
        out += markdown_table(["Model", "Method", "Task", "k", "Setting (swept keys)", "Selected by", "Val mean",
                               "Test", "n", "Seeds"], body)  # fmt: skip
        out.append("")
    if collection.problems or collection.orphans:
        out += ["## Incomplete (not averaged silently)", ""]
        for key, notes in collection.problems.items():
            out.append(f"- {group_name(key)}")
            out += [f"  - {note}" for note in notes]
        for run in collection.orphans:
            why = f': "{run.error}"' if run.error else ""
            out.append(f"- run without run_config.json: {run.path}{why}")
        out.append("")
    return "\n".join(out)


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "†": r"$^\dagger$", "¹": r"$^1$", "Δ": r"$\Delta$", "−": r"$-$", "–": "--",
}


def latex_escape(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in text)


def render_latex(tables: Sequence[Table], decimals: int) -> str:
    """One booktabs ``tabular`` per table; ours, published and difference rows separated by midrules."""
    out = []
    for table in tables:
        labels = [c.label for c in table.columns]
        out += [f"% {latex_escape(table_title(table))}", r"\begin{tabular}{lr" + "r" * len(labels) + "}", r"\toprule",
                r"Method & \#Params & " + " & ".join(latex_escape(label) for label in labels) + r" \\"]  # fmt: skip
        previous = None
        for row in table.rows:
            if row.kind != previous:
                out.append(r"\midrule")
            previous = row.kind
            cells = [latex_escape(format_cell(row.cells.get(label), decimals, row.kind == "diff")).replace(" ± ", r"$\pm$")
                     for label in labels]  # fmt: skip
            out.append(f"{latex_escape(row_label(row))} & {latex_escape(row.params)} & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(out)


CSV_FIELDS = (
    "layout", "model", "kind", "row", "params", "column", "task", "k", "metric", "mean", "std", "n",
    "complete", "setting", "seeds", "val_metric", "val_mean", "source",
)


def render_csv(tables: Sequence[Table]) -> str:
    """Long format: one line per non-empty table cell (ours, published, difference)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for table in tables:
        for row in table.rows:
            for col in table.columns:
                cell = row.cells.get(col.label)
                if cell is None:
                    continue
                detail = cell.detail
                writer.writerow({
                    "layout": table.layout.name, "model": table.model, "kind": row.kind, "row": row.label,
                    "params": row.params, "column": col.label, "task": col.task or "", "k": col.k or "",
                    "metric": col.metric, "mean": repr(cell.mean), "std": "" if cell.std is None else repr(cell.std),
                    "n": cell.n or "", "complete": cell.complete, "setting": detail.get("setting", ""),
                    "seeds": " ".join(str(s) for s in detail.get("seeds", [])),
                    "val_metric": detail.get("val_metric", ""), "val_mean": detail.get("val_mean", ""),
                    "source": row.source,
                })  # fmt: skip
    return buffer.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="output roots holding run directories (searched recursively)")
    parser.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    parser.add_argument("--layout", nargs="+", choices=tuple(LAYOUTS), help="tables to print (default: all with results)")
    parser.add_argument("--compare-paper", action="store_true", help="add the published rows and ours − paper")
    parser.add_argument("--paper-file", default=str(PAPER_RESULTS), help="published numbers (default: %(default)s)")
    parser.add_argument("--decimals", type=int, default=1)
    parser.add_argument("--ignore", nargs="+", default=[], metavar="KEY", help="extra config keys that do not "
                        "define a setting (seed, output_dir and bookkeeping always ignored)")  # fmt: skip
    parser.add_argument("--output", help="write here instead of stdout")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    collection = collect(args.roots, args.ignore)
    paper = load_paper(args.paper_file) if args.compare_paper else None
    tables = build_tables(collection.results, args.layout, paper)
    if args.format == "md":
        text = render_markdown(tables, collection, args.decimals, paper)
    else:
        text = render_latex(tables, args.decimals) if args.format == "latex" else render_csv(tables)
        for key, notes in collection.problems.items():
            for note in notes:
                logger.warning("incomplete %s: %s", group_name(key), note)
        for run in collection.orphans:
            logger.warning("run without run_config.json: %s %s", run.path, run.error or "")
    if not collection.results:
        logger.warning("no finished runs with validation and test metrics under %s", " ".join(args.roots))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        logger.info("wrote %s", args.output)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
