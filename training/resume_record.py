"""``resume_record.json``, written into every checkpoint: the run's identity when the checkpoint was written
(``training.identity``) and the running sum of the training loss (so that ``train_loss`` after a resume is
the mean over the whole run).

A resume whose identity differs from the checkpoint's fails listing each difference, unless
``--allow_changed_resume_flags`` is given; then the new values are used (the learning rates are applied
to the restored optimizer and schedule by ``training.trainer.PromptTrainer``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_pt_utils import safe_globals

from training.identity import changed_flags, identity_differences
from training.outputs import atomic_write_json
from training.run_dir import RunDirError, check_checkpoint_files

logger = logging.getLogger(__name__)

RECORD_NAME = "resume_record.json"


def write_record(checkpoint: str | Path, identity: dict[str, Any], loss_sum: float, global_step: int) -> None:
    """Write ``resume_record.json`` into ``checkpoint`` (created if needed)."""
    atomic_write_json(
        Path(checkpoint) / RECORD_NAME,
        {"identity": identity, "train_loss_sum": loss_sum, "global_step": global_step},
    )


def read_record(checkpoint: str | Path) -> dict[str, Any] | None:
    """The record of ``checkpoint``, or None for a checkpoint without one (written by an older version)."""
    path = Path(checkpoint) / RECORD_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# The pickles a resume reads (training_args.bin is written by the Trainer but never read back).
RESUME_PICKLES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth")


def check_pickles(checkpoint: str | Path, flag: str) -> None:
    """Every torch pickle of a checkpoint (optimizer, scheduler, RNG state) loads as plain data
    (``weights_only=True``, as the resume will): one that carries code is refused before the backbone loads."""
    for path in sorted(Path(checkpoint).iterdir()):
        per_process_rng = path.name.startswith("rng_state_") and path.suffix == ".pth"
        if not (path.name in RESUME_PICKLES or per_process_rng) or not path.is_file():
            continue
        try:
            with safe_globals():  # the numpy types of the RNG state, which the Trainer allows too
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError for code; other types for a damaged file
            detail = " ".join(str(exc).split())[:200]
            raise RunDirError(
                f"{flag}: {path.name} is not plain saved data ({type(exc).__name__}: {detail}); it is refused "
                "(loading it could run code); resume from another checkpoint or --overwrite_output_dir."
            ) from exc


def recorded_identity(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The identity a record holds; an older record's flags alone (``partial``); None when neither."""
    if record is None:
        return None
    if "identity" in record:
        return record["identity"]
    if "flags" in record:
        return {"flags": record["flags"], "partial": True}
    return None


def check_resume_point(
    checkpoint: str | None, identity: dict[str, Any], *, allow_changes: bool, adapter_run: bool
) -> dict[str, dict[str, Any]]:
    """Check the checkpoint a run resumes from: complete, expected files only, and the same identity.

    Returns the changed flags (``training.identity.changed_flags``), which are only accepted with
    ``allow_changes``; raises RunDirError naming the checkpoint and each difference otherwise, and for a
    checkpoint whose identity was not recorded.
    """
    if checkpoint is None:
        return {}
    flag = f"--resume_from_checkpoint {checkpoint}"
    check_checkpoint_files(checkpoint, flag, adapter_run)
    check_pickles(checkpoint, flag)
    recorded = recorded_identity(read_record(checkpoint))
    if recorded is None:
        if not allow_changes:
            raise RunDirError(
                f"{flag} has no {RECORD_NAME}, so the flags, backbone and data it was trained with cannot be "
                "compared with this command; pass --allow_changed_resume_flags True to resume it anyway, or "
                "--overwrite_output_dir to start over."
            )
        logger.warning("%s has no %s: resuming without comparing its flags, backbone and data", flag, RECORD_NAME)
        return {}
    differences = identity_differences(recorded, identity)
    if differences and not allow_changes:
        raise RunDirError(
            f"{flag} was trained with another setting (recorded vs now: {'; '.join(differences)}); rerun with "
            "the recorded values, pass --allow_changed_resume_flags True to continue with the new ones, or "
            "--overwrite_output_dir to start over."
        )
    if differences:
        logger.warning("resuming with changes (recorded vs now): %s", "; ".join(differences))
    return changed_flags(recorded, identity)
