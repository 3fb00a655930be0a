"""The flag schema (training/planner/schema.py) and the gate it opens: every numeric and path flag has a
rule, and drawn flag values and data rows end in a finished run or in exit 2 with one line before the
backbone loads, never in a traceback."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_support import WeightsLoaded, no_weights, read_json, train_argv

import train
from train import main
from training.planner.schema import RULES, UNCHECKED, Location, Number, declared_types, flag_problem

ARGUMENT_GROUPS = (train.ModelArguments, train.DataTrainingArguments, train.TrainingArguments)
PATH_WORDS = ("dir", "path", "ckpt", "_id", "checkpoint", "input", "output", "deepspeed", "config", "file")
GATE_SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def options(annotation) -> tuple:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return typing.get_args(annotation) if union else (annotation,)


def numeric(annotation) -> bool:
    return any(option in (int, float) for option in options(annotation))


def path_like(name: str, annotation) -> bool:
    """A text flag whose name says it is a place (folder, file, checkpoint, id)."""
    kinds = options(annotation)
    return str in kinds and bool not in kinds and any(word in name for word in PATH_WORDS)


def argument_fields():
    for group in ARGUMENT_GROUPS:
        hints = declared_types(group)
        for item in dataclasses.fields(group):
            yield item.name, hints[item.name]


def test_every_numeric_and_path_flag_of_train_py_has_a_rule():
    """A new numeric or path flag cannot skip the gate: it needs a rule (or a reason in UNCHECKED)."""
    missing = []
    for name, annotation in argument_fields():
        if numeric(annotation) and not isinstance(RULES.get(name), Number):
            missing.append(f"{name} (numeric)")
        elif path_like(name, annotation) and name not in RULES and name not in UNCHECKED:
            missing.append(f"{name} (path-like)")
    assert not missing, f"flags without a rule in training/planner/schema.py: {missing}"


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("max_grad_norm", "nan", "must be a finite number >= 0"),
        ("max_train_samples", "-5", "must be >= 1"),
        ("learning_rate", "inf", "must be a finite number >= 0"),
        ("learning_rate", "nan", "must be a finite number >= 0"),
        ("adam_beta1", "1.5", "must be >= 0 and < 1"),
        ("num_train_epochs", "nan", "must be a finite number >= 0"),
        ("max_steps", "0", "must be >= 1, or -1 (train for --num_train_epochs)"),
        ("label_smoothing_factor", "0.1", "must be 0"),
        ("seed", "-5", "must be >= 0 and <= 4294967295"),
    ],
)
def test_the_reported_bad_values_are_refused_with_the_flag_and_the_rule(flag, value, expected):
    problem = flag_problem(flag, float(value))
    assert problem is not None and problem.startswith(f"--{flag} ") and expected in problem, problem


def test_rules_accept_the_defaults_of_every_flag():
    for group in ARGUMENT_GROUPS:
        for item in dataclasses.fields(group):
            if item.default is not dataclasses.MISSING and isinstance(RULES.get(item.name), Number):
                assert flag_problem(item.name, item.default) is None, item.name


def test_a_json_argument_file_is_type_checked(tmp_path, capsys):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "m", "output_dir": "o", "prefix_length": 2.5}))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: argument file {path}: --prefix_length 2.5: must be an integer."]
    assert main([str(tmp_path / "missing.json")]) == 2
    assert "No such file" in capsys.readouterr().err


def numeric_train_flags() -> list[str]:
    """Numeric flags a train.py run reads (launcher-only ones such as --local_rank left out)."""
    skip = {"local_rank", "ddp_timeout", "ddp_bucket_cap_mb", "dataloader_prefetch_factor", "torch_empty_cache_steps"}
    return sorted(name for name, annotation in argument_fields() if numeric(annotation) and name not in skip)


def value_text(value: float) -> str:
    return str(int(value)) if isinstance(value, int) else repr(value)


FLAG_VALUES = st.one_of(
    st.sampled_from([0, 1, -1, 2, 0.5, -0.5, 1e9, -1e9, 2**32, math.inf, -math.inf, math.nan]),
    st.integers(min_value=-(2**33), max_value=2**33),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)


@GATE_SETTINGS
@given(flag=st.sampled_from(numeric_train_flags()), value=FLAG_VALUES)
def test_a_drawn_flag_value_ends_in_one_line_or_passes_the_gate(
    flag, value, small_t5_dir, rte_data, tmp_path_factory, monkeypatch, capsys
):
    hints = dict(argument_fields())
    if float in options(hints[flag]):
        value = float(value)
    elif isinstance(value, float):
        if not value.is_integer() or not math.isfinite(value):
            return  # an integer flag: the parser itself refuses "0.5" (argparse, exit 2)
        value = int(value)
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    out = tmp_path_factory.mktemp("run") / "out"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "3", f"--{flag}={value_text(value)}")
    capsys.readouterr()
    try:
        code = main(argv)
    except WeightsLoaded:
        assert flag_problem(flag, value) is None, f"--{flag} {value} reached the backbone"
        return
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    if flag_problem(flag, value) is not None:
        assert f"--{flag}" in lines[0], lines[0]


LABELS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=4),
    st.sampled_from([0.0, 1.0, 0.5, math.inf, -math.inf, math.nan, 1e308]),
    st.text(max_size=3),
    st.lists(st.integers(0, 1), max_size=2),
    st.dictionaries(st.just("a"), st.integers(0, 1), max_size=1),
)


def label_is_valid(value) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and value in (0, 1)


@GATE_SETTINGS
@given(label=LABELS)
def test_a_drawn_training_label_ends_in_one_line_naming_the_row_or_passes(
    label, small_t5_dir, tmp_path_factory, monkeypatch, capsys
):
    root = tmp_path_factory.mktemp("data")
    rows = [{"sentence1": f"cat {i} sat", "sentence2": "a cat", "label": i % 2, "idx": i} for i in range(8)]
    rows[2]["label"] = label
    (root / "rte").mkdir()
    lines = "".join(json.dumps(row) + "\n" for row in rows)  # NaN and Infinity as Python's json writes them
    (root / "rte" / "train.jsonl").write_text(lines)
    (root / "rte" / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:1] * 4))
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    argv = train_argv(small_t5_dir, root, tmp_path_factory.mktemp("run") / "out", "--max_steps", "3")
    capsys.readouterr()
    try:
        code = main(argv)
    except WeightsLoaded:
        assert label_is_valid(label), f"label {label!r} was accepted"
        return
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert not label_is_valid(label) and "train.jsonl row 3" in errors[0], errors[0]


@pytest.mark.slow
@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    learning_rate=st.floats(0, 1),
    warmup=st.integers(0, 3),
    weight_decay=st.floats(0, 0.1),
    max_grad_norm=st.floats(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_drawn_valid_flags_finish_the_run(
    learning_rate, warmup, weight_decay, max_grad_norm, seed, small_t5_dir, rte_data, tmp_path_factory
):
    out = tmp_path_factory.mktemp("run") / "out"
    flags = {"learning_rate": learning_rate, "warmup_steps": warmup, "weight_decay": weight_decay,
             "max_grad_norm": max_grad_norm, "seed": seed}  # fmt: skip
    extra = [text for name, value in flags.items() for text in (f"--{name}", value_text(value))]
    assert main(train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--do_eval", *extra)) == 0
    results = read_json(Path(out) / "all_results.json")
    assert math.isfinite(results["train_loss"]) and "eval_accuracy" in results


def test_every_location_rule_names_a_known_kind():
    kinds = {"dir", "file", "dir_or_hub", "new_dir", "new_file", "dir_or_value", "json_file", "any"}
    assert {rule.kind for rule in RULES.values() if isinstance(rule, Location)} <= kinds
