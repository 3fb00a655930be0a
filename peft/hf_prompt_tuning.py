"""HuggingFace PEFT prompt-tuning adapters: the one layout difference from ours.

HF PEFT writes the same two files we do (``adapter_config.json`` with ``peft_type: PROMPT_TUNING``,
``num_virtual_tokens``, ``token_dim``; ``adapter_model.safetensors`` with ``prompt_embeddings``), so
they load through the normal path. The difference: for encoder-decoder models HF PEFT defaults to
``num_transformer_submodules = 2`` and stores ``num_virtual_tokens * 2`` rows. Its generation feeds
the encoder the first ``num_virtual_tokens`` rows and never reads the others; its teacher-forced
forward prepends the second block to the decoder inputs. We prompt the encoder only (README.md,
"Serving many adapters"), so the first block is kept and the second is dropped with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import torch

from .config import PromptTuningConfig
from .encoders import KEY_PROMPT


class DroppedPromptRowsWarning(UserWarning):
    """An HF PEFT adapter held decoder prompt rows, which this library does not use."""


def read_config(directory: str | Path) -> PromptTuningConfig:
    """``directory/adapter_config.json`` (ours, the original's or HF PEFT's).

    HF PEFT's prompt-tuning configs have no ``max_length``: they get None (no added update, and no
    L-column layout for decoder-only positions) instead of our default (``PromptTuningConfig.from_dict``).
    """
    return PromptTuningConfig.from_pretrained(directory)


def fold_submodules(
    config: PromptTuningConfig, state: dict[str, torch.Tensor], source: str
) -> tuple[PromptTuningConfig, dict[str, torch.Tensor]]:
    """(config with one submodule, tensors with the encoder's m rows) for HF PEFT's 2-submodule files.

    Other configs pass through unchanged (``validate`` then refuses what it cannot use).
    """
    count = config.num_transformer_submodules
    if count == 1 or config.peft_type != "PROMPT_TUNING" or KEY_PROMPT not in state:
        return config, state
    m = config.num_virtual_tokens
    prompt = state[KEY_PROMPT]
    if count < 1 or prompt.shape[0] != m * count:
        raise ValueError(
            f"{source}: prompt_embeddings has {prompt.shape[0]} rows, but num_virtual_tokens {m} x "
            f"num_transformer_submodules {count} = {m * count}; the adapter_config.json does not match the file."
        )
    msg = (
        f"{source}: HF PEFT prompt tuning with num_transformer_submodules={count}: rows 0..{m - 1} (the "
        f"encoder prompt, what HF's generate uses) are loaded; rows {m}..{m * count - 1} (the decoder "
        "prompt of HF's teacher-forced forward) are dropped."
    )
    warnings.warn(msg, DroppedPromptRowsWarning, stacklevel=3)
    return replace(config, num_transformer_submodules=1), {**state, KEY_PROMPT: prompt[:m]}
