"""A grid of ``train.py`` runs as data: fixed flags, swept values, conditional flags, one folder per run.

A grid file is JSON (a user can write one by hand; ``scripts/sweep.py --save_grid`` writes the grid an
example script builds)::

    {
      "root": "outputs/tiny/runs",
      "name": "{method}/{task_name}/lr{learning_rate}_seed{seed}",
      "fixed": {"model_name_or_path": "t5-base", "task_name": "rte", "learning_rate": "3e-1", "do_train": true},
      "sweep": {"method": ["PT", "DePT"], "seed": ["42", "43"]},
      "labels": ["method"],
      "when": [{"if": {"method": ["PT"]}, "set": {"peft_type": "PROMPT_TUNING"}},
               {"if": {"method": ["DePT"]}, "set": {"peft_type": "PROMPT_TUNING_LORA"}}]
    }

- ``fixed``: ``train.py`` flags (without ``--``) shared by every run; ``true`` is a bare flag
  (``--do_train``), anything else is passed as its string (write ``"3e-1"`` to keep that spelling).
- ``sweep``: the axes of the grid, in loop order (the first varies slowest); each value of an axis sets
  the flag of that name, except for ``labels``, axes that only name runs and select ``when`` rules.
- ``when``: a rule sets its flags in every run whose axes or flags take one of the listed values.
- ``name``: the run's folder below ``root``, a ``str.format`` template of axes and flags.
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Value = str | bool
GRID_KEYS = ("root", "name", "fixed", "sweep", "labels", "when")


class GridError(ValueError):
    """A grid that cannot be expanded; the message names the key and the fix."""


@dataclass(frozen=True)
class Rule:
    """Flags set in the runs whose axes/flags match: ``when`` maps a name to the values that select."""

    when: dict[str, list[str]]
    set: dict[str, Value]

    def matches(self, fields: Mapping[str, Value]) -> bool:
        return all(as_text(fields.get(key)) in values for key, values in self.when.items())


@dataclass(frozen=True)
class Run:
    """One run of a grid: its folder and its ``train.py`` arguments (``--output_dir`` last)."""

    output_dir: str
    argv: tuple[str, ...]
    flags: dict[str, Value] = field(compare=False)

    def command(self) -> str:
        """The shell command that runs it (``python train.py ...``)."""
        return shlex.join(["python", "train.py", *self.argv])


@dataclass(frozen=True)
class Grid:
    root: str
    name: str
    fixed: dict[str, Value]
    sweep: dict[str, list[Value]]
    labels: tuple[str, ...] = ()
    when: tuple[Rule, ...] = ()

    def runs(self) -> list[Run]:
        """Every run of the grid in loop order; GridError on an unknown name field or two runs sharing a folder."""
        self.check()
        runs, seen = [], {}
        for combo in itertools.product(*self.sweep.values()):
            axes = dict(zip(self.sweep, combo, strict=True))
            flags = dict(self.fixed)
            flags.update({axis: value for axis, value in axes.items() if axis not in self.labels})
            for rule in self.when:
                if rule.matches({**flags, **axes}):
                    flags.update(rule.set)
            fields = {key: as_text(value) for key, value in {**flags, **axes}.items()}
            try:
                name = self.name.format_map(fields)
            except KeyError as exc:
                raise GridError(f"name: {{{exc.args[0]}}} is neither an axis nor a flag of the grid") from exc
            output_dir = str(Path(self.root) / name)
            if output_dir in seen:
                raise GridError(f"name: the runs {seen[output_dir]} and {axes} share the folder {output_dir}; "
                                "put the axis that tells them apart into the name")  # fmt: skip
            seen[output_dir] = axes
            runs.append(Run(output_dir, (*flag_argv(flags), "--output_dir", output_dir), flags))
        return runs

    def check(self) -> None:
        """GridError for an empty axis, a label that is no axis, a rule on an unknown name, a fixed --output_dir."""
        if "output_dir" in self.fixed or "output_dir" in self.sweep:
            raise GridError("output_dir is made from root and name; remove it from the flags")
        for axis, values in self.sweep.items():
            if not values:
                raise GridError(f"sweep: the axis {axis!r} has no values")
        unknown = [label for label in self.labels if label not in self.sweep]
        if unknown:
            raise GridError(f"labels: {unknown} are not axes of sweep ({list(self.sweep)})")
        known = set(self.sweep) | set(self.fixed) | {key for rule in self.when for key in rule.set}
        for rule in self.when:
            missing = [key for key in rule.when if key not in known]
            if missing:
                raise GridError(f"when: {missing} are neither axes nor flags of the grid")

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "name": self.name, "fixed": self.fixed, "sweep": self.sweep,
                "labels": list(self.labels), "when": [{"if": r.when, "set": r.set} for r in self.when]}  # fmt: skip


def as_text(value: Any) -> str | None:
    """A flag value as the command line spells it (``True`` for a bare flag); None stays None."""
    return None if value is None else str(value)


def flag_argv(flags: Mapping[str, Value]) -> list[str]:
    """``{"do_train": True, "seed": "42"}`` -> ``["--do_train", "--seed", "42"]``."""
    argv: list[str] = []
    for key, value in flags.items():
        argv += [f"--{key}"] if value is True else [f"--{key}", as_text(value)]
    return argv


def parse_flags(argv: Sequence[str]) -> dict[str, Value]:
    """``["--do_train", "--seed", "42"]`` -> ``{"do_train": True, "seed": "42"}`` (GridError on a stray value)."""
    flags: dict[str, Value] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) == 2:
            raise GridError(f"fixed flags: {token!r} follows no --flag")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            flags[token[2:]] = argv[i + 1]
            i += 2
        else:
            flags[token[2:]] = True
            i += 1
    return flags


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["max_steps=300000"]`` -> ``{"max_steps": "300000"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GridError(f"{what}: {item!r} is not NAME=VALUE")
        out[key] = value
    return out


def rule_from_cli(items: Sequence[str]) -> Rule:
    """``["task_name=mnli,qqp", "max_steps=300000"]``: the first item selects (values split at commas),
    the others are set."""
    if len(items) < 2:
        raise GridError(f"--when {' '.join(items)}: give NAME=V1,V2 and at least one FLAG=VALUE to set")
    when = {key: value.split(",") for key, value in parse_assignments(items[:1], "--when").items()}
    return Rule(when, dict(parse_assignments(items[1:], "--when")))


def grid_from_json(data: Mapping[str, Any], source: str = "grid") -> Grid:
    """A Grid from the JSON format of the module docstring; GridError names the key at fault."""
    unknown = sorted(set(data) - set(GRID_KEYS))
    if unknown:
        raise GridError(f"{source}: unknown key(s) {unknown}; a grid has {list(GRID_KEYS)}")
    for key in ("root", "name"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise GridError(f"{source}: {key!r} must be a non-empty string")
    fixed, sweep = data.get("fixed", {}), data.get("sweep", {})
    if not isinstance(fixed, dict) or not isinstance(sweep, dict) or not all(isinstance(v, list) for v in sweep.values()):
        raise GridError(f"{source}: 'fixed' must map flags to values and 'sweep' must map axes to lists")
    rules = []
    for rule in data.get("when", []):
        if set(rule) != {"if", "set"}:
            raise GridError(f"{source}: a 'when' rule has the keys 'if' and 'set', got {sorted(rule)}")
        rules.append(Rule({k: [as_text(x) for x in (v if isinstance(v, list) else [v])] for k, v in rule["if"].items()},
                          dict(rule["set"])))  # fmt: skip
    return Grid(data["root"], data["name"], dict(fixed), {k: list(v) for k, v in sweep.items()},
                tuple(data.get("labels", [])), tuple(rules))  # fmt: skip


def load_grid(path: str | Path) -> Grid:
    """Read a grid file; GridError when it is missing or no valid JSON."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise GridError(f"--grid {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise GridError(f"--grid {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise GridError(f"--grid {path}: the file must hold one JSON object")
    return grid_from_json(data, f"--grid {path}")
