"""Which runs of a sweep finished, failed (with the last error line of output.log) or are missing.

Missing runs come from ``--expect KEY=V1,V2 ...`` (the Cartesian product of the lists, matched
against each run's run_config.json, e.g. ``--expect task_name=rte,mrpc learning_rate=0.3,0.4
seed=42,43,44``) or, without ``--expect``, are inferred from siblings: a setting lacking a seed that
another setting of the same (model, method, task) has.

Usage::

    python scripts/sweep_status.py outputs/ [--expect KEY=V1,V2 ...] [--only failed missing]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from scripts._runs import Run, discover_runs, format_setting, group_key, group_name, group_runs, values_equal  # noqa: E402
from scripts._tables import format_stat  # noqa: E402

STATUSES = ("finished", "failed", "unfinished", "missing")
"""unfinished = no complete all_results.json and no error in the logs (still running, or killed)."""


@dataclass
class Entry:
    status: str
    group: str
    detail: str
    path: Path | None = None


def group_label(run: Run) -> str:
    return group_name(group_key(run)) if run.config else "(no run_config.json)"


def run_entry(run: Run, decimals: int = 1) -> Entry:
    """Status of one run directory; finished runs show their validation (and test) selection metric, rounded."""
    if run.finished:
        metric = run.metric_for_best_model
        parts = [f"{split} {metric} {format_stat(float(run.results[f'{split}_{metric}']), None, decimals)}"
                 for split in ("eval", "test") if metric and f"{split}_{metric}" in run.results]
        return Entry("finished", group_label(run), ", ".join(parts), run.path)
    if run.error:
        return Entry("failed", group_label(run), run.error, run.path)
    what = "all_results.json lacks eval/test metrics" if run.results is not None else "no all_results.json"
    return Entry("unfinished", group_label(run), f"{what}, no error in the logs", run.path)


def parse_expect(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["seed=42,43", "task_name=rte"]`` -> ``[("seed", ["42", "43"]), ("task_name", ["rte"])]``."""
    grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--expect takes KEY=V1,V2,...; got {spec!r}")
        grid.append((key, values.split(",")))
    return grid


def missing_from_grid(runs: Sequence[Run], specs: Sequence[str]) -> list[Entry]:
    """Grid points of ``--expect`` that no run directory (finished or not) matches."""
    grid = parse_expect(specs)
    keys = [key for key, _ in grid]
    configured = [run for run in runs if run.config is not None]
    entries = []
    for values in itertools.product(*(vals for _, vals in grid)):
        if not any(all(values_equal(run.get(k), v) for k, v in zip(keys, values, strict=True)) for run in configured):
            detail = " ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
            entries.append(Entry("missing", "(--expect)", detail))
    return entries


def missing_from_siblings(runs: Sequence[Run]) -> list[Entry]:
    """(setting, seed) pairs that have no run directory although sibling settings have that seed."""
    groups, _ = group_runs(runs)
    entries = []
    for group_id, group in groups.items():
        label = group_name(group_id)
        for key, setting in group.settings.items():
            for seed in group.expected_seeds:
                if seed not in setting.runs:
                    detail = " ".join(filter(None, (format_setting(group.describe(key)), f"seed={seed}")))
                    entries.append(Entry("missing", label, detail))
    return entries


def status(roots: Sequence[str | Path], expect: Sequence[str] | None = None, decimals: int = 1) -> list[Entry]:
    """One entry per run directory under ``roots`` plus one per missing run."""
    runs = discover_runs(roots)
    entries = [run_entry(run, decimals) for run in runs]
    entries += missing_from_grid(runs, expect) if expect else missing_from_siblings(runs)
    return entries


def render(entries: Sequence[Entry], only: Sequence[str]) -> str:
    counts = Counter(e.status for e in entries)
    lines = ["  ".join(f"{s}: {counts.get(s, 0)}" for s in STATUSES), ""]
    for state in STATUSES:
        if state not in only:
            continue
        for e in sorted((e for e in entries if e.status == state), key=lambda e: (e.group, str(e.path), e.detail)):
            where = f"  {e.path}" if e.path else ""
            lines.append(f"{state:<10}  {e.group:<40}  {e.detail}{where}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="output roots holding run directories (searched recursively)")
    parser.add_argument("--expect", nargs="+", metavar="KEY=V1,V2", help="the sweep grid (run_config keys)")
    parser.add_argument("--only", nargs="+", choices=STATUSES, default=list(STATUSES), help="statuses to list")
    parser.add_argument("--decimals", type=int, default=1, help="digits after the point of the metrics shown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        entries = status(args.roots, args.expect, args.decimals)
    except ValueError as err:
        parser.error(str(err))
    sys.stdout.write(render(entries, args.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
