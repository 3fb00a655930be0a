"""Range checks of the numeric flags, run before any weights load (each failure names the flag and the fix).

Without them a zero batch size or step count, a negative learning rate or a huge ``--max_seq_length``
fail deep inside the Trainer (or try to allocate tens of GB) after the backbone has loaded.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

# The longest --max_seq_length for a model without a position limit of its own (T5's relative positions):
# every input is padded to it, and attention holds batch x heads x L^2 scores per layer.
MAX_SEQ_LENGTH_WITHOUT_POSITION_LIMIT = 4096
# numpy's legacy seeding (called by transformers' set_seed) accepts only 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def numeric_flag_problem(
    model_args: Any, data_args: Any, training_args: Any, model_config: PretrainedConfig
) -> str | None:
    """The first out-of-range numeric flag, as a one-line message with the fix; None when all are fine."""
    if training_args.do_train:
        if training_args.max_steps == 0 or training_args.max_steps < -1:
            return (
                f"--max_steps {training_args.max_steps}: pass a positive number of optimizer steps, or -1 (the "
                "default) to train for --num_train_epochs."
            )
        for flag in ("learning_rate", "added_embedding_lr"):  # 0 is allowed: it freezes that side
            value = getattr(training_args, flag, None)
            if value is not None and value < 0:
                return f"--{flag} must be >= 0, got {value}."
        if training_args.gradient_accumulation_steps < 1:
            return f"--gradient_accumulation_steps must be >= 1, got {training_args.gradient_accumulation_steps}."
    for flag in ("seed", "data_seed"):  # None: --data_seed unset
        value = getattr(training_args, flag, None)
        if value is not None and not 0 <= value <= MAX_SEED:
            return f"--{flag} must be between 0 and {MAX_SEED}, got {value}."
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        value = getattr(training_args, flag)
        if value < 1:
            return f"--{flag} must be >= 1, got {value}."
    limit = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(limit, int) and data_args.max_seq_length > MAX_SEQ_LENGTH_WITHOUT_POSITION_LIMIT:
        return (
            f"--max_seq_length {data_args.max_seq_length} is longer than {MAX_SEQ_LENGTH_WITHOUT_POSITION_LIMIT}, "
            f"the limit for {model_config.model_type} (no position limit of its own): every input is padded "
            "to it and attention needs batch x heads x L^2 scores; use the task's real input length (256 in "
            "the papers)."
        )
    return None
