"""scripts/predict.py end to end: two task adapters on a tiny T5, mixed batches, bad lines skipped."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

from data.loading import build_source
from data.preprocess import max_target_length
from data.tasks import get_task
from peft import PeftModel, PromptTuningConfig, get_peft_model
from scripts import predict

ADAPTERS = {
    "rte": dict(num_virtual_tokens=4, max_length=24, r=3),
    "sst2": dict(num_virtual_tokens=6, max_length=16, scpp=True, sub_dim_scpp=8, codebook_size_scpp=2),
}
REQUESTS = [
    {"id": "r1", "task": "rte", "sentence1": "A man is here.", "sentence2": "Someone is here.", "label": 0},
    {"id": "s1", "task": "sst2", "sentence": "a great film", "label": 1},
    '{"id": "broken", "task": ',
    {"id": "x1", "task": "cola", "sentence": "no adapter for this task"},
    {"id": "r2", "task": "rte", "sentence1": "Cats sleep a lot during the day, every day."},
    {"id": "s2", "task": "sst2", "sentence": "dull and far too long for what it says"},
    {"id": "r3", "task": "rte", "sentence1": "It rains.", "sentence2": "The street is wet.", "label": 1},
]


def test_invalid_labels_are_skipped_not_scored(tmp_path):
    """A label 7 for rte was scored as target "7" and 1.5 as "1" (int() truncation), silently."""
    rows = [
        {"id": "ok", "task": "rte", "sentence1": "a", "sentence2": "b", "label": 1},
        {"id": "none", "task": "rte", "sentence1": "a", "sentence2": "b", "label": None},
        {"id": "range", "task": "rte", "sentence1": "a", "sentence2": "b", "label": 7},
        {"id": "float", "task": "rte", "sentence1": "a", "sentence2": "b", "label": 1.5},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    requests, bad = predict.read_requests(path, {"rte": tmp_path})
    assert [r.id for r in requests] == ["ok", "none"]
    assert [number for number, _ in bad] == [3, 4]
    assert "label 7 is out of range" in bad[0][1] and "label 1.5 must be a whole class index" in bad[1][1]


@pytest.fixture()
def adapter_dirs(tiny_t5_dir, tmp_path):
    dirs = {}
    for seed, (task, fields) in enumerate(ADAPTERS.items()):
        torch.manual_seed(seed)
        model = get_peft_model(
            AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), PromptTuningConfig(**fields)
        )
        with torch.no_grad():
            for p in model.named_adapter_tensors().values():
                p.normal_(0, 0.5)
        model.save_pretrained(tmp_path / task)
        dirs[task] = tmp_path / task
    return dirs


def _alone(tiny_t5_dir, folder, tokenizer, row):
    """The prediction of one request with only its task's adapter (the reference)."""
    task = get_task(row["task"])
    model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), folder).eval()
    enc = tokenizer(
        build_source(task, row),
        max_length=model.adapter_config.max_length,
        truncation=True,
        return_tensors="pt",
    )
    k = max_target_length(task.name, tokenizer)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=k, do_sample=False)
    return tokenizer.decode(out[0, 1 : 1 + k], skip_special_tokens=True).strip()


def test_predict_two_adapters_with_bad_lines(
    tiny_t5_dir, adapter_dirs, tmp_path, capsys, caplog, t5_tokenizer, monkeypatch
):
    requests = tmp_path / "requests.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in REQUESTS]
    requests.write_text("\n".join(lines) + "\n")
    output = tmp_path / "predictions.jsonl"
    argv = [
        "--model_name_or_path", str(tiny_t5_dir),
        "--adapter", f"rte={adapter_dirs['rte']}",
        "--adapter", f"sst2={adapter_dirs['sst2']}",
        "--input", str(requests), "--output", str(output), "--batch_size", "3",
    ]  # fmt: skip
    formed = []  # the batches of the serving layer's batch former (prompt-plus-input lengths, <= 3 rows)
    form_batches = predict.form_batches
    monkeypatch.setattr(predict, "form_batches", lambda *a, **k: formed.append((a, form_batches(*a, **k)))
                        or formed[-1][1])  # fmt: skip
    result = predict.main(argv)
    assert result["skipped"] == [3, 4, 5]
    (lengths,), batches = formed[0]
    assert sorted(i for b in batches for i in b) == list(range(4)) and max(map(len, batches)) <= 3
    assert batches == form_batches(lengths, max_batch_size=3)
    messages = caplog.text
    assert ":3: invalid JSON" in messages
    assert ":4: unknown task 'cola' (adapters given: rte, sst2)" in messages
    assert ":5: missing field(s) ['sentence2'] for rte" in messages
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    valid = [r for r in REQUESTS if isinstance(r, dict) and r["id"] in {"r1", "s1", "s2", "r3"}]
    assert [r["id"] for r in rows] == [r["id"] for r in valid]
    for row, request in zip(rows, valid, strict=True):
        assert row["task"] == request["task"]
        assert row["prediction"] == _alone(tiny_t5_dir, adapter_dirs[request["task"]], t5_tokenizer, request)
        if "label" in request:
            assert row["target"] == str(request["label"])
            assert row["correct"] == (row["prediction"] == row["target"])
        else:
            assert "target" not in row and "correct" not in row
    summary = capsys.readouterr().out
    assert "rte" in summary and "sst2" in summary and "skipped lines: 3" in summary
    assert [line.split()[:3] for line in summary.splitlines()[1:3]] == [["rte", "2", "2"], ["sst2", "2", "1"]]


def test_an_unreadable_adapter_file_fails_with_one_line(tiny_t5_dir, adapter_dirs, tmp_path, capsys):
    """A truncated adapter_model.safetensors raised a ValueError traceback after the backbone loaded."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((adapter_dirs["rte"] / "adapter_config.json").read_bytes())
    (broken / "adapter_model.safetensors").write_bytes(b"xx")
    requests = tmp_path / "r.jsonl"
    requests.write_text(json.dumps(REQUESTS[0]) + "\n")
    argv = ["--model_name_or_path", str(tiny_t5_dir), "--adapter", f"rte={broken}", "--input", str(requests),
            "--output", str(tmp_path / "o")]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        predict.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adapter_model.safetensors is not a readable safetensors file" in err[0], err


def test_unreadable_input_or_model_fails_with_one_line(adapter_dirs, tmp_path, capsys):
    """Non-UTF-8 requests raised UnicodeDecodeError; a missing model folder raised the hub's OSError."""
    requests = tmp_path / "r.jsonl"
    argv = ["--adapter", f"rte={adapter_dirs['rte']}", "--input", str(requests), "--output", str(tmp_path / "o")]
    for model, text, message in [
        (tmp_path, b"\xff\xfe\n", "is not UTF-8 text"),
        (tmp_path / "nope", json.dumps(REQUESTS[0]).encode() + b"\n", "nope"),
    ]:
        requests.write_bytes(text)
        with pytest.raises(SystemExit) as exc:
            predict.main(["--model_name_or_path", str(model), *argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("predict.py: error:") and message in err[0], err


@pytest.mark.parametrize(
    "adapter, message",
    [
        ("rte", "write TASK=DIR"),
        ("nosuch=.", "unknown task 'nosuch'"),
        ("rte=/nonexistent", "no adapter_config.json"),
    ],
)
def test_bad_arguments_fail_before_loading(tmp_path, capsys, adapter, message):
    requests = tmp_path / "r.jsonl"
    requests.write_text("{}\n")
    argv = [
        "--model_name_or_path",
        "m",
        "--adapter",
        adapter,
        "--input",
        str(requests),
        "--output",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit) as exc:
        predict.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def predict_error(argv: list[str], capsys) -> str:
    """The one error line of a refused predict.py call (exit status 2)."""
    with pytest.raises(SystemExit) as exc:
        predict.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("predict.py: error:") and "Traceback" not in err[0], err
    return err[0]


def broken_adapter(source, target, change):
    """A copy of an adapter folder whose tensors ``change`` edits (a dict of tensors, in place)."""
    from safetensors.torch import load_file, save_file

    target.mkdir()
    (target / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    state = load_file(source / "adapter_model.safetensors")
    change(state)
    save_file(state, target / "adapter_model.safetensors")
    return target


def no_backbone(*args, **kwargs):
    raise AssertionError("the backbone was loaded before the check")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state["prompt_embeddings"].fill_(float("nan")), "NaN or infinite"),
        (lambda state: state.pop("prompt_embeddings"), "lacks the adapter tensors ['prompt_embeddings']"),
    ],
)
def test_an_adapter_train_py_refuses_is_refused_before_the_backbone_loads(
    change, message, tiny_t5_dir, adapter_dirs, tmp_path, capsys, monkeypatch
):
    """A NaN adapter or one without its prompt was served (a random prompt, a warning only)."""
    broken = broken_adapter(adapter_dirs["rte"], tmp_path / "broken", change)
    requests = tmp_path / "r.jsonl"
    requests.write_text(json.dumps(REQUESTS[0]) + "\n")
    monkeypatch.setattr(predict, "load_backbone", no_backbone)
    argv = ["--model_name_or_path", str(tiny_t5_dir), "--adapter", f"rte={broken}", "--input", str(requests),
            "--output", str(tmp_path / "o")]  # fmt: skip
    assert message in predict_error(argv, capsys)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "{dir}"], "--output {dir}: is an existing folder; name a file"),
        (["--device", "cuda:7"], "--device cuda:7: no such CUDA device on this machine"),
        (["--max_seq_length", "0"], "--max_seq_length 0: must be >= 1"),
        (["--batch_size", "-1"], "--batch_size -1: must be >= 1"),
        (["--input", "{dir}/missing.jsonl"], "--input {dir}/missing.jsonl: is not an existing file"),
    ],
)
def test_bad_flags_are_refused_by_the_schema_train_py_uses(extra, message, adapter_dirs, tmp_path, capsys):
    requests = tmp_path / "r.jsonl"
    requests.write_text(json.dumps(REQUESTS[0]) + "\n")
    argv = ["--model_name_or_path", "m", "--adapter", f"rte={adapter_dirs['rte']}", "--input", str(requests),
            "--output", str(tmp_path / "out.jsonl")]  # fmt: skip
    argv += [value.replace("{dir}", str(tmp_path)) for value in extra]
    assert message.replace("{dir}", str(tmp_path)) in predict_error(argv, capsys)


def test_an_input_without_a_valid_request_exits_2(adapter_dirs, tmp_path, capsys):
    requests = tmp_path / "r.jsonl"
    requests.write_text('{"id": 1}\n')
    argv = ["--model_name_or_path", "m", "--adapter", f"rte={adapter_dirs['rte']}", "--input", str(requests),
            "--output", str(tmp_path / "out.jsonl")]  # fmt: skip
    assert "no valid request lines (1 skipped)" in predict_error(argv, capsys)


def test_every_numeric_and_path_flag_of_predict_py_has_a_rule():
    from training.planner.schema import RULES

    actions = [a for a in predict.build_parser()._actions if a.dest not in ("help", "adapter", "device")]
    assert sorted(a.dest for a in actions if a.dest not in RULES) == []
