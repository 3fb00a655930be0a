"""The batch former for serving many adapters: requests of similar length share one ``generate`` call.

``PeftModel.generate(..., adapter_names=...)`` runs a mixed batch as one exact call, padded to its
longest row (prompt plus input). On a CPU every padded position costs about as much as a real one, so
rows of a short task padded to a long task's length can cost more than the calls they save. A server
therefore sorts its requests by prompt-plus-input length and cuts the sorted list where one more call
costs less than the padding it saves (``form_batches``); every request's tokens are the same either
way, because each row of a mixed batch gives what it gives alone (tests/test_serving.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .family import new_tokens
from .model import BASE_ADAPTER, PeftModel

CALL_COST = 128
"""The price of one more backbone call, in padded token positions (one row of 128 tokens).

A call has a fixed cost (Python around every layer, for generation also the loop's steps) that a
batch shares. 128 is a middle value: on 2 CPU cores the serving benchmark (docs/benchmarks.md, "Serving
many adapters") ran tiny T5 best between 32 and 128 and T5-small widths within noise from 32 to 128,
and worse at 512. It only moves where batches are cut: every request's result is the same either way.
"""


def form_batches(
    lengths: Sequence[int], call_cost: float = CALL_COST, max_batch_size: int | None = None
) -> list[list[int]]:
    """Request indices grouped into batches of similar length, each batch one call.

    The requests are sorted by length and cut into contiguous batches of at most ``max_batch_size``
    minimising the sum over batches of ``call_cost + rows * longest`` (exact, by dynamic programming
    over the cut points: O(B^2) for B requests). Batches come shortest first; requests keep their
    order inside a batch.

    >>> form_batches([10, 100, 12, 98], call_cost=20)
    [[0, 2], [1, 3]]
    >>> form_batches([10, 100, 12, 98], call_cost=1000)
    [[0, 1, 2, 3]]
    """
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}.")
    order = sorted(range(len(lengths)), key=lambda row: (lengths[row], row))
    ordered = [lengths[row] for row in order]
    widest = max_batch_size or len(order)
    best = [0.0] + [float("inf")] * len(order)
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = ordered[end - 1]
        for start in range(max(0, end - widest), end):
            cost = best[start] + call_cost + (end - start) * longest
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    batches, end = [], len(order)
    while end > 0:
        start = start_of[end]
        batches.append(sorted(order[start:end]))
        end = start
    return batches[::-1]


def prompt_length(model: PeftModel, adapter_name: str) -> int:
    """m of an adapter of ``model`` (0 for ``"__base__"`` rows, which run on the bare backbone)."""
    return 0 if adapter_name == BASE_ADAPTER else model.peft_config[adapter_name].num_virtual_tokens


def request_lengths(
    model: PeftModel, input_lengths: Sequence[int], adapter_names: Sequence[str]
) -> list[int]:
    """Prompt-plus-input length of every request: the positions it occupies in a batch."""
    return [n + prompt_length(model, name) for n, name in zip(input_lengths, adapter_names, strict=True)]


def _trimmed(attention_mask: torch.Tensor, pads_left: bool) -> slice:
    """The columns of a batch up to its longest row (from its first real column for left padding)."""
    real = torch.nonzero(attention_mask.any(dim=0)).flatten()
    if real.numel() == 0:
        return slice(None)
    return slice(int(real[0]), None) if pads_left else slice(0, int(real[-1]) + 1)


def generate_in_batches(
    model: PeftModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    adapter_names: Sequence[str],
    call_cost: float = CALL_COST,
    max_batch_size: int | None = None,
    **generate_kwargs: Any,
) -> list[torch.Tensor]:
    """The new tokens (1-D) of every request, in request order, from one ``generate`` call per batch.

    ``input_ids`` / ``attention_mask`` (B, n) hold the requests padded on the family's side; each batch
    (``form_batches``) is cut to its own longest row before its call. A row that stops early ends
    where its call ends, so rows may differ in length; a row's tokens up to its end are those of one
    call over all requests and of the row alone.
    """
    lengths = request_lengths(model, attention_mask.sum(dim=1).tolist(), adapter_names)
    out: list[torch.Tensor | None] = [None] * len(adapter_names)
    for rows in form_batches(lengths, call_cost, max_batch_size):
        index = torch.tensor(rows, device=input_ids.device)
        columns = _trimmed(attention_mask[index], model.family.pads_left)
        ids, mask = input_ids[index][:, columns], attention_mask[index][:, columns]
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            adapter_names=[adapter_names[r] for r in rows],
            **generate_kwargs,
        )
        for row, tokens in zip(rows, new_tokens(generated, ids, model.family), strict=True):
            out[row] = tokens
    return out
