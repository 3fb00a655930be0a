"""``train.py``'s flag for each adapter config field, so that library errors reach the user in flag terms.

The library (``peft``) names ``PromptTuningConfig`` fields in its errors (``peft.errors.AdapterConfigError``
carries them in ``fields``); a run configured by flags reports the flag that sets each field instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from peft.errors import AdapterConfigError

CONFIG_FLAGS = {
    "num_virtual_tokens": "--prefix_length",
    "max_length": "--max_seq_length",
    "prompt_tuning_init": "--text_init",
    "tokenizer_name_or_path": "--tokenizer_name",
    **{
        name: f"--{name}"
        for name in (
            "peft_type", "r", "scpp", "scap", "sub_dim_scpp", "codebook_size_scpp", "sub_dim_scap",
            "codebook_size_scap", "prompt_tuning_init_text", "enforce_budget", "pretrain_scpp_ckpt",
            "pretrain_scap_ckpt", "lodim_r", "num_random_proj", "prompt_kind", "update_kind",
        )
    },
}  # fmt: skip
"""Config field -> the ``train.py`` flag that sets it."""


def flag_terms(message: str, fields: Iterable[str]) -> str:
    """``message`` with each of the config ``fields`` (whole words) replaced by its flag."""
    for field in fields:
        flag = CONFIG_FLAGS.get(field)
        if flag is not None:
            message = re.sub(rf"(?<![\w-]){re.escape(field)}(?!\w)", flag, message)
    return message


def in_flag_terms(exc: ValueError) -> str:
    """The message of a library error, with the config fields of an ``AdapterConfigError`` as flags."""
    return flag_terms(str(exc), exc.fields if isinstance(exc, AdapterConfigError) else ())
