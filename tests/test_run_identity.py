"""A run's identity (training/identity.py) decides reuse and resume: any change of a result flag, of the
backbone's weights or of a data file is reported; a moved folder with the same contents is not."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import save_small_t5
from test_reliability_support import read_json, run_killed_after_checkpoint, train_argv

from train import main, parse_args
from training import identity as identity_module
from training.identity import (
    IDENTITY_NAME,
    NOT_RESULT_FLAGS,
    build_identity,
    file_fingerprint,
    identity_differences,
    result_flags,
)


def changed_value(value):
    """Another value of the same type (None becomes a value, so that setting an unset flag counts too)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return 7 if value is None else None


def test_changing_any_result_flag_changes_the_identity_and_names_it():
    """Generated over every field of the three argument groups: a new flag is identity by default."""
    groups = parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--task_name", "rte"])
    before = {"flags": result_flags(*groups)}
    checked = 0
    for index, group in enumerate(groups):
        for item in dataclasses.fields(group):
            value = getattr(group, item.name)
            if not (value is None or isinstance(value, (bool, int, float, str))):
                continue  # lists, dicts, enums: compared, but not generated here
            changed = list(groups)
            changed[index] = copy.copy(group)
            setattr(changed[index], item.name, changed_value(value))
            differences = identity_differences(before, {"flags": result_flags(*changed)})
            if item.name in NOT_RESULT_FLAGS:
                assert differences == [], item.name
            else:
                assert len(differences) == 1 and differences[0].startswith(f"--{item.name}:"), item.name
                checked += 1
    assert checked > 60


def test_a_moved_folder_has_the_same_identity_and_other_contents_do_not(tmp_path):
    data = tmp_path / "a" / "train.jsonl"
    data.parent.mkdir()
    data.write_text('{"label": 0}\n')
    model = save_small_t5(tmp_path / "model")
    first = build_identity([], str(model), {"train": data}, {})
    moved = tmp_path / "moved"
    shutil.copytree(model, moved)
    data.rename(tmp_path / "train.jsonl")
    assert identity_differences(first, build_identity([], str(moved), {"train": tmp_path / "train.jsonl"}, {})) == []

    (tmp_path / "train.jsonl").write_text('{"label": 1}\n')  # same size, every label flipped
    save_small_t5(moved)  # same width ...
    from safetensors.torch import load_file, save_file

    state = load_file(moved / "model.safetensors")
    save_file({k: v + 1 for k, v in state.items()}, moved / "model.safetensors")  # ... other weights
    differences = identity_differences(
        first, build_identity([], str(moved), {"train": tmp_path / "train.jsonl"}, {})
    )
    assert [d.split(":")[0] for d in differences] == ["backbone file model.safetensors", "data split train"]


def test_large_files_are_fingerprinted_from_spaced_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(identity_module, "FULL_HASH_LIMIT", 1000)
    monkeypatch.setattr(identity_module, "BLOCK", 10)
    path = tmp_path / "weights.bin"
    data = bytearray(torch.arange(5000, dtype=torch.uint8).numpy().tobytes())
    path.write_bytes(data)
    first = file_fingerprint(path)
    assert set(first) == {"size", "sampled_sha256"}
    data[-1] ^= 1  # the last block is always read
    path.write_bytes(data)
    assert file_fingerprint(path) != first


@pytest.fixture
def killed_run(small_t5_dir, rte_data, tmp_path, monkeypatch):
    """A run killed after checkpoint-2 of 4, with its own copies of the model and data."""
    model = tmp_path / "model"
    data = tmp_path / "data"
    shutil.copytree(small_t5_dir, model)
    shutil.copytree(rte_data, data)
    argv = train_argv(model, data, tmp_path / "run", "--max_steps", "4", "--save_steps", "2")
    run_killed_after_checkpoint(monkeypatch, 2, argv)
    return model, data, argv


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow
def test_a_resume_with_other_backbone_weights_or_data_is_refused(killed_run, capsys):
    model, data, argv = killed_run
    original = (data / "rte" / "train.jsonl").read_text()
    flipped = original.replace('"label": 0', '"label": 9').replace('"label": 1', '"label": 0').replace(
        '"label": 9', '"label": 1'
    )
    (data / "rte" / "train.jsonl").write_text(flipped)
    capsys.readouterr()
    assert main(argv) == 2
    assert "data split train: other contents" in one_error(capsys)
    (data / "rte" / "train.jsonl").write_text(original)

    save_small_t5(model, dropout=0.2)  # same width, another config and weights
    capsys.readouterr()
    assert main(argv) == 2
    line = one_error(capsys)
    assert "backbone file config.json" in line and "--allow_changed_resume_flags" in line


@pytest.mark.slow
def test_a_resume_without_a_recorded_identity_is_refused(killed_run, tmp_path, capsys):
    _, _, argv = killed_run
    record = tmp_path / "run" / "checkpoint-2" / "resume_record.json"
    kept = read_json(record)
    record.write_text(json.dumps({"train_loss_sum": kept["train_loss_sum"], "global_step": 2}))
    capsys.readouterr()
    assert main([*argv, "--learning_rate", "0.5"]) == 2
    assert "cannot be compared" in one_error(capsys)
    record.unlink()
    assert main(argv) == 2
    assert "cannot be compared" in one_error(capsys)


@pytest.mark.slow
def test_a_finished_run_is_reused_only_by_the_same_command(small_t5_dir, rte_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2")
    assert main(argv) == 0
    results = (out / "all_results.json").read_bytes()
    capsys.readouterr()
    for changed in (["--per_device_train_batch_size", "2"], ["--warmup_steps", "1"], ["--weight_decay", "0.1"],
                    ["--task_name", "mrpc"], ["--prefix_length", "3"]):  # fmt: skip
        code = main([*argv, *changed])
        line = one_error(capsys)
        assert code == 2, changed
        assert "holds a finished run of another setting" in line or "--data_dir" in line, line
    assert main(argv) == 0 and (out / "all_results.json").read_bytes() == results
    (out / IDENTITY_NAME).unlink()  # an older version's folder: the flags in run_config.json are compared
    assert main([*argv, "--learning_rate", "0.5"]) == 2
    assert "--learning_rate: 0.3 recorded, 0.5 now" in one_error(capsys)
    assert main(argv) == 0
    assert Path(out / "all_results.json").read_bytes() == results
