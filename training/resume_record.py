"""``resume_record.json``, written into every checkpoint: the flags the checkpoint fixed, and the
running sum of the training loss (so that ``train_loss`` after a resume is the mean over the whole run).

A resume whose flags differ from the record fails listing each difference, unless
``--allow_changed_resume_flags`` is given; then the new values are used (the learning rates are applied
to the restored optimizer and schedule by ``training.trainer.PromptTrainer``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.outputs import atomic_write_json
from training.run_dir import RunDirError, check_checkpoint_files

logger = logging.getLogger(__name__)

RECORD_NAME = "resume_record.json"
# Flags whose value a checkpoint fixes, by argument group (model, data, training).
MODEL_FLAGS = (
    "peft_type", "prefix_length", "r", "scpp", "scap", "sub_dim_scpp", "codebook_size_scpp", "sub_dim_scap",
    "codebook_size_scap", "lodim_r", "num_random_proj", "prompt_kind", "update_kind", "peft_model_id",
)  # fmt: skip
DATA_FLAGS = ("task_name", "max_seq_length", "max_train_samples", "k_shot_example", "add_prefix")
TRAINING_FLAGS = (
    "learning_rate", "added_embedding_lr", "lr_scheduler_type", "warmup_steps", "max_steps", "num_train_epochs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "seed", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon",
)  # fmt: skip


def _plain(value: Any) -> Any:
    """JSON-comparable form of a flag value (enums by value)."""
    value = getattr(value, "value", value)
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def fixed_flags(model_args: Any, data_args: Any, training_args: Any) -> dict[str, Any]:
    """The values of the flags a checkpoint fixes, named as on the command line."""
    values = {}
    for group, names in ((model_args, MODEL_FLAGS), (data_args, DATA_FLAGS), (training_args, TRAINING_FLAGS)):
        for name in names:
            values[name] = _plain(getattr(group, name, None))
    return values


def write_record(checkpoint: str | Path, flags: dict[str, Any], loss_sum: float, global_step: int) -> None:
    """Write ``resume_record.json`` into ``checkpoint`` (created if needed)."""
    atomic_write_json(
        Path(checkpoint) / RECORD_NAME,
        {"flags": flags, "train_loss_sum": loss_sum, "global_step": global_step},
    )


def read_record(checkpoint: str | Path) -> dict[str, Any] | None:
    """The record of ``checkpoint``, or None for a checkpoint without one (written by an older version)."""
    path = Path(checkpoint) / RECORD_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def changed_flags(record: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{flag: {"checkpoint": saved, "now": given}}`` for every fixed flag whose value changed."""
    if record is None:
        return {}
    saved = record.get("flags", {})
    return {
        name: {"checkpoint": saved[name], "now": value}
        for name, value in now.items()
        if name in saved and saved[name] != value
    }


def describe_changes(changes: dict[str, dict[str, Any]]) -> str:
    """``--flag checkpoint -> now`` pairs, joined by "; "."""
    return "; ".join(f"--{name} {v['checkpoint']} -> {v['now']}" for name, v in changes.items())


def check_resume_point(
    checkpoint: str | None, flags_now: dict[str, Any], *, allow_changes: bool, adapter_run: bool
) -> dict[str, dict[str, Any]]:
    """Check the checkpoint a run resumes from (complete, expected files only, same fixed flags).

    Returns the changed flags (``changed_flags``), which are only accepted with ``allow_changes``;
    raises RunDirError naming the checkpoint and each difference otherwise.
    """
    if checkpoint is None:
        return {}
    flag = f"--resume_from_checkpoint {checkpoint}"
    check_checkpoint_files(checkpoint, flag, adapter_run)
    record = read_record(checkpoint)
    if record is None:
        logger.warning("%s has no %s: the flags it was trained with cannot be compared", flag, RECORD_NAME)
    changes = changed_flags(record, flags_now)
    if changes and not allow_changes:
        raise RunDirError(
            f"{flag} was trained with other values (checkpoint -> now: {describe_changes(changes)}); rerun "
            "with the checkpoint's values, or pass --allow_changed_resume_flags True to continue with the new ones."
        )
    if changes:
        logger.warning("resuming with changed flags (checkpoint -> now): %s", describe_changes(changes))
    return changes
