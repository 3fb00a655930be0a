"""Failures no flag check can foresee end in one console line (what failed, which file, the fix) with the
traceback in output.log; damaged inputs are refused before the backbone loads."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from safetensors.torch import load_file, save_file
from test_reliability_support import no_weights, run_killed_after_checkpoint, train_argv

from train import main
from training.failures import describe_failure


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "run/optimizer.pt"), "no space left on the device while "
         "writing run/optimizer.pt: free some space, then rerun the same command"),
        (Exception("File too large (os error 27)"), "file-size limit (ulimit -f): raise the limit"),
        (OSError(errno.EROFS, "Read-only file system", "run/x"), "cannot write while writing run/x (EROFS)"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory"), "out of memory: lower"),
        (KeyError("x"), "KeyError: 'x'"),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 8512 vs 8406"),
         "a file write was cut short (is the disk full?)"),
    ],
)  # fmt: skip
def test_each_kind_of_failure_is_described_with_its_fix(exc, expected):
    assert expected in describe_failure(exc)


def test_a_truncated_backbone_is_refused_before_it_loads(small_t5_dir, rte_data, tmp_path, capsys, monkeypatch):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(small_t5_dir, model)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    assert main(train_argv(model, rte_data, tmp_path / "out", "--max_steps", "2")) == 2
    line = one_error(capsys)
    assert f"--model_name_or_path {model}: model.safetensors is not a complete safetensors file" in line


def test_an_adapter_file_with_an_extra_tensor_is_refused_before_the_backbone_loads(
    small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    from transformers import AutoModelForSeq2SeqLM

    from peft import PromptTuningConfig, get_peft_model

    adapter = tmp_path / "adapter"
    config = PromptTuningConfig(num_virtual_tokens=4, max_length=16, r=2)
    get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(small_t5_dir), config).save_pretrained(adapter)
    state = load_file(adapter / "adapter_model.safetensors")
    save_file({**state, "smuggled.weight": torch.zeros(2)}, adapter / "adapter_model.safetensors")
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    argv = train_argv(small_t5_dir, rte_data, tmp_path / "out", "--do_train", "False", "--do_eval",
                      "--peft_model_id", str(adapter))  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    assert "smuggled.weight" in one_error(capsys)


class Payload:
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.slow
def test_a_checkpoint_pickle_that_carries_code_is_refused_before_the_backbone_loads(
    small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    argv = train_argv(small_t5_dir, rte_data, tmp_path / "run", "--max_steps", "4", "--save_steps", "2")
    run_killed_after_checkpoint(monkeypatch, 2, argv)
    checkpoint = tmp_path / "run" / "checkpoint-2"
    torch.save({"state": Payload()}, checkpoint / "optimizer.pt")
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    explicit = [*argv, "--resume_from_checkpoint", str(checkpoint)]
    assert main(explicit) == 2
    line = one_error(capsys)
    assert "optimizer.pt" in line and "this ran" not in line


def test_a_failure_during_the_run_is_one_line_with_the_traceback_in_output_log(
    small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    def full_disk(output_dir, split, metrics):
        raise OSError(errno.ENOSPC, "No space left on device", str(output_dir / f"{split}_results.json"))

    monkeypatch.setattr("train.save_split_metrics", full_disk)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, rte_data, out, "--max_steps", "2")) == 1
    line = one_error(capsys)
    assert f"no space left on the device while writing {out / 'train_results.json'}" in line
    assert f"the traceback is in {out / 'output.log'}" in line
    log = (out / "output.log").read_text()
    assert "Traceback (most recent call last)" in log and "full_disk" in log


def test_an_unforeseen_failure_before_the_run_names_its_traceback_file(
    small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    def broken(*args, **kwargs):
        raise KeyError("unforeseen")

    monkeypatch.setattr("train.plan_run", broken)
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, rte_data, tmp_path / "out", "--max_steps", "2")) == 1
    line = one_error(capsys)
    assert line.startswith("error: KeyError: 'unforeseen'; the traceback is in ")
    log = line.rsplit(" ", 1)[1]
    assert "Traceback" in open(log).read()
    os.unlink(log)


@pytest.mark.slow
def test_a_file_size_limit_mid_run_is_one_line_and_the_rerun_finishes(small_t5_dir, rte_data, tmp_path):
    """EFBIG (a Rust library reports it as "File too large (os error 27)"): one line, exit 1; the same
    command without the limit finishes."""
    out = tmp_path / "run"
    argv = [sys.executable, "train.py", *train_argv(small_t5_dir, rte_data, out, "--max_steps", "4",
                                                    "--save_steps", "2")]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))  # the first checkpoint's RNG state

    limited = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             preexec_fn=limit_file_size, timeout=300)  # fmt: skip
    errors = [line for line in limited.stderr.splitlines() if line.startswith("error: ")]
    assert limited.returncode == 1 and len(errors) == 1 and "Traceback" not in limited.stderr, limited.stderr
    assert "file-size limit" in errors[0]
    again = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "all_results.json").is_file()
