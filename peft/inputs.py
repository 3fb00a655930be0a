"""Input construction: the prompt and the added update around a batch's input embeddings, per family.

One adapter (docs/fidelity.md#f-combine): ``[prompt (m rows) ; E[x] + update]`` with the attention mask
prefixed by m ones; the prompt goes before input position ``family.prompt_position`` and the update
meets the input from the end for left-padded decoder-only batches (``PromptAdapter.add_update``).

One adapter per row: every group of rows gets its adapter's inputs, and the groups are stacked into
one batch padded to its longest row with masked positions, after the row, or in front of it for
left-padded families; masked positions take no attention weight, so every row computes what it
computes alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .encoders import PromptAdapter
from .errors import AdapterConfigError, InputLengthError
from .family import Family


def check_length(n: int, max_length: int | None) -> None:
    """InputLengthError when n input positions exceed the L rows of an adapter's added update."""
    if max_length is not None and n > max_length:
        raise InputLengthError(
            f"Input length {n} exceeds max_length L={max_length} of the added update; truncate the inputs "
            f"to {max_length} tokens or build the adapter with a larger max_length."
        )


def check_position_limit(model_config: Any, num_virtual_tokens: int, max_length: int | None) -> None:
    """AdapterConfigError when the m prompt rows plus L input positions exceed the model's position
    embeddings (``max_position_embeddings``; models without absolute positions, e.g. T5, have no limit)."""
    limit = getattr(model_config, "max_position_embeddings", None)
    needed = num_virtual_tokens + (max_length or 0)
    if isinstance(limit, int) and needed > limit:
        raise AdapterConfigError(
            f"max_length {max_length} + num_virtual_tokens {num_virtual_tokens} = {needed} exceeds the "
            f"model's max_position_embeddings {limit}; reduce one of them.",
            field=("max_length", "num_virtual_tokens"),
        )


def fill_prompt_positions(per_token: torch.Tensor, m: int, value: int, family: Family) -> torch.Tensor:
    """(B, n) -> (B, m + n): ``value`` at the m prompt positions (mask 1, label -100, token type 0)."""
    k = family.prompt_position
    fill = torch.full((per_token.shape[0], m), value, dtype=per_token.dtype, device=per_token.device)
    return torch.cat([per_token[:, :k], fill, per_token[:, k:]], dim=1)


def prepend(
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    adapter: PromptAdapter | None,
    family: Family,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, m + n, d) embeddings ``[prompt ; E[x] + update]`` and the (B, m + n) mask; the adapter is
    composed once per call. Without an adapter (the bare backbone) the inputs pass unchanged."""
    if adapter is None:
        return inputs_embeds, attention_mask
    batch, n = inputs_embeds.shape[:2]
    check_length(n, adapter.max_length)
    inputs_embeds = adapter.add_update(inputs_embeds, from_end=family.pads_left)
    prompt = adapter.composed_prompt().to(inputs_embeds.dtype)
    m = prompt.shape[0]
    prompt = prompt.unsqueeze(0).expand(batch, m, prompt.shape[1])
    k = family.prompt_position
    embeds = torch.cat([inputs_embeds[:, :k], prompt, inputs_embeds[:, k:]], dim=1)
    return embeds, fill_prompt_positions(attention_mask, m, 1, family)


def layout_position_ids(m: int, n: int, max_length: int | None, device: torch.device) -> torch.Tensor | None:
    """(1, m + n) position ids of m prompt and n input columns placed at the end of a left-padded
    L-column layout: 0..m-1 for the prompt, then m + (L - n) + q for input column q.

    ``None`` when the batch already has L columns (or no L is known): the base model's default
    ``arange(m + n)`` is then that layout.
    """
    if not max_length or n >= max_length:
        return None
    prompt = torch.arange(m, device=device)
    inputs = torch.arange(m + max_length - n, m + max_length, device=device)
    return torch.cat([prompt, inputs]).unsqueeze(0)


def fitting_columns(attention_mask: torch.Tensor, max_length: int | None, family: Family) -> slice:
    """The input columns a group of rows keeps so that it fits an update of length L.

    A mixed batch is padded to its longest row, which may exceed a shorter adapter's L; when the extra
    columns are padding for every row of the group (the last columns, or the first ones for left
    padding), they are dropped, which leaves each row's result unchanged.
    """
    n = attention_mask.shape[1]
    if max_length is None or n <= max_length:
        return slice(None)
    extra = slice(0, n - max_length) if family.pads_left else slice(max_length, None)
    if bool(attention_mask[:, extra].any()):
        return slice(None)  # real tokens there: check_length reports the length
    return slice(n - max_length, None) if family.pads_left else slice(0, max_length)


def group_rows(adapter_names: Sequence[str], batch: int, known: Collection[str]) -> dict[str, list[int]]:
    """Adapter name -> row indices (first-appearance order); ValueError for a wrong count or name."""
    if len(adapter_names) != batch:
        raise ValueError(f"adapter_names has {len(adapter_names)} entries for a batch of {batch} rows.")
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(adapter_names):
        if name not in known:
            raise ValueError(
                f"adapter_names[{row}] = {name!r} is not one of this model's adapters {sorted(known)}."
            )
        groups.setdefault(name, []).append(row)
    return groups


@dataclass
class RowGroup:
    """The rows of a mixed batch that share one adapter.

    Attributes:
        rows: their indices in the batch.
        adapter: their adapter, or None for the bare backbone.
        layout_length: the config's max_length L (also for PT, whose inputs are laid out to L), or None.
    """

    rows: list[int]
    adapter: PromptAdapter | None
    layout_length: int | None


def prepend_rows(
    inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, groups: Sequence[RowGroup], family: Family
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each row with its own adapter: (embeds (B, T, d), mask (B, T), position ids (B, T) or None).

    T is the longest prompt-plus-input of the batch; a shorter row gets masked zero positions after
    it, or before it when the family pads left, and then position ids give each row the positions it
    has alone (None when the default ``arange`` is already right).
    """
    batch, _, dim = inputs_embeds.shape
    device = inputs_embeds.device
    pieces = []
    for group in groups:
        index = torch.tensor(group.rows, device=device)
        max_length = group.adapter.max_length if group.adapter is not None else None
        columns = fitting_columns(attention_mask[index], max_length, family)
        embeds = inputs_embeds[index][:, columns]
        n = embeds.shape[1]
        embeds, mask = prepend(embeds, attention_mask[index][:, columns], group.adapter, family)
        positions = None
        if family.pads_left:
            positions = layout_position_ids(embeds.shape[1] - n, n, group.layout_length, device)
        pieces.append((index, embeds, mask, positions))
    longest = max(embeds.shape[1] for _, embeds, _, _ in pieces)
    out = inputs_embeds.new_zeros(batch, longest, dim)
    out_mask = attention_mask.new_zeros(batch, longest)
    out_positions = torch.zeros(batch, longest, dtype=torch.long, device=device)
    default_positions = True
    for index, embeds, mask, positions in pieces:
        width = embeds.shape[1]
        start = longest - width if family.pads_left else 0
        out[index, start : start + width] = embeds
        out_mask[index, start : start + width] = mask
        default_positions = default_positions and positions is None and start == 0
        if positions is None:
            positions = torch.arange(width, device=device).unsqueeze(0)
        out_positions[index, start : start + width] = positions
    if not family.pads_left or default_positions:
        return out, out_mask, None
    return out, out_mask, out_positions
