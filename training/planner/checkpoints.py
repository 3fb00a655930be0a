"""Compatibility of saved adapters (--peft_model_id, transfer sources, checkpoints to resume) with the
command line and the model, read from their small files before any model weights load."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from peft import PromptTuningConfig
from peft.config import SHAPE_FIELDS
from peft.encoders import ADAPTER_KEYS, PromptAdapter
from peft.family import Family
from peft.io import check_adapter_state, read_adapter_tensors, with_original_projection
from training.planner.checks import ConfigError

logger = logging.getLogger(__name__)


def load_saved_adapter_config(model_args: Any, data_args: Any, token_dim: int, family: Family) -> PromptTuningConfig:
    """The saved config of --peft_model_id; its shapes win over the command line (with a warning), since
    the saved tensors only fit the shapes they were trained with.

    Checked against the model (d, family) and against the tensors in the folder (read safely: safetensors,
    or a legacy .bin with weights_only=True) before any model weights load.
    """
    path = Path(model_args.peft_model_id)
    config = check_saved_adapter(path, token_dim, family, f"--peft_model_id {path}", model_args.model_name_or_path)
    cli = {
        "peft_type": model_args.peft_type,
        "num_virtual_tokens": model_args.prefix_length,
        "r": model_args.r,
        "max_length": data_args.max_seq_length,
        "scpp": model_args.scpp,
        "scap": model_args.scap,
        "lodim_r": model_args.lodim_r,
        "num_random_proj": model_args.num_random_proj,
        "prompt_kind": model_args.prompt_kind,
        "update_kind": model_args.update_kind,
    }
    differing = {k: (v, getattr(config, k)) for k, v in cli.items() if getattr(config, k) != v}
    if differing:
        logger.warning(
            "--peft_model_id %s: the saved adapter config decides the shapes; command-line values ignored "
            "(flag: given -> saved): %s",
            path,
            ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in differing.items()),
        )
    return config


def check_saved_adapter(
    folder: str | Path, token_dim: int, family: Family, flag: str, model_name: str
) -> PromptTuningConfig:
    """The config of a saved adapter folder, checked against the model (width d, family) and against the
    tensors in the folder (read safely, every tensor present and finite, nothing foreign) before any model
    weights load; used by ``train.py --peft_model_id`` and ``scripts/predict.py --adapter``."""
    try:
        config = PromptTuningConfig.from_pretrained(folder)
        config.validate(token_dim=token_dim, check_init=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    if config.token_dim is not None and config.token_dim != token_dim:
        raise ConfigError(
            f"{flag}: the adapter was saved for token_dim (d) {config.token_dim}, but {model_name} has d={token_dim}."
        )
    if config.task_type is not None and config.task_type != family.task_type:
        raise ConfigError(
            f"{flag}: the adapter was saved for task_type {config.task_type}, but {model_name} is a {family} "
            f"model ({family.task_type})."
        )
    check_adapter_tensors(folder, config, token_dim, flag, with_head=family.classification_head)
    return config


def check_adapter_tensors(
    folder: str | Path,
    config: PromptTuningConfig,
    token_dim: int,
    flag: str,
    keys: tuple[str, ...] | None = None,
    with_head: bool = False,
) -> None:
    """Read the adapter file of ``folder`` safely and compare its tensor shapes with ``config`` at width d.

    Builds the adapter on the meta device (no memory); a code-carrying pickle, a missing file or a shape
    that differs raise ConfigError naming ``flag`` and both shapes. Only ``keys`` are compared when given
    (a transfer source contributes one side). Any other tensor is refused, except a classifier's head
    (``with_head``), whose names only the loaded model knows.
    """
    try:
        state = read_adapter_tensors(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    with torch.device("meta"):
        expected = PromptAdapter(config, token_dim).named_saved_tensors()
    try:
        state = with_original_projection(state, expected, folder)
        check_adapter_state(state, expected if keys is None else keys, flag)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    foreign = sorted(k for k in state if k not in expected and (k in ADAPTER_KEYS or not with_head))
    if keys is None and foreign:
        raise ConfigError(
            f"{flag}: the file holds {foreign}, which a {config.method_name} adapter (its adapter_config.json) "
            f"does not have (it has {sorted(expected)}); save the adapter again or remove those tensors."
        )
    for key, tensor in state.items():
        if (
            key in expected
            and (keys is None or key in keys)
            and tuple(tensor.shape) != tuple(expected[key].shape)
        ):
            raise ConfigError(
                f"{flag}: tensor {key} has shape {tuple(tensor.shape)}, but its adapter_config.json and the "
                f"model (d={token_dim}) give {tuple(expected[key].shape)}."
            )


def check_checkpoint_matches(checkpoint: str, config: PromptTuningConfig, token_dim: int, family: Family) -> None:
    """A checkpoint to resume must hold the adapter the command line builds (same method and shapes)."""
    flag = f"--resume_from_checkpoint {checkpoint}"
    try:
        saved = PromptTuningConfig.from_pretrained(checkpoint)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    differing = [
        f"{name}: checkpoint {getattr(saved, name)} vs command line {getattr(config, name)}"
        for name in SHAPE_FIELDS
        if None not in (getattr(saved, name), getattr(config, name))
        and getattr(saved, name) != getattr(config, name)
    ]
    if differing:
        raise ConfigError(
            f"{flag} holds a different adapter ({'; '.join(differing)}); use the flags it was trained with."
        )
    check_adapter_tensors(checkpoint, config, token_dim, flag, with_head=family.classification_head)
