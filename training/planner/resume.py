"""Where a run writes and which checkpoint it resumes from (--output_dir, --resume_from_checkpoint)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from training.identity import IDENTITY_NAME, identity_differences, read_identity
from training.planner.errors import ConfigError
from training.resume_record import check_resume_point
from training.run_dir import (
    RunDirError,
    is_finished,
    last_complete_checkpoint,
    run_entries,
    training_finished,
)

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
    if training_finished(out):
        return None  # its trained adapter is evaluated; there is nothing to resume
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


def check_same_run(
    training_args: Any, identity: dict[str, Any], resume_from: str | None, adapter_run: bool
) -> dict[str, dict[str, Any]]:
    """Compare the command's identity with the one recorded in --output_dir (``training.identity``).

    A resume compares with its checkpoint's record (``check_resume_point``; differences need
    --allow_changed_resume_flags and are returned). A folder whose training or whole run finished compares
    with its ``run_identity.json``: a difference, or a folder whose identity was not recorded, is refused
    (redoing it needs --overwrite_output_dir), so an edited grid variable never reuses old results.
    """
    out = Path(training_args.output_dir)
    if training_args.overwrite_output_dir:
        return {}
    if not (out.is_dir() and (is_finished(out) or (training_args.do_train and training_finished(out)))):
        try:
            return check_resume_point(
                resume_from, identity, allow_changes=training_args.allow_changed_resume_flags,
                adapter_run=adapter_run,
            )  # fmt: skip
        except RunDirError as exc:
            raise ConfigError(str(exc)) from exc
    state = "finished run" if is_finished(out) else "trained run"
    recorded = read_identity(out)
    if recorded is None:
        raise ConfigError(
            f"--output_dir {out} holds a {state} without {IDENTITY_NAME} or run_config.json, so whether this "
            "command would compute the same cannot be told; pass --overwrite_output_dir to redo it (the old "
            "run is moved aside), or choose another --output_dir."
        )
    differences = identity_differences(recorded, identity)
    if differences:
        raise ConfigError(
            f"--output_dir {out} holds a {state} of another setting (recorded vs now: {'; '.join(differences)}); "
            "pass --overwrite_output_dir to redo it with the new setting (the old run is moved aside), or choose "
            "another --output_dir."
        )
    return {}
