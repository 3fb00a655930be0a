"""Shared helpers of the reliability tests (resume, safe loading, failures, DDP, precision).

Their models and data (``small_t5_dir``, ``small_llama_dir``, ``rte_data``) are fixtures in ``conftest``.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

L = 16  # --max_seq_length


def train_argv(model_dir: Path, data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """A DePT run of a few steps: batch 4, no evaluation unless ``extra`` asks for it."""
    return [
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(output_dir), "--max_seq_length", str(L), "--prefix_length", "4", "--r", "2",
        "--learning_rate", "0.3", "--added_embedding_lr", "1e-2", "--weight_decay", "0",
        "--warmup_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--logging_steps", "1", "--do_train", "--disable_tqdm", "True", "--report_to", "none",
        "--dataloader_pin_memory", "False", *extra,
    ]  # fmt: skip


class WeightsLoaded(BaseException):
    """Raised where the backbone would load (BaseException: train.py's failure handler lets it through)."""


def no_weights(*args, **kwargs):
    """Stands in for ``training.modeling.load_backbone`` in tests of checks that must come first."""
    raise WeightsLoaded("model weights were loaded before the check")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_helpers_write_what_the_loader_reads(rte_data, small_t5_dir):
    """The data rows and the small model's vocabulary fit train.py's loader and tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from data.loading import load_task_splits

    splits = load_task_splits("rte", data_dir=rte_data, splits=("train", "validation", "test"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 16, "validation": 4, "test": 4}
    tokenizer = AutoTokenizer.from_pretrained(small_t5_dir)
    ids = tokenizer(splits["train"][0]["source"])["input_ids"]
    assert max(ids) < AutoConfig.from_pretrained(small_t5_dir).vocab_size


class Killed(BaseException):
    """Stands for the job being killed (pre-emption) at a chosen point (no handler of train.py catches it,
    as none catches SIGKILL)."""


class KillAfterSave(TrainerCallback):
    """Raises ``Killed`` right after checkpoint-``step`` is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after checkpoint-{self.step}")


def killed_trainer(step: int) -> type:
    """``train.PromptTrainer`` that is killed right after checkpoint-``step``."""
    import train

    class KilledTrainer(train.PromptTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(KillAfterSave(step))

    return KilledTrainer


def run_killed_after_checkpoint(monkeypatch, step: int, argv: list[str]) -> None:
    """``train.main(argv)``, killed right after checkpoint-``step`` is written (the job is pre-empted)."""
    import pytest

    import train

    with monkeypatch.context() as patch:
        patch.setattr(train, "PromptTrainer", killed_trainer(step))
        with pytest.raises(Killed):
            train.main(argv)
