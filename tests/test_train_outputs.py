"""Atomic result files: a failure during a write leaves the previous file intact and no temp file."""

from __future__ import annotations

import json
import os

import pytest

from training.outputs import atomic_write_json, save_split_metrics, write_all_results, write_predictions


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "eval_results.json"
    atomic_write_json(path, {"eval_accuracy": 80.0})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"eval_accuracy": 10.0})
    assert json.loads(path.read_text()) == {"eval_accuracy": 80.0}
    assert [p.name for p in tmp_path.iterdir()] == ["eval_results.json"]


def test_failed_serialisation_keeps_the_previous_file(tmp_path):
    path = tmp_path / "all_results.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": _Unserialisable()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1


class _Unserialisable:
    def __repr__(self) -> str:
        raise ValueError("cannot serialise")

    __str__ = __repr__


def test_split_metrics_merge_into_all_results(tmp_path):
    save_split_metrics(tmp_path, "train", {"train_loss": 0.5, "epoch": 1.0})
    save_split_metrics(tmp_path, "eval", {"eval_accuracy": 75.0, "epoch": 1.0})
    assert not (tmp_path / "all_results.json").exists()  # written last: it marks a finished run
    write_all_results(tmp_path, {"trainable_params": 76800})
    assert json.loads((tmp_path / "all_results.json").read_text()) == {
        "train_loss": 0.5, "epoch": 1.0, "eval_accuracy": 75.0, "trainable_params": 76800,
    }  # fmt: skip
    assert json.loads((tmp_path / "eval_results.json").read_text()) == {"eval_accuracy": 75.0, "epoch": 1.0}
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "eval_results.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_predictions_file(tmp_path):
    path = tmp_path / "predictions_test.jsonl"
    write_predictions(path, ["s1", "s2"], ["0", "1"], ["0", "é"])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"source": "s1", "target": "0", "prediction": "0"},
                    {"source": "s2", "target": "1", "prediction": "é"}]  # fmt: skip
    with pytest.raises(ValueError, match="2 sources"):
        write_predictions(path, ["s1", "s2"], ["0"], ["0"])
