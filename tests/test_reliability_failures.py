"""Failure behaviour: config errors fail before weights load, a NaN loss stops the run and keeps the last
good checkpoint, a crash mid-write keeps the previous result file, and a seeded CPU run is repeatable.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_reliability_support import no_weights, read_json, train_argv

import train
from train import main

REPO_ROOT = Path(__file__).resolve().parents[1]



# Config errors not covered by test_train_args.py (flags from the other issues): flags, text in the error.
CONFIG_ERRORS = {
    "dtype float16 on T5": (["--dtype", "float16"], "--dtype float16"),
    "optimizer": (["--optim", "adafactor"], "--optim"),
    "no steps": (["--max_steps", "0", "--num_train_epochs", "0"], "--max_steps"),
    "L = 0": (["--max_seq_length", "0"], "--max_seq_length"),
    "m = 0": (["--prefix_length", "0"], "--prefix_length"),
    "negative r": (["--r", "-1"], "--r"),
    "empty codebook": (["--scpp", "True", "--sub_dim_scpp", "4", "--codebook_size_scpp", "0"], "--codebook_size_scpp"),
    "warmup ratio": (["--warmup_steps", "0", "--warmup_ratio", "1.5"], "--warmup_ratio"),
    "text init with SCPP": (["--scpp", "True", "--sub_dim_scpp", "4", "--text_init", "True"], "--text_init"),
    "ckpt without pretrain_init": (["--pretrain_scpp_ckpt", "{tmp}"], "--pretrain_init"),
    "nothing to do": (["--do_train", "False"], "--do_train"),
    "pad multiple": (["--pad_to_multiple_of", "5"], "--pad_to_multiple_of"),
    "resume from nowhere": (["--resume_from_checkpoint", "{tmp}/nothing"], "--resume_from_checkpoint"),
}  # fmt: skip
LLAMA_ERRORS = {
    "positions": (["--max_seq_length", "126", "--prefix_length", "4"], "--max_seq_length 126 + --prefix_length 4"),
}  # fmt: skip


@pytest.mark.parametrize("case", [*CONFIG_ERRORS, *LLAMA_ERRORS])
def test_config_errors_fail_before_weights_load(
    case, small_t5_dir, small_llama_dir, rte_data, tmp_path, capsys, monkeypatch
):
    flags, text = CONFIG_ERRORS.get(case) or LLAMA_ERRORS[case]
    model = small_llama_dir if case in LLAMA_ERRORS else small_t5_dir
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(train_argv(model, rte_data, out, "--max_steps", "2", *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and text in err[0], err
    assert not out.exists()


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(small_t5_dir, rte_data, tmp_path, monkeypatch):
    """NaN logits from the 5th training forward on: the run stops at step 5, checkpoint-4 stays usable."""
    build_model = train.build_model
    forwards = {"n": 0}

    def poison(module, inputs, output):
        forwards["n"] += 1
        return output * float("nan") if forwards["n"] >= 5 else output

    def build_poisoned(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.get_base_model().lm_head.register_forward_hook(poison)
        return model

    monkeypatch.setattr(train, "build_model", build_poisoned)
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "6", "--save_strategy", "steps",
                      "--save_steps", "2", "--do_eval", "--do_predict")  # fmt: skip
    assert main(argv) == 1
    log = (out / "output.log").read_text()
    message = next(line for line in log.splitlines() if "non-finite training loss" in line)
    assert "at step 5;" in message
    last_finite = float(re.search(r"last finite loss: ([-+\d.e]+?)\. ", message).group(1))
    history = read_json(out / "checkpoint-4" / "trainer_state.json")["log_history"]
    assert math.isclose(last_finite, next(e["loss"] for e in history if e.get("step") == 4), rel_tol=1e-6)

    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    tensors = load_file(out / "checkpoint-4" / "adapter_model.safetensors")
    assert len(tensors) == 3 and all(torch.isfinite(t).all() for t in tensors.values())
    # nothing that looks like a finished run: no result files, no final adapter
    assert not list(out.glob("*_results.json")) and not list(out.glob("predictions_*"))
    assert not (out / "adapter_model.safetensors").exists()


def test_a_crash_in_the_middle_of_a_write_keeps_the_previous_file(tmp_path):
    """A process killed half-way through writing all_results.json (no cleanup runs) leaves the old file."""
    previous = {"eval_accuracy": 80.0, "train_loss": 0.5}
    (tmp_path / "all_results.json").write_text(json.dumps(previous))
    script = f"""
import os, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import training.outputs as outputs
real_fdopen = os.fdopen
class HalfWriter:
    def __init__(self, handle): self.handle = handle
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def write(self, text):
        self.handle.write(text[: len(text) // 2]); self.handle.flush()
        os._exit(9)  # killed mid-write: no finally, no except, no atexit
outputs.os.fdopen = lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k))
outputs.write_all_results({str(tmp_path)!r}, {{"test_accuracy": 70.0}})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    assert json.loads((tmp_path / "all_results.json").read_text()) == previous
    leftovers = [p for p in tmp_path.iterdir() if p.name != "all_results.json"]
    # the half-written temp file is hidden (.all_results.json.*.tmp) and never read as a result
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".all_results.json.")
    assert leftovers[0].name.endswith(".tmp")
    with pytest.raises(json.JSONDecodeError):
        json.loads(leftovers[0].read_text())
    assert not os.path.exists(tmp_path / "test_results.json")


RUNTIME_KEYS = ("_runtime", "_per_second")


def metrics_without_timing(path: Path) -> dict:
    return {k: v for k, v in read_json(path).items() if not k.endswith(RUNTIME_KEYS)}


@pytest.mark.slow
def test_same_seed_same_results_and_adapter_bytes(small_t5_dir, rte_data, tmp_path):
    """Two runs with seed 7 (dropout on, shuffled data) agree exactly; seed 8 differs (the check can fail)."""
    flags = ("--max_steps", "3", "--do_eval", "--do_predict", "--seed", "7")
    runs = {}
    for name in ("a", "b"):
        assert main(train_argv(small_t5_dir, rte_data, tmp_path / name, *flags)) == 0
        runs[name] = tmp_path / name
    a, b = runs["a"], runs["b"]
    metrics = metrics_without_timing(a / "all_results.json")
    assert {"train_loss", "eval_loss", "eval_accuracy", "test_loss", "test_accuracy"} <= set(metrics)
    assert metrics == metrics_without_timing(b / "all_results.json")
    assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()
    assert (a / "predictions_test.jsonl").read_text() == (b / "predictions_test.jsonl").read_text()

    other = tmp_path / "seed8"
    assert main(train_argv(small_t5_dir, rte_data, other, *flags[:-1], "8")) == 0
    assert (other / "adapter_model.safetensors").read_bytes() != (
        a / "adapter_model.safetensors"
    ).read_bytes()
