"""Exact resume: a run killed after a checkpoint and resumed equals the uninterrupted run, bit for bit.

The model has dropout and the data is shuffled over more than one epoch, so the resumed run only
matches when the adapter, optimizer, LR schedule, RNG state and data position are all restored.
Checkpoints hold the adapter tensors and the optimizer/scheduler/RNG state only, never the backbone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import test_reliability_support as support
import torch
from safetensors.torch import load_file
from test_reliability_support import (
    no_weights,
    read_json,
    run_killed_after_checkpoint,
    train_argv,
)
from transformers import TrainerCallback

import train
from train import main
from training.manifest import write_manifest

pytestmark = pytest.mark.slow

RESUME_FLAGS = ("--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3")
CHECKPOINT_FILES = {
    "adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
    "trainer_state.json", "training_args.bin", "tokenizer.json", "tokenizer_config.json", "resume_record.json",
    "checkpoint_manifest.json",
}  # fmt: skip


def losses(out: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e}


def assert_same_optimizer(a: Path, b: Path) -> None:
    opt_a = torch.load(a / "optimizer.pt", weights_only=True)
    opt_b = torch.load(b / "optimizer.pt", weights_only=True)
    assert opt_a["param_groups"] == opt_b["param_groups"]  # learning rates of both groups, betas, eps
    assert opt_a["state"].keys() == opt_b["state"].keys() and len(opt_a["state"]) == 3  # prompt, A, B
    for key, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, opt_b["state"][key][name]), (key, name)
    sched_a = torch.load(a / "scheduler.pt", weights_only=True)
    sched_b = torch.load(b / "scheduler.pt", weights_only=True)
    assert sched_a["last_epoch"] == sched_b["last_epoch"] == 6
    assert sched_a["_last_lr"] == sched_b["_last_lr"]


def test_killed_and_resumed_run_equals_the_straight_run(small_t5_dir, rte_data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    assert main(train_argv(small_t5_dir, rte_data, straight, *RESUME_FLAGS)) == 0

    resumed = tmp_path / "resumed"
    argv = train_argv(small_t5_dir, rte_data, resumed, *RESUME_FLAGS)
    run_killed_after_checkpoint(monkeypatch, 3, argv)
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not list(resumed.glob("*_results.json"))  # a killed run leaves no result file

    # the same command again: picks up checkpoint-3 from --output_dir by itself
    torch.manual_seed(1234)  # a different process state; the checkpoint's RNG state must win
    assert main(argv) == 0
    assert read_json(resumed / "run_config.json")["resumed_from"].endswith("checkpoint-3")
    assert read_json(resumed / "trainer_state.json")["global_step"] == 6

    final_a = load_file(straight / "adapter_model.safetensors")
    final_b = load_file(resumed / "adapter_model.safetensors")
    assert final_a.keys() == final_b.keys() and len(final_a) == 3
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    assert_same_optimizer(straight / "checkpoint-6", resumed / "checkpoint-6")
    rng_a = torch.load(straight / "checkpoint-6" / "rng_state.pth", weights_only=False)
    rng_b = torch.load(resumed / "checkpoint-6" / "rng_state.pth", weights_only=False)
    assert torch.equal(rng_a["cpu"], rng_b["cpu"])
    assert losses(straight) == losses(resumed) and sorted(losses(resumed)) == [1, 2, 3, 4, 5, 6]

    # The comparison can fail: without the saved RNG state, dropout draws other masks after step 3.
    no_rng = tmp_path / "no_rng"
    shutil.copytree(resumed, no_rng)
    shutil.rmtree(no_rng / "checkpoint-6")
    for name in ("all_results.json", "train_results.json"):  # else the finished run is not redone
        (no_rng / name).unlink()
    (no_rng / "checkpoint-3" / "rng_state.pth").unlink()
    write_manifest(no_rng / "checkpoint-3")  # a checkpoint saved without RNG state, complete otherwise
    assert main(train_argv(small_t5_dir, rte_data, no_rng, *RESUME_FLAGS)) == 0
    assert losses(no_rng)[3] == losses(straight)[3]
    assert losses(no_rng)[4] != losses(straight)[4]


def test_checkpoints_hold_only_adapter_and_training_state(small_t5_dir, rte_data, tmp_path):
    out = tmp_path / "run"
    assert main(train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "2")) == 0
    ckpt = out / "checkpoint-2"
    assert {p.name for p in ckpt.iterdir()} == CHECKPOINT_FILES  # no model.safetensors / pytorch_model.bin
    sizes = {p.name: p.stat().st_size for p in ckpt.iterdir()}
    assert sum(sizes.values()) < 64_000, sizes  # KBs; the (small) backbone alone is ~50 KB
    backbone_bytes = sum(p.stat().st_size for p in small_t5_dir.glob("*.safetensors"))
    assert sizes["adapter_model.safetensors"] < backbone_bytes / 5
    tensors = load_file(ckpt / "adapter_model.safetensors")
    assert sum(t.numel() for t in tensors.values()) == read_json(out / "run_config.json")["trainable_params"]
    optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert sum(s["exp_avg"].numel() for s in optimizer["state"].values()) == sum(
        t.numel() for t in tensors.values()
    )  # optimizer state for the adapter tensors only


class RankEvaluations(TrainerCallback):
    """Makes the first evaluation the best one (accuracy falls with the step): deterministic ranking."""

    def __init__(self) -> None:
        self.listings: list[list[str]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics["eval_accuracy"] = 100.0 - 10 * state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        self.listings.append(sorted(p.name for p in Path(args.output_dir).glob("checkpoint-*")))


def test_save_total_limit_keeps_the_best_checkpoint(small_t5_dir, rte_data, tmp_path, monkeypatch):
    ranking = RankEvaluations()

    class RankedTrainer(train.PromptTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(ranking)

    monkeypatch.setattr(train, "PromptTrainer", RankedTrainer)
    out = tmp_path / "run"
    argv = train_argv(
        small_t5_dir, rte_data, out, "--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "1",
        "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1",
        "--load_best_model_at_end", "--max_eval_samples", "4",
    )  # fmt: skip
    assert main(argv) == 0
    state = read_json(out / "trainer_state.json")
    assert state["best_model_checkpoint"].endswith("checkpoint-1") and state["best_metric"] == 90.0
    # limit 1: while training the best and the newest survive each rotation; at the end HF keeps the best
    assert ranking.listings == [
        [],
        ["checkpoint-1"],
        ["checkpoint-1", "checkpoint-2"],
        ["checkpoint-1", "checkpoint-3"],
    ]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    best = load_file(out / "checkpoint-1" / "adapter_model.safetensors")
    final = load_file(out / "adapter_model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)


def test_a_run_killed_after_its_last_checkpoint_trains_no_further_step(
    small_t5_dir, rte_data, tmp_path, monkeypatch
):
    """The Trainer checks --max_steps only after a step: resumed from the final checkpoint inside an epoch
    (6 steps, 4 per epoch) it trained one step more (global_step 7 of 6) and ended with another adapter
    than the uninterrupted run."""
    flags = ("--max_steps", "6", "--save_steps", "3")
    straight = tmp_path / "straight"
    assert main(train_argv(small_t5_dir, rte_data, straight, *flags)) == 0
    resumed = tmp_path / "resumed"
    argv = train_argv(small_t5_dir, rte_data, resumed, *flags)
    run_killed_after_checkpoint(monkeypatch, 6, argv)
    assert main(argv) == 0
    assert read_json(resumed / "trainer_state.json")["global_step"] == 6
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    final_a = load_file(straight / "adapter_model.safetensors")
    final_b = load_file(resumed / "adapter_model.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    expected = read_json(straight / "train_results.json")["train_loss"]
    assert read_json(resumed / "train_results.json")["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_a_moved_run_ends_with_its_best_checkpoint(small_t5_dir, rte_data, tmp_path, monkeypatch):
    """--load_best_model_at_end, killed after its last checkpoint, the folder moved (mv run run2): the
    resume used to end with the last checkpoint's adapter, the best one being recorded by absolute path."""

    class RankedTrainer(train.PromptTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(RankEvaluations())

    monkeypatch.setattr(train, "PromptTrainer", RankedTrainer)
    flags = (
        "--max_steps", "3", "--eval_strategy", "steps", "--eval_steps", "1", "--save_strategy", "steps",
        "--save_steps", "1", "--load_best_model_at_end", "--max_eval_samples", "4",
    )  # fmt: skip
    run_killed_after_checkpoint(monkeypatch, 3, train_argv(small_t5_dir, rte_data, tmp_path / "run", *flags))
    assert read_json(tmp_path / "run" / "checkpoint-3" / "trainer_state.json")["best_model_checkpoint"] == (
        "checkpoint-1"
    )  # recorded relative to the run folder
    moved = tmp_path / "run2"
    (tmp_path / "run").rename(moved)
    assert main(train_argv(small_t5_dir, rte_data, moved, *flags)) == 0
    assert read_json(moved / "run_config.json")["resumed_from"] == "checkpoint-3"
    final = load_file(moved / "adapter_model.safetensors")
    best = load_file(moved / "checkpoint-1" / "adapter_model.safetensors")
    last = load_file(moved / "checkpoint-3" / "adapter_model.safetensors")
    assert all(torch.equal(best[k], final[k]) for k in best)
    assert not all(torch.equal(last[k], final[k]) for k in last)  # the check can fail
    assert read_json(moved / "trainer_state.json")["best_model_checkpoint"] == "checkpoint-1"


def test_explicit_checkpoint_path_resumes(small_t5_dir, rte_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "4", "--save_steps", "2")
    run_killed_after_checkpoint(monkeypatch, 2, argv)
    other = tmp_path / "elsewhere"  # a checkpoint passed around: resume it into a new output folder
    argv = train_argv(small_t5_dir, rte_data, other, "--max_steps", "4", "--save_steps", "2",
                      "--resume_from_checkpoint", str(out / "checkpoint-2"))  # fmt: skip
    assert main(argv) == 0
    state = read_json(other / "trainer_state.json")
    assert state["global_step"] == 4 and sorted(losses(other)) == [1, 2, 3, 4]
    assert read_json(other / "run_config.json")["resumed_from"] == str(out / "checkpoint-2")



def fake_checkpoint(model_dir: Path, folder: Path, r: int) -> Path:
    """A checkpoint folder holding a DePT adapter with rank ``r`` (no training needed for the checks)."""
    from transformers import AutoModelForSeq2SeqLM

    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(num_virtual_tokens=4, max_length=support.L, r=r)
    get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(model_dir), config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--resume_from_checkpoint", "True", "--overwrite_output_dir"], ["--overwrite_output_dir"]),
        (["--resume_from_checkpoint", "True", "--do_train", "False", "--do_eval"], ["--do_train"]),
        (
            ["--resume_from_checkpoint", "{ckpt}", "--do_train", "False", "--do_eval"],
            ["--do_train", "--peft_model_id"],
        ),
        (["--resume_from_checkpoint", "{ckpt}", "--r", "3"], ["r: checkpoint 2 vs command line 3"]),
        (
            ["--resume_from_checkpoint", "{ckpt}", "--scap", "True", "--sub_dim_scap", "4"],
            ["scap: checkpoint False"],
        ),
    ],
)
def test_a_resume_request_is_never_dropped_silently(
    flags, expected, small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    """--resume_from_checkpoint with --overwrite_output_dir, without --do_train, or for another adapter fails."""
    ckpt = fake_checkpoint(small_t5_dir, tmp_path / "run" / "checkpoint-2", r=2)
    capsys.readouterr()
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    flags = [f.replace("{ckpt}", str(ckpt)) for f in flags]
    argv = train_argv(small_t5_dir, rte_data, tmp_path / "run", "--max_steps", "4", *flags)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume_from_checkpoint" in err[0], err
    assert all(text in err[0] for text in expected), err


@pytest.mark.parametrize(
    "flags",
    [
        ("--peft_type", "PROMPT_TUNING_LODIM", "--lodim_r", "2", "--num_random_proj", "2"),
        ("--peft_type", "PROMPT_TUNING_LORAX", "--r", "3"),
    ],
    ids=["ULPT", "ADePT"],
)
def test_new_kinds_resume_exactly(flags, small_t5_dir, rte_data, tmp_path, monkeypatch):
    """ULPT (its frozen projection comes back from the checkpoint, not from a new draw) and ADePT (its
    dropout masks follow the restored RNG state) resume bit for bit."""
    straight = tmp_path / "straight"
    assert main(train_argv(small_t5_dir, rte_data, straight, *RESUME_FLAGS, *flags)) == 0
    resumed = tmp_path / "resumed"
    argv = train_argv(small_t5_dir, rte_data, resumed, *RESUME_FLAGS, *flags)
    run_killed_after_checkpoint(monkeypatch, 3, argv)
    torch.manual_seed(1234)  # a fresh ULPT projection would differ; the checkpoint's must win
    assert main(argv) == 0
    final_a = load_file(straight / "adapter_model.safetensors")
    final_b = load_file(resumed / "adapter_model.safetensors")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key
    assert losses(straight) == losses(resumed) and sorted(losses(resumed)) == [1, 2, 3, 4, 5, 6]
