"""Splitting a mixed-adapter batch into runs of similar length before generation.

A mixed batch is padded to its longest row (prompt plus input), and on a CPU every padded position costs
about as much as a real one: rows of a short task padded to a long task's length can cost more than the
per-adapter calls they replace. Sorting the rows by length and cutting the sorted list where a new call is
cheaper than the padding it saves keeps the fewer, larger calls without most of the padding.
"""

from __future__ import annotations

from collections.abc import Sequence

CALL_COST = 128
"""The price of one more backbone call, in padded token positions (one row of 128 tokens).

A call has a fixed cost (Python around every layer, for generation also the loop's steps) that a
batch shares. 128 is a middle value: on 2 CPU cores the serving benchmark (docs/benchmarks.md, "Serving
many adapters") ran tiny T5 best between 32 and 128 and T5-small widths within noise from 32 to 128,
and worse at 512. It only moves where runs are cut: every row's result is the same either way.
"""


def length_buckets(lengths: Sequence[int], call_cost: float = CALL_COST) -> list[list[int]]:
    """Row indices grouped into runs of similar length, each run one call.

    The rows are sorted by length and cut into contiguous runs minimising the sum over runs of
    ``call_cost + rows * longest`` (exact, by dynamic programming over the cut points: O(B^2) for B rows).
    Runs come shortest first; rows keep their batch order inside a run.

    >>> length_buckets([10, 100, 12, 98], call_cost=20)
    [[0, 2], [1, 3]]
    >>> length_buckets([10, 100, 12, 98], call_cost=1000)
    [[0, 1, 2, 3]]
    """
    order = sorted(range(len(lengths)), key=lambda row: (lengths[row], row))
    ordered = [lengths[row] for row in order]
    best = [0.0] + [float("inf")] * len(order)
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        longest = ordered[end - 1]
        for start in range(end):
            cost = best[start] + call_cost + (end - start) * longest
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    runs, end = [], len(order)
    while end > 0:
        start = start_of[end]
        runs.append(sorted(order[start:end]))
        end = start
    return runs[::-1]
