"""Optimizer and learning-rate schedule of DePT/ACCEPT (docs/fidelity.md#f-optim), with every value explicit.

The originals built ``transformers.AdamW(groups, lr)``: betas (0.9, 0.999), eps 1e-6, weight decay 0
(``--weight_decay`` was silently ignored), bias correction on. torch's ``AdamW`` has other
defaults (eps 1e-8, weight decay 1e-2), so nothing here relies on defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

logger = logging.getLogger(__name__)


def parameter_groups(model: nn.Module, learning_rate: float, added_embedding_lr: float | None) -> list[dict]:
    """Two groups by role: the prepended side (and a classifier head) at ``learning_rate``, the added side
    (A, B or SCAP) at ``added_embedding_lr`` (falls back to ``learning_rate``).

    Models without ``prepended_parameters`` (the HEAD_ONLY / FULL baselines) get one group with every
    trainable parameter. Raises ValueError if the groups miss or double-count a trainable parameter.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if hasattr(model, "prepended_parameters") and hasattr(model, "added_parameters"):
        prepended = _trainable(model.prepended_parameters())
        added = _trainable(model.added_parameters())
        groups = [{"params": prepended, "lr": learning_rate, "name": "prepended"}]
        if added:
            lr = learning_rate if added_embedding_lr is None else added_embedding_lr
            groups.append({"params": added, "lr": lr, "name": "added"})
    else:
        groups = [{"params": trainable, "lr": learning_rate, "name": "all"}]
    grouped = [id(p) for group in groups for p in group["params"]]
    if len(grouped) != len(set(grouped)) or set(grouped) != {id(p) for p in trainable}:
        raise ValueError(
            f"optimizer groups cover {len(set(grouped))} tensors ({len(grouped)} with repeats) but the model "
            f"has {len(trainable)} trainable tensors; prepended_parameters()/added_parameters() are inconsistent."
        )
    return groups


def _trainable(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in params if p.requires_grad]


def build_optimizer(
    model: nn.Module,
    *,
    learning_rate: float,
    added_embedding_lr: float | None,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """torch AdamW over ``parameter_groups``; every hyper-parameter passed explicitly."""
    groups = parameter_groups(model, learning_rate, added_embedding_lr)
    for group in groups:
        count = sum(p.numel() for p in group["params"])
        logger.info("optimizer group %-9s lr=%g  params=%d", group["name"], group["lr"], count)
    return torch.optim.AdamW(
        groups, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False
    )


def build_linear_schedule(
    optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear ramp 0 -> peak over ``num_warmup_steps``, then linear decay to 0 at ``num_training_steps``.

    ``num_training_steps`` must be the real number of optimizer steps (docs/fidelity.md#f-schedule: the original passed
    -1 without ``--max_steps``, which made the learning rate 0 after warm-up).
    """
    if num_training_steps <= 0:
        raise ValueError(f"the schedule needs a positive number of training steps, got {num_training_steps}")
    if num_warmup_steps > num_training_steps:
        logger.warning(
            "warm-up (%d steps) is longer than training (%d steps)", num_warmup_steps, num_training_steps
        )
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps)
