"""What a ``train.py`` run shows a user, and what it leaves in ``output.log``.

The default console is the run's plan, one progress bar, one metrics line per evaluation and one line
per error; Ctrl-C stops with one logged line and the same command resumes; warnings fire only for
flags the user set; a HEAD_ONLY run saves only its head.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_reliability_support as support
import torch
from conftest import REPO_ROOT, build_offline_t5_tokenizer
from test_reliability_support import read_json, train_argv

from peft import PromptTuningConfig
from train import main, parse_args
from training.budget_notice import budget_warning, flags_set

CONSOLE_LINE_BUDGET = 15  # plan (5), progress bar, 2 evaluations, train / validation / test, results


def console_lines(text: str) -> list[str]:
    """Printed lines as a terminal shows them: a progress bar redraws its line with carriage returns."""
    return [line for line in text.split("\n") if line.strip()]


def the_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_default_console_is_plan_progress_and_metrics(small_t5_dir, rte_data, tmp_path, capfd):
    out = tmp_path / "out"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "6", "--eval_strategy", "steps",
                      "--eval_steps", "3", "--save_steps", "3", "--do_eval", "--do_predict",
                      "--disable_tqdm", "False")  # fmt: skip
    assert main(argv) == 0
    captured = capfd.readouterr()
    lines = console_lines(captured.out + captured.err)
    assert len(lines) <= CONSOLE_LINE_BUDGET, lines
    stdout = captured.out.splitlines()
    assert stdout[0] == f"model   {small_t5_dir} (t5, seq2seq, d=16)"
    assert stdout[1] == "task    rte: 16 train / 4 validation / 4 test examples"
    assert stdout[2].startswith("method  DePT: 128 trainable parameters (")
    assert stdout[3] == (
        "steps   6 of batch 4, learning rate 0.3 (added side 0.01); evaluation every 3 steps, checkpoint every 3 steps"
    )
    assert stdout[4] == f"output  {out}"
    starts = [
        "step 3/6 validation: ",
        "step 6/6 validation: ",
        "trained 6 steps in ",
        "validation: ",
        "test: ",
    ]
    assert len(stdout) == 11 and all(
        line.startswith(start) for line, start in zip(stdout[5:10], starts, strict=True)
    ), stdout
    assert stdout[10] == f"results in {out} (all_results.json; the full log is output.log)"
    assert re.search(r"step 6/6 validation: loss \d+\.\d{4}, accuracy \d+\.\d\d", captured.out)
    assert "train: 100%" in captured.err and "6/6" in captured.err  # the one progress bar
    # redrawn at its start, around each metrics line and at its end: a redirected stderr is not a terminal
    assert captured.err.count("train:") <= 5, captured.err
    for chatter in ("training arguments", "'loss':", "Tokenizing", "Loading weights", "UserWarning"):
        assert chatter not in captured.out + captured.err, chatter
    log = (out / "output.log").read_text()
    assert "training arguments" in log
    for step in range(1, 7):  # every loss line once in output.log
        assert len(re.findall(rf"step {step}: {{'loss'", log)) == 1, step
    assert log.count("step 6/6 validation:") == 1


def test_log_level_info_brings_the_verbose_console_back(small_t5_dir, rte_data, tmp_path, capfd):
    argv = train_argv(small_t5_dir, rte_data, tmp_path / "out", "--max_steps", "2", "--log_level", "info")
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert " - INFO - train - training arguments {" in out
    assert re.search(r" - INFO - training.trainer - step 2: \{'loss'", out)


def slow_training_command(out: Path, *extra: str) -> list[str]:
    """train.py in a subprocess, each training step slowed to 0.2 s so that Ctrl-C lands mid-run."""
    code = (
        "import sys, time, train\n"
        "from training.trainer import PromptTrainer\n"
        "step = PromptTrainer.training_step\n"
        "def slow_step(self, *args, **kwargs):\n"
        "    time.sleep(0.2)\n"
        "    return step(self, *args, **kwargs)\n"
        "PromptTrainer.training_step = slow_step\n"
        "sys.exit(train.main(sys.argv[1:]))\n"
    )
    return [sys.executable, "-c", code, *extra]


def test_ctrl_c_stops_with_one_logged_line_and_the_same_command_resumes(small_t5_dir, rte_data, tmp_path):
    out = tmp_path / "out"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "40", "--save_steps", "2")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    process = subprocess.Popen(
        slow_training_command(out, *argv), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-2" / "checkpoint_manifest.json").exists():  # written last
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1, stderr
    checkpoint = re.search(r"the last checkpoint is (\S+);", lines[0]).group(1)
    assert Path(checkpoint).parent == out and Path(checkpoint).is_dir()
    assert lines[0].endswith("rerun the same command to resume from it.")
    assert lines[0] in (out / "output.log").read_text()

    assert main(argv) == 0  # the same command
    assert read_json(out / "run_config.json")["resumed_from"] == Path(checkpoint).name  # relative to out
    assert read_json(out / "trainer_state.json")["global_step"] == 40


def test_budget_warning_fires_once_and_only_for_flags_the_user_set(small_t5_dir, rte_data, tmp_path, capsys):
    flags = ("--scpp", "True", "--sub_dim_scpp", "4", "--codebook_size_scpp", "12")
    assert main(train_argv(small_t5_dir, rte_data, tmp_path / "out", "--max_steps", "1", *flags)) == 0
    err = capsys.readouterr().err
    assert err.count("exceeds the paper's budget") == 1, err
    assert (
        "warning: ACCEPT-SCPP adapter exceeds the paper's budget of PT with 100 tokens: prepended side 384 > 64"
        in err
    )

    model_args, _, _ = parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--task_name", "rte"])
    defaults = PromptTuningConfig(num_virtual_tokens=100, r=30, max_length=256)  # the flags' defaults
    assert set(defaults.budget_problems(384)) == {"added", "total"}  # the rule is broken, by defaults only:
    assert flags_set(model_args) == set()
    assert budget_warning(defaults, 384, flags_set(model_args)) is None
    model_args.r = 8  # a flag the user set enters the added side
    assert budget_warning(defaults, 384, flags_set(model_args)).startswith("DePT adapter exceeds")


def test_a_mistyped_model_folder_says_no_such_folder(rte_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", no_loading)
    missing = tmp_path / "models" / "t5-small"
    assert main(train_argv(missing, rte_data, tmp_path / "out", "--max_steps", "1")) == 2
    assert the_error_line(capsys.readouterr().err) == (
        f"error: --model_name_or_path {missing}: no such folder (and not a hub id such as t5-base)."
    )
    assert not (tmp_path / "out").exists()


def test_offline_without_data_dir_fails_at_once_with_the_recipe(small_t5_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("training.sources.constants.HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("socket.create_connection", refuse_connection)
    monkeypatch.setattr("data.loading.datasets.load_dataset", no_loading)
    argv = ["--model_name_or_path", str(small_t5_dir), "--task_name", "rte", "--output_dir", str(tmp_path / "o"),
            "--do_train", "--max_steps", "1"]  # fmt: skip
    assert main(argv) == 2
    line = the_error_line(capsys.readouterr().err)
    assert line.startswith(
        "error: --task_name rte without --data_dir: needs the hub, which cannot be reached ("
    )
    assert "HF_HUB_OFFLINE=1" in line and "--data_dir DIR" in line and "no network" in line


def test_sub_dim_that_does_not_divide_d_suggests_nearby_divisors(small_t5_dir, rte_data, tmp_path, capsys):
    argv = train_argv(small_t5_dir, rte_data, tmp_path / "out", "--scpp", "True", "--sub_dim_scpp", "7")
    assert main(argv) == 2
    line = the_error_line(capsys.readouterr().err)
    assert line.endswith(
        "--sub_dim_scpp 7 does not divide the model width d=16; divisors of 16 near 7: 1, 2, 4, 8, 16 (default 16)."
    )


def no_loading(*args, **kwargs):
    raise AssertionError("nothing may load before this check")


def refuse_connection(*args, **kwargs):
    raise OSError("no network")


def save_small_bert(path: Path) -> Path:
    """A BERT encoder without a classification head (as a sentence-embedding model is shipped)."""
    from transformers import BertConfig, BertModel

    tokenizer = build_offline_t5_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=4, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_head_only_saves_the_head_and_evaluates_from_it(rte_data, tmp_path, capfd):
    base = save_small_bert(tmp_path / "bert")
    out = tmp_path / "head"
    flags = ("--peft_type", "HEAD_ONLY", "--learning_rate", "0.1", "--max_steps", "4", "--save_steps", "2",
             "--eval_strategy", "steps", "--eval_steps", "2", "--load_best_model_at_end", "--do_eval")  # fmt: skip
    assert main(train_argv(base, rte_data, out, *flags)) == 0
    head = 16 * 2 + 2  # classifier weight and bias: everything HEAD_ONLY trains
    assert read_json(out / "all_results.json")["trainable_params"] == head
    for folder in (out, out / "checkpoint-4"):
        size = (folder / "model.safetensors").stat().st_size
        assert size < 4 * head + 512, size  # float32 tensors plus the safetensors header
    assert (base / "model.safetensors").stat().st_size > 20 * (4 * head + 512)
    log = (out / "output.log").read_text()
    assert "There were missing keys" not in log  # the best checkpoint's reload knows the backbone is frozen
    assert "LOAD REPORT" in log and "LOAD REPORT" not in "".join(capfd.readouterr())  # the new head: log only

    evaluated = tmp_path / "eval"
    argv = ["--model_name_or_path", str(base), "--peft_type", "HEAD_ONLY", "--peft_model_id", str(out),
            "--task_name", "rte", "--data_dir", str(rte_data), "--max_seq_length", str(support.L),
            "--output_dir", str(evaluated), "--do_eval", "--report_to", "none"]  # fmt: skip
    assert main(argv) == 0
    reloaded, trained = (read_json(folder / "eval_results.json")["eval_loss"] for folder in (evaluated, out))
    assert reloaded == pytest.approx(trained, rel=1e-6)
    saved = json.loads((out / "config.json").read_text())
    assert saved["saved_trained_tensors_only"] is True


def test_a_head_only_folder_is_not_taken_for_a_model(rte_data, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "head"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "saved_trained_tensors_only": True})
    )
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", no_loading)
    argv = train_argv(folder, rte_data, tmp_path / "out", "--peft_type", "HEAD_ONLY", "--do_eval")
    assert main(argv) == 2
    line = the_error_line(capsys.readouterr().err)
    assert f"--peft_model_id {folder}" in line and "pass the base model as --model_name_or_path" in line


def test_evaluating_an_untrained_adapter_says_so(small_t5_dir, rte_data, tmp_path, capsys):
    """--do_eval without training or a saved adapter scores a random init: one warning line says so."""
    argv = train_argv(small_t5_dir, rte_data, tmp_path / "out", "--do_train", "False", "--do_eval")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("neither trained nor loaded") == 1, err
    assert "warning: evaluating a DePT adapter that is neither trained nor loaded" in err
