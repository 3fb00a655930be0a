"""Files of a baseline that trains part of a plain model (``--peft_type HEAD_ONLY``): only what was trained.

Such a folder's ``model.safetensors`` holds the trained tensors (a classifier head: hundreds of
parameters, not the 90 MB backbone) and its ``config.json`` says so (``TRAINED_ONLY_KEY``). It is read
back on top of the base model: ``--model_name_or_path BASE --peft_type HEAD_ONLY --peft_model_id DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

TRAINED_ONLY_KEY = "saved_trained_tensors_only"
WEIGHTS_FILE = "model.safetensors"


def trained_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable tensors of a partly frozen model (None when everything or nothing is trained)."""
    params = dict(model.named_parameters())
    trained = {name: p.detach() for name, p in params.items() if p.requires_grad}
    if not trained or len(trained) == len(params):
        return None
    return trained


def mark_trained_only(model: nn.Module) -> None:
    """Record in the model's config (hence its saved ``config.json``) that its file holds trained tensors only."""
    setattr(model.config, TRAINED_ONLY_KEY, True)


def holds_trained_only(folder: str | Path) -> bool:
    """True for a folder written by a run with ``trained_state_dict`` (its config.json is marked)."""
    config = Path(folder) / "config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get(TRAINED_ONLY_KEY))
    except (OSError, ValueError):
        return False


def load_trained_tensors(model: nn.Module, folder: str | Path) -> None:
    """Copy the trained tensors saved in ``folder`` into ``model``; ValueError on a name or shape that differs."""
    path = Path(folder) / WEIGHTS_FILE
    state = load_file(str(path))
    params = dict(model.named_parameters())
    for name, tensor in state.items():
        if name not in params:
            raise ValueError(f"{path}: tensor {name} is not a parameter of the model.")
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise ValueError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, the model's is {tuple(params[name].shape)}."
            )
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
