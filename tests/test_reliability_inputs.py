"""Bad input ends in one line and exit code 2 before the backbone loads: bad labels (finding 6 of the
reliability review), unreadable data, adapter and flag values (finding 8), broken adapter tensors
(finding 9). Unlabeled validation rows are scored around, and best-model selection keeps working.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_reliability_support as support
import torch
from safetensors.torch import load_file, save_file
from test_reliability_support import WeightsLoaded, no_weights, read_json, train_argv
from transformers import AutoModelForSeq2SeqLM

from peft import PromptTuningConfig, get_peft_model
from train import main


def rte_rows(n: int) -> list[dict]:
    return [{"sentence1": f"cat {i} sat", "sentence2": "a cat", "label": i % 2, "idx": i} for i in range(n)]


def write_task(root: Path, task: str, splits: dict[str, list[dict] | bytes]) -> Path:
    """``root/<task>/<split>.jsonl`` from rows (one JSON object per line) or raw bytes; returns ``root``."""
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        data = rows if isinstance(rows, bytes) else "".join(json.dumps(r) + "\n" for r in rows).encode()
        (folder / f"{split}.jsonl").write_bytes(data)
    return root


def one_error_line(capsys) -> str:
    """The one ``error:`` line on stderr (progress bars of the data loader aside), without a traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def with_row(rows: list[dict], index: int, **changes) -> list[dict]:
    rows = [dict(r) for r in rows]
    rows[index].update(changes)
    return rows


GOOD = rte_rows(16)
BAD_TRAIN_LABELS = {
    "minus one": (with_row(GOOD, 3, label=-1), ["train.jsonl row 4", "-1", "need a label"]),
    "null": (with_row(GOOD, 5, label=None), ["train.jsonl row 6", "None"]),
    "out of range": (with_row(GOOD, 2, label=7), ["train.jsonl row 3", "7", "out of range", "0..1"]),
    "float": (with_row(GOOD, 0, label=1.7), ["train.jsonl row 1", "1.7", "whole class index"]),
}


@pytest.mark.parametrize("case", BAD_TRAIN_LABELS)
def test_bad_train_labels_name_file_row_and_value(case, small_t5_dir, tmp_path, capsys, monkeypatch):
    """Finding 6: -1/null were trained as empty targets, 7 and 1.7 were accepted silently."""
    rows, expected = BAD_TRAIN_LABELS[case]
    data = write_task(tmp_path / "data", "rte", {"train": rows, "validation": rte_rows(8)})
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, data, tmp_path / "out", "--max_steps", "2")) == 2
    line = one_error_line(capsys)
    assert all(text in line for text in expected), line


@pytest.mark.slow
def test_an_unlabeled_validation_row_does_not_break_best_model_selection(small_t5_dir, tmp_path):
    """Finding 6: one -1 in validation crashed the first evaluation under --load_best_model_at_end."""
    validation = with_row(rte_rows(8), 0, label=-1)
    data = write_task(tmp_path / "data", "rte", {"train": GOOD, "validation": validation})
    out = tmp_path / "out"
    argv = train_argv(small_t5_dir, data, out, "--max_steps", "2", "--eval_strategy", "steps", "--eval_steps", "1",
                      "--save_steps", "1", "--load_best_model_at_end", "--do_eval", "--do_predict")  # fmt: skip
    assert main(argv) == 0
    results = read_json(out / "all_results.json")
    assert "eval_accuracy" in results and "test_accuracy" in results
    rows = (out / "predictions_eval.jsonl").read_text().splitlines()
    assert len(rows) == 4  # every row gets a prediction, the unlabeled one too
    assert read_json(out / "trainer_state.json")["best_model_checkpoint"] is not None


def test_an_unlabeled_validation_split_cannot_pick_the_best_model(small_t5_dir, tmp_path, capsys, monkeypatch):
    unlabeled = [dict(r, label=-1) for r in rte_rows(8)]
    data = write_task(tmp_path / "data", "rte", {"train": GOOD, "validation": unlabeled})
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    argv = train_argv(small_t5_dir, data, tmp_path / "out", "--max_steps", "2", "--eval_strategy", "steps",
                      "--eval_steps", "1", "--save_steps", "1", "--load_best_model_at_end")  # fmt: skip
    assert main(argv) == 2
    assert "--load_best_model_at_end" in one_error_line(capsys)


BAD_DATA = {
    "empty train file": ({"train": b"", "validation": GOOD}, ["train.jsonl is empty"]),
    "empty validation file": ({"train": GOOD, "validation": b"\n"}, ["validation.jsonl holds no rows"]),
    "malformed JSON line": (
        {"train": b'{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a",\n', "validation": GOOD},
        ["train.jsonl line 2: not valid JSON"],
    ),
    "non-UTF-8 bytes": (
        {"train": b'{"sentence1": "caf\xe9", "sentence2": "b", "label": 0}\n', "validation": GOOD},
        ["train.jsonl line 1: not UTF-8"],
    ),
    "null field": ({"train": with_row(GOOD, 2, sentence2=None), "validation": GOOD}, ["row 3", "'sentence2'"]),
    "missing field": (
        {"train": [*GOOD, {"sentence1": "x", "label": 0, "idx": 99}], "validation": GOOD},
        ["train.jsonl row 17", "'sentence2'"],
    ),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_unreadable_data_fails_with_one_line_naming_the_file(case, small_t5_dir, tmp_path, capsys, monkeypatch):
    """Finding 8: StopIteration, messages without file or line, TypeError."""
    splits, expected = BAD_DATA[case]
    data = write_task(tmp_path / "data", "rte", splits)
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, data, tmp_path / "out", "--max_steps", "2", "--do_eval")) == 2
    line = one_error_line(capsys)
    assert "--data_dir" in line and all(text in line for text in expected), line


def test_a_split_emptied_by_the_large_task_rule_fails_before_weights_load(
    small_t5_dir, tmp_path, capsys, monkeypatch
):
    """Finding 8: 16 sst2 rows left train empty and failed after the model loaded."""
    rows = [{"sentence": f"cat {i}", "label": i % 2, "idx": i} for i in range(16)]
    data = write_task(tmp_path / "data", "sst2", {"train": rows, "validation": rows})
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    argv = [*train_argv(small_t5_dir, data, tmp_path / "out", "--max_steps", "2"), "--task_name", "sst2"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "train split is empty" in line and "--split_validation_test False" in line, line


BAD_FLAGS = {
    "no steps": (["--max_steps", "0"], "--max_steps 0"),
    "negative learning rate": (["--learning_rate", "-0.1"], "--learning_rate -0.1: must be >= 0"),
    "batch size 0": (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0: must be >= 1"),
    "huge length": (["--max_seq_length", "100000"], "--max_seq_length 100000"),
    "negative seed": (["--seed", "-5"], "--seed -5: must be >= 0 and <= 4294967295"),
    "negative data seed": (["--data_seed", "-1"], "--data_seed -1: must be >= 0 and <= 4294967295"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_out_of_range_flags_fail_before_weights_load(case, small_t5_dir, rte_data, tmp_path, capsys, monkeypatch):
    flags, expected = BAD_FLAGS[case]
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, rte_data, tmp_path / "out", "--max_steps", "2", *flags)) == 2
    assert expected in one_error_line(capsys)


@pytest.fixture(scope="module")
def saved_adapter(small_t5_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("adapter")
    config = PromptTuningConfig(num_virtual_tokens=4, max_length=support.L, r=2)
    get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(small_t5_dir), config).save_pretrained(folder)
    return folder


def evaluate_argv(model_dir: Path, data_dir: Path, out: Path, adapter: Path) -> list[str]:
    return train_argv(model_dir, data_dir, out, "--do_train", "False", "--do_eval", "--peft_model_id", str(adapter))


def broken_copy(adapter: Path, folder: Path, *, tensors=None, raw: bytes | None = None, config=None) -> Path:
    folder.mkdir()
    saved = json.loads((adapter / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**saved, **(config or {})}))
    if raw is not None:
        (folder / "adapter_model.safetensors").write_bytes(raw)
    else:
        state = load_file(adapter / "adapter_model.safetensors")
        save_file(tensors(state) if tensors else state, str(folder / "adapter_model.safetensors"))
    return folder


def truncated(adapter: Path) -> bytes:
    data = (adapter / "adapter_model.safetensors").read_bytes()
    return data[: len(data) - 40]


BROKEN_ADAPTERS = {
    # finding 8: unreadable files and configs of the wrong types
    "truncated file": ({"raw": "truncated"}, ["adapter_model.safetensors", "not a readable safetensors"]),
    "zero-byte file": ({"raw": b""}, ["adapter_model.safetensors", "not a readable safetensors"]),
    "garbage file": ({"raw": b"\x00garbage" * 10}, ["adapter_model.safetensors", "not a readable"]),
    "string int": ({"config": {"num_virtual_tokens": "8"}}, ["num_virtual_tokens", "'8'", "adapter_config.json"]),
    "null int": ({"config": {"r": None}}, ["'r'", "None"]),
    "list bool": ({"config": {"scpp": [True]}}, ["'scpp'", "[True]"]),
    "string bool": ({"config": {"scap": "false"}}, ["'scap'", "'false'"]),
    # finding 9: tensors missing or not finite
    "zero tensors": ({"tensors": lambda state: {}}, ["lacks the adapter tensors", "no tensors"]),
    "no prompt": (
        {"tensors": lambda state: {k: v for k, v in state.items() if k != "prompt_embeddings"}},
        ["lacks the adapter tensors ['prompt_embeddings']"],
    ),
    "NaN values": (
        {"tensors": lambda state: {**state, "prompt_embeddings": torch.full_like(state["prompt_embeddings"], torch.nan)}},
        ["prompt_embeddings holds NaN"],
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", BROKEN_ADAPTERS)
def test_a_broken_adapter_is_refused_before_weights_load(
    case, saved_adapter, small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    spec, expected = BROKEN_ADAPTERS[case]
    if spec.get("raw") == "truncated":
        spec = {"raw": truncated(saved_adapter)}
    folder = broken_copy(saved_adapter, tmp_path / "broken", **spec)
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    assert main(evaluate_argv(small_t5_dir, rte_data, tmp_path / "out", folder)) == 2
    line = one_error_line(capsys)
    assert "--peft_model_id" in line and all(text in line for text in expected), line


def test_an_intact_adapter_passes_the_checks(saved_adapter, small_t5_dir, rte_data, tmp_path, monkeypatch):
    """Control for the refusals above: the same adapter, unbroken, reaches the weights."""
    folder = broken_copy(saved_adapter, tmp_path / "intact")
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    with pytest.raises(WeightsLoaded):
        main(evaluate_argv(small_t5_dir, rte_data, tmp_path / "out", folder))
