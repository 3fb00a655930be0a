"""One output directory, one run: finished runs are not redone, --overwrite_output_dir really starts over,
interrupted saves and stray weight files do not block or hijack a resume, changed flags are refused or
applied for real, train_loss covers the whole run, and a second concurrent run is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_reliability_support import (
    Killed,
    no_weights,
    read_json,
    run_killed_after_checkpoint,
    train_argv,
)

import train
from train import main
from training.run_dir import LOCK_NAME, checkpoint_problem

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (the lock file aside) and its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }



def test_rerun_of_a_finished_run_leaves_every_file_byte_identical(small_t5_dir, rte_data, tmp_path, capsys):
    """Finding 1: the same command again used to resume, train 0 steps and write train_loss 0.0."""
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "2", "--do_predict")
    assert main(argv) == 0
    before = snapshot(out)
    assert read_json(out / "train_results.json")["train_loss"] > 0
    capsys.readouterr()
    assert main(argv) == 0
    assert "holds a finished run" in capsys.readouterr().out
    assert snapshot(out) == before


def test_a_kill_during_the_final_evaluation_keeps_the_train_metrics(
    small_t5_dir, rte_data, tmp_path, monkeypatch
):
    """Finding 1, second half: killed while evaluating, the rerun evaluates the trained adapter only."""
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "2", "--do_predict")

    def killed_predict(self, *args, **kwargs):
        raise Killed("killed during the final evaluation")

    with monkeypatch.context() as patch:
        patch.setattr(train.PromptTrainer, "predict_split", killed_predict)
        with pytest.raises(Killed):
            main(argv)
    assert not (out / "all_results.json").exists()
    train_results = (out / "train_results.json").read_bytes()
    adapter = (out / "adapter_model.safetensors").read_bytes()
    assert main(argv) == 0
    assert (out / "train_results.json").read_bytes() == train_results
    assert (out / "adapter_model.safetensors").read_bytes() == adapter
    results = read_json(out / "all_results.json")
    assert results["train_loss"] == json.loads(train_results)["train_loss"] > 0
    assert "test_accuracy" in results
    assert read_json(out / "trainer_state.json")["global_step"] == 2


def test_overwrite_output_dir_moves_the_previous_run_aside(small_t5_dir, rte_data, tmp_path):
    """Finding 2: run B with --overwrite_output_dir used to keep A's checkpoints and test_* keys."""
    out = tmp_path / "run"
    run_a = train_argv(small_t5_dir, rte_data, out, "--max_steps", "4", "--save_steps", "2", "--do_predict")
    assert main(run_a) == 0
    run_b = train_argv(
        small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "2", "--learning_rate", "0.01"
    )
    assert main([*run_b, "--overwrite_output_dir"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not any(key.startswith("test_") for key in read_json(out / "all_results.json"))
    assert read_json(out / "run_config.json")["learning_rate"] == 0.01
    previous = tmp_path / ".run.previous"
    assert (previous / "checkpoint-4").is_dir() and (previous / "test_results.json").is_file()
    adapter_b = (out / "adapter_model.safetensors").read_bytes()
    assert adapter_b == (out / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
    assert main(run_b) == 0  # B's command again: B is finished, A's checkpoint-4 is out of reach
    assert (out / "adapter_model.safetensors").read_bytes() == adapter_b


def test_overwrite_refuses_to_move_the_runs_own_inputs_aside(small_t5_dir, rte_data, tmp_path):
    """A model (or data) kept inside --output_dir was moved into .<name>.previous before it loaded (then
    a traceback), and the next overwrite would have deleted it."""
    out = tmp_path / "runs"
    model = out / "model"
    shutil.copytree(small_t5_dir, model)
    assert main([*train_argv(model, rte_data, out, "--max_steps", "2"), "--overwrite_output_dir"]) == 2
    assert (model / "config.json").is_file() and not (tmp_path / ".runs.previous").exists()


@pytest.mark.parametrize("name", ["a_file", "a_file/sub"])
def test_an_output_dir_that_cannot_be_a_folder_fails_with_one_line(name, small_t5_dir, rte_data, tmp_path, capsys):
    """A file of that name (or below one) raised FileExistsError/NotADirectoryError after the data loaded."""
    (tmp_path / "a_file").write_text("not a folder")
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, rte_data, tmp_path / name, "--max_steps", "2")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"--output_dir {tmp_path / name}" in err and "cannot be used as a folder" in err


KILL_IN_SAVE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train
save_model = train.PromptTrainer.save_model
def killed_save(self, output_dir=None, _internal_call=False):
    save_model(self, output_dir, _internal_call)
    if str(output_dir).endswith("checkpoint-4"):
        os.kill(os.getpid(), signal.SIGKILL)  # the weights are written, optimizer and state are not
train.PromptTrainer.save_model = killed_save
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_kill_inside_a_checkpoint_save_falls_back_to_the_last_complete_one(
    small_t5_dir, rte_data, tmp_path, caplog
):
    """Finding 3: the incomplete checkpoint-4 used to be chosen and every rerun failed."""
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "6", "--save_steps", "2")
    script = KILL_IN_SAVE.format(repo=str(REPO_ROOT))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env)
    assert done.returncode == -9, done.stderr[-2000:]
    assert checkpoint_problem(out / "checkpoint-4") == "trainer_state.json is missing"
    assert checkpoint_problem(out / "checkpoint-2") is None
    assert main(argv) == 0
    assert "skipping the incomplete checkpoint" in caplog.text and "checkpoint-4" in caplog.text
    assert read_json(out / "run_config.json")["resumed_from"].endswith("checkpoint-2")
    assert read_json(out / "trainer_state.json")["global_step"] == 6


def test_a_truncated_checkpoint_file_is_incomplete(small_t5_dir, rte_data, tmp_path):
    out = tmp_path / "run"
    assert main(train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "1")) == 0
    for name, problem in (
        ("optimizer.pt", "optimizer.pt is truncated"),
        ("adapter_model.safetensors", "adapter_model.safetensors is not a complete safetensors file"),
        ("trainer_state.json", "trainer_state.json is not complete JSON"),
    ):
        path = out / "checkpoint-2" / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        assert checkpoint_problem(out / "checkpoint-2").startswith(problem)
        path.write_bytes(data)
        assert checkpoint_problem(out / "checkpoint-2") is None


def test_resume_with_another_learning_rate_fails_or_applies_it(small_t5_dir, rte_data, tmp_path, capsys, monkeypatch):
    """Finding 4: --learning_rate on resume was logged but the restored schedule kept the old one."""
    out = tmp_path / "run"
    flags = ("--max_steps", "4", "--save_steps", "2")
    run_killed_after_checkpoint(monkeypatch, 2, train_argv(small_t5_dir, rte_data, out, *flags))
    changed = train_argv(small_t5_dir, rte_data, out, *flags, "--learning_rate", "0.001", "--seed", "7")
    capsys.readouterr()
    assert main(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--learning_rate: 0.3 recorded, 0.001 now" in err[0], err
    assert "--seed: 42 recorded, 7 now" in err[0]
    assert "--allow_changed_resume_flags" in err[0]

    assert main([*changed, "--allow_changed_resume_flags", "True"]) == 0
    config = read_json(out / "run_config.json")
    assert config["learning_rate"] == 0.001
    assert config["resume_changed_flags"]["learning_rate"] == {"checkpoint": 0.3, "now": 0.001}
    # the rate each step used; warm-up 2 of 4 steps: factors 0, 0.5, 1, 0.5
    logged = {e["step"]: e["learning_rate"] for e in read_json(out / "trainer_state.json")["log_history"]
              if "learning_rate" in e}  # fmt: skip
    assert logged[2] == pytest.approx(0.15)  # before the resume
    assert logged[3] == pytest.approx(0.001) and logged[4] == pytest.approx(0.0005)
    groups = torch.load(out / "checkpoint-4" / "optimizer.pt", weights_only=True)["param_groups"]
    assert [g["initial_lr"] for g in groups] == [0.001, 0.01]  # --added_embedding_lr unchanged


def test_train_loss_after_a_resume_is_the_whole_run_mean(small_t5_dir, rte_data, tmp_path, monkeypatch):
    flags = ("--max_steps", "4", "--save_steps", "2")
    straight = tmp_path / "straight"
    assert main(train_argv(small_t5_dir, rte_data, straight, *flags)) == 0
    resumed = tmp_path / "resumed"
    run_killed_after_checkpoint(monkeypatch, 2, train_argv(small_t5_dir, rte_data, resumed, *flags))
    assert main(train_argv(small_t5_dir, rte_data, resumed, *flags)) == 0
    expected = read_json(straight / "train_results.json")["train_loss"]
    losses = [e["loss"] for e in read_json(straight / "trainer_state.json")["log_history"] if "loss" in e]
    assert expected == pytest.approx(sum(losses) / 4, rel=1e-6)
    assert read_json(resumed / "train_results.json")["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_a_stray_weights_file_in_a_checkpoint_is_refused(small_t5_dir, rte_data, tmp_path, capsys, monkeypatch):
    """Finding 5: a model.safetensors in a checkpoint was loaded non-strictly over the frozen backbone."""
    out = tmp_path / "run"
    flags = ("--max_steps", "4", "--save_steps", "2")
    run_killed_after_checkpoint(monkeypatch, 2, train_argv(small_t5_dir, rte_data, out, *flags))
    planted = {"shared.weight": torch.zeros(3, 16)}
    save_file(planted, str(out / "checkpoint-2" / "model.safetensors"))
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    capsys.readouterr()
    assert main(train_argv(small_t5_dir, rte_data, out, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0] and "checkpoint-2" in err[0], err


def test_resume_loads_only_the_adapter_file(small_t5_dir, rte_data, tmp_path, monkeypatch):
    """The trainer's own resume path reads adapter_model.safetensors, never a full model file."""
    out = tmp_path / "run"
    flags = ("--max_steps", "4", "--save_steps", "2")
    run_killed_after_checkpoint(monkeypatch, 2, train_argv(small_t5_dir, rte_data, out, *flags))
    loaded = []

    class Recording(train.PromptTrainer):
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            loaded.append(load_file(Path(resume_from_checkpoint) / "adapter_model.safetensors"))
            for key, value in self.model.named_adapter_tensors().items():
                assert torch.equal(value.detach(), loaded[-1][key]), key

    monkeypatch.setattr(train, "PromptTrainer", Recording)
    assert main(train_argv(small_t5_dir, rte_data, out, *flags)) == 0
    assert len(loaded) == 1


HOLD_THE_LOCK = """
import os, sys, time
sys.path.insert(0, {repo!r})
import train
train_loop = train.PromptTrainer.train
def waiting_train(self, *args, **kwargs):
    deadline = time.time() + 120
    while not os.path.exists({release!r}) and time.time() < deadline:
        time.sleep(0.1)
    return train_loop(self, *args, **kwargs)
train.PromptTrainer.train = waiting_train
sys.exit(train.main(sys.argv[1:]))
"""


def test_a_second_concurrent_run_into_the_same_directory_fails_at_once(small_t5_dir, rte_data, tmp_path, capsys):
    """Finding 7: two runs into one --output_dir both exited 0 and interleaved output.log."""
    out = tmp_path / "run"
    release = tmp_path / "release"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "2")
    script = HOLD_THE_LOCK.format(repo=str(REPO_ROOT), release=str(release))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.Popen([sys.executable, "-c", script, *argv], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (out / "run_config.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.stdout.read()[-2000:]
        capsys.readouterr()
        assert main(argv) == 75  # the second process: refused (EX_TEMPFAIL) while the first holds the directory
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another running train.py" in err[0], err
        log_before = (out / "output.log").read_text()
    finally:
        release.touch()
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output[-2000:]
    log = (out / "output.log").read_text()
    assert log.startswith(log_before) and "in use by another" not in log
    assert read_json(out / "trainer_state.json")["global_step"] == 2
