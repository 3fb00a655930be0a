"""Tokenizer, backbone and adapter construction for ``train.py``.

The model family comes from the model's config (``peft.detect_family``), never from the path.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from peft.budget import PROMPT_KINDS, UPDATE_KINDS
from peft.config import PEFT_TYPES as ADAPTER_PEFT_TYPES
from peft.family import Family
from training.head_only import load_trained_tensors

logger = logging.getLogger(__name__)

__all__ = ["ADAPTER_PEFT_TYPES", "PEFT_TYPES", "PROMPT_KINDS", "UPDATE_KINDS"]  # re-exported for train.py
BASELINE_PEFT_TYPES = ("HEAD_ONLY", "FULL")
PEFT_TYPES = ADAPTER_PEFT_TYPES + BASELINE_PEFT_TYPES
BASELINE_METHODS = {"HEAD_ONLY": "head-only", "FULL": "full-finetuning"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model_config(
    model_name_or_path: str, cache_dir: str | None = None, trust_remote_code: bool = False
) -> PretrainedConfig:
    """The backbone's config only (a small JSON file): enough for the family, d and fail-fast checks.

    ``trust_remote_code`` is passed explicitly (False: a folder with custom code is refused, never a prompt).
    """
    return AutoConfig.from_pretrained(
        model_name_or_path, cache_dir=cache_dir, trust_remote_code=trust_remote_code
    )


def hidden_size(config: PretrainedConfig) -> int:
    """d, the embedding width (``d_model`` for T5, ``hidden_size`` elsewhere)."""
    for name in ("hidden_size", "d_model", "n_embd"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the embedding width in the {type(config).__name__} of the model")


def load_tokenizer(
    name_or_path: str, family: Family, cache_dir: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """AutoTokenizer with an explicit padding side (right; left for decoder-only, as the originals pad)
    and pad := eos when the tokenizer has no pad token."""
    tokenizer = AutoTokenizer.from_pretrained(
        name_or_path, cache_dir=cache_dir, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = family.padding_side
    return tokenizer


def load_backbone(
    model_name_or_path: str,
    family: Family,
    *,
    num_labels: int | None = None,
    dtype: str = "float32",
    cache_dir: str | None = None,
    trust_remote_code: bool = False,
) -> nn.Module:
    """The frozen-to-be base model of ``family`` in ``dtype`` (adapter parameters stay float32)."""
    kwargs: dict[str, Any] = {
        "dtype": DTYPES[dtype],
        "cache_dir": cache_dir,
        "trust_remote_code": trust_remote_code,
    }
    if family.classification_head:
        kwargs["num_labels"] = num_labels
    return family.auto_class.from_pretrained(model_name_or_path, **kwargs)


def freeze_for_baseline(model: nn.Module, peft_type: str) -> nn.Module:
    """HEAD_ONLY: train only the task head (everything outside ``model.base_model``); FULL: train all."""
    for param in model.parameters():
        param.requires_grad = True
    if peft_type == "HEAD_ONLY":
        for param in model.base_model.parameters():
            param.requires_grad = False
    return model


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model`` (each tensor once)."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def log_parameter_table(model: nn.Module) -> None:
    """The trainable-parameter table: the adapter's per-component table, else one line per tensor."""
    if hasattr(model, "log_trainable_parameters"):
        model.log_trainable_parameters()  # the log only: train.py's console shows its own plan line
        return
    for name, param in model.named_parameters():
        if param.requires_grad:
            logger.info("trainable %-60s %-20s %d", name, tuple(param.shape), param.numel())
    trainable, total = parameter_counts(model)
    logger.info(
        "trainable params: %d || all params: %d || trainable%%: %.4f",
        trainable,
        total,
        100.0 * trainable / total,
    )


def build_model(plan: Any, model_args: Any, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    """Load the backbone and wrap it as ``plan`` says: a new adapter, a saved one (--peft_model_id), or a
    HEAD_ONLY/FULL baseline without adapter."""
    from peft import PeftModel, get_peft_model

    backbone = load_backbone(
        model_args.model_name_or_path,
        plan.family,
        num_labels=plan.task.num_labels,
        dtype=model_args.dtype,
        cache_dir=model_args.cache_dir,
        trust_remote_code=model_args.trust_remote_code,
    )
    if backbone.config.pad_token_id is None:
        backbone.config.pad_token_id = tokenizer.pad_token_id
    if model_args.peft_type in BASELINE_PEFT_TYPES:
        model = freeze_for_baseline(backbone, model_args.peft_type)
        if model_args.peft_model_id:  # a HEAD_ONLY run's trained head (training/head_only.py)
            load_trained_tensors(model, model_args.peft_model_id)
        return model
    if plan.loaded_peft_config is not None:
        return PeftModel.from_pretrained(
            backbone, model_args.peft_model_id, is_trainable=True, config=plan.loaded_peft_config
        )
    return get_peft_model(backbone, plan.peft_config, tokenizer=tokenizer)
