"""Training flags that transformers 5 removed but the original DePT/ACCEPT scripts still pass.

They are declared as dataclass fields (so they work on the command line *and* in a ``.json`` argument
file) and translated to their transformers 5 equivalents, with the old meaning, before the parent
``TrainingArguments.__post_init__`` runs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class LegacyTrainingFlags:
    """Mixin for a ``Seq2SeqTrainingArguments`` subclass; call ``apply_legacy_flags()`` first in ``__post_init__``."""

    evaluation_strategy: str | None = field(
        default=None,
        metadata={
            "help": "Old name of --eval_strategy (removed in transformers 5): 'no', 'steps' or 'epoch'."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train from scratch in a non-empty --output_dir instead of resuming from its last "
            "checkpoint (old HF meaning; existing files are overwritten, not deleted)."
        },
    )
    warmup_ratio: float | None = field(
        default=None,
        metadata={
            "help": "Old name: linear warmup over this fraction of the total steps (sets --warmup_steps)."
        },
    )
    group_by_length: bool = field(
        default=False,
        metadata={
            "help": "Old name of --train_sampling_strategy group_by_length (batches of similar length)."
        },
    )
    logging_dir: str | None = field(
        default=None,
        metadata={"help": "TensorBoard log directory (old name; sets TENSORBOARD_LOGGING_DIR)."},
    )
    lora_embedding_lr: float | None = field(
        default=None,
        metadata={"help": "DePT's name of --added_embedding_lr (learning rate of the added side)."},
    )

    def apply_legacy_flags(self) -> None:
        """Map the old flags onto the fields transformers 5 reads; raise ValueError on contradictions."""
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
            if self.warmup_steps and self.warmup_ratio:
                raise ValueError("--warmup_ratio and --warmup_steps were both given; pass only one.")
            if self.warmup_ratio:
                self.warmup_steps = float(self.warmup_ratio)
        if self.group_by_length:
            self.train_sampling_strategy = "group_by_length"
        if self.logging_dir is not None:
            os.environ["TENSORBOARD_LOGGING_DIR"] = self.logging_dir
        if self.lora_embedding_lr is not None:
            added = getattr(self, "added_embedding_lr", None)
            if added is not None and added != self.lora_embedding_lr:
                raise ValueError(
                    f"--lora_embedding_lr {self.lora_embedding_lr} and --added_embedding_lr {added} disagree; "
                    "they are the same flag (DePT and ACCEPT spellings)."
                )
            self.added_embedding_lr = self.lora_embedding_lr
