"""Where a run writes and which checkpoint it resumes from (--output_dir, --resume_from_checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.planner.checks import ConfigError
from training.run_dir import last_complete_checkpoint, run_entries, training_finished

logger = logging.getLogger(__name__)


def resolve_output_dir(training_args: Any) -> str | None:
    """Checkpoint to resume from (explicit, or the last one in --output_dir), or None for a fresh run.

    An explicit --resume_from_checkpoint is never dropped silently: it needs --do_train, and ``True``
    contradicts --overwrite_output_dir.
    """
    out = Path(training_args.output_dir)
    explicit = training_args.resume_from_checkpoint
    if explicit is not None and not training_args.do_train:
        raise ConfigError(
            f"--resume_from_checkpoint {explicit} continues training and needs --do_train; to evaluate a "
            "saved adapter pass --peft_model_id <checkpoint folder> with --do_eval/--do_predict."
        )
    if str(explicit).lower() == "true" and training_args.overwrite_output_dir:
        raise ConfigError(
            "--resume_from_checkpoint True and --overwrite_output_dir contradict each other (resume vs "
            "start from scratch); pass one."
        )
    if explicit is not None and str(explicit).lower() != "true":
        if not Path(explicit).is_dir():
            raise ConfigError(f"--resume_from_checkpoint {explicit} is not a directory.")
        return str(explicit)
    if not training_args.do_train or not out.is_dir() or training_args.overwrite_output_dir:
        return None
    last = last_complete_checkpoint(out)
    if last is not None:
        logger.info("resuming from %s (pass --overwrite_output_dir to start from scratch)", last)
        return last
    if str(explicit).lower() == "true":
        raise ConfigError(f"--resume_from_checkpoint True: no checkpoint-* folder in --output_dir {out}.")
    if run_entries(out) and not training_finished(out):
        raise ConfigError(
            f"--output_dir {out} is not empty and holds no checkpoint to resume; pass --overwrite_output_dir "
            "or choose another directory."
        )
    return None
