"""Trainable-parameter accounting for every (prompt kind, update kind) pair, and the budget solvers.

This is the single place where parameter counts are computed from shapes; the model wrappers,
``train.py``, ``scripts/param_budget.py`` and the tests all use it.

Notation (see the README): d = embedding width, m = prompt length, L = max input length,
r = DePT / ADePT rank, r_p = DPT / ULPT prompt rank (``--lodim_r``), s = codebook sub-dimension,
C = codewords per codebook, K = d / s subspaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import AdapterConfigError

PT_BUDGET_TOKENS = 100
"""The paper's budget rule: the total never exceeds vanilla prompt tuning with 100 tokens."""


def divisors_near(dim: int, wanted: int, count: int = 6, include: int | None = None) -> list[int]:
    """The ``count`` divisors of ``dim`` closest to ``wanted`` (by ratio), ascending, plus ``include``
    when it divides ``dim`` (a flag's default)."""
    divisors = [s for s in range(1, dim + 1) if dim % s == 0]
    nearest = sorted(divisors, key=lambda s: (abs(math.log(s / max(wanted, 1))), s))[:count]
    if include is not None and include >= 1 and dim % include == 0:
        nearest.append(include)
    return sorted(set(nearest))


def num_subspaces(dim: int, sub_dim: int, field: str = "sub_dim", default: int | None = None) -> int:
    """K = d / s; raise an ``AdapterConfigError`` naming the config ``field`` when s does not divide d.

    The message suggests the divisors of d nearest to the request, and ``default`` (the field's default)
    when it divides d.
    """
    if sub_dim < 1:
        raise AdapterConfigError(f"{field} must be >= 1, got {sub_dim}.", field)
    if dim % sub_dim != 0:
        near = ", ".join(str(s) for s in divisors_near(dim, sub_dim, include=default))
        note = f" (default {default})" if default is not None and dim % default == 0 else ""
        raise AdapterConfigError(
            f"{field} {sub_dim} does not divide the model width d={dim}; "
            f"divisors of {dim} near {sub_dim}: {near}{note}.",
            field,
        )
    return dim // sub_dim


def codebook_params(num_rows: int, dim: int, sub_dim: int, codebook_size: int) -> int:
    """Parameters of a codebook matrix: weights (n, K, C) + codebooks (K, C, s) = K*C*(n + s)."""
    k = num_subspaces(dim, sub_dim)
    return k * codebook_size * (num_rows + sub_dim)


def prompt_params(num_virtual_tokens: int, dim: int) -> int:
    """Dense prepended prompt: m x d."""
    return num_virtual_tokens * dim


def low_rank_params(max_length: int, dim: int, r: int) -> int:
    """DePT's added update A (L x r) and B (r x d): r * (L + d)."""
    return r * (max_length + dim)


def low_rank_prompt_params(num_virtual_tokens: int, dim: int, rank: int) -> int:
    """DPT's prompt Z (m x r_p) W (r_p x d), both trained: r_p * (m + d)."""
    return rank * (num_virtual_tokens + dim)


def random_projection_prompt_params(num_virtual_tokens: int, dim: int, rank: int) -> int:
    """ULPT's prompt s * (Z W) + b: Z (m x r_p) and the d-vectors s, b trained, W frozen: m * r_p + 2d."""
    return num_virtual_tokens * rank + 2 * dim


def tokenwise_params(dim: int, r: int) -> int:
    """ADePT's update ReLU(e A + a) B + b: A (d x r), a (r), B (r x d), b (d): r * (2d + 1) + d."""
    return r * (2 * dim + 1) + dim


PROMPT_KINDS = ("dense", "codebook", "lowrank", "random_projection")
"""The prepended prompt: dense (PT), codebook (ACCEPT's SCPP), lowrank (DPT), random_projection (ULPT)."""
UPDATE_KINDS = ("none", "lowrank", "codebook", "tokenwise")
"""The added update: none, lowrank (DePT), codebook (ACCEPT's SCAP), tokenwise (ADePT)."""
POSITION_WISE_UPDATES = ("lowrank", "codebook")
"""Updates with one row per input position (they need L); tokenwise is a function of each embedding."""


@dataclass(frozen=True)
class ParamCount:
    """Trainable parameters per component of a prompt adapter (the head is for classifiers)."""

    prepended: int
    added: int
    head: int = 0

    @property
    def total(self) -> int:
        return self.prepended + self.added + self.head

    def table(self, title: str, all_parameters: int) -> str:
        """Lines of the count per component and its share of ``all_parameters``, under ``title``."""
        rows = [("prepended", self.prepended), ("added", self.added)]
        rows += [("head", self.head)] if self.head else []
        rows.append(("total", self.total))
        lines = [title] + [f"  {name:<10} {value:>12,}" for name, value in rows]
        lines.append(f"  of all     {all_parameters:>12,} ({100 * self.total / max(all_parameters, 1):.4f}%)")
        return "\n".join(lines)


def count_adapter_params(
    *,
    dim: int,
    num_virtual_tokens: int,
    max_length: int = 0,
    r: int = 0,
    with_added: bool = True,
    scpp: bool = False,
    scap: bool = False,
    sub_dim_scpp: int = 16,
    codebook_size_scpp: int = 12,
    sub_dim_scap: int = 32,
    codebook_size_scap: int = 4,
    prompt_kind: str | None = None,
    update_kind: str | None = None,
    lodim_r: int = 0,
) -> ParamCount:
    """Count trainable adapter parameters from the method's shapes (docs/fidelity.md#f-budget).

    ``prompt_kind``/``update_kind`` (``PROMPT_KINDS``/``UPDATE_KINDS``) pick the two slots; left out, they
    follow the DePT/ACCEPT switches: codebook prompt when ``scpp``; no update unless ``with_added``, then
    SCAP when ``scap``, else the low-rank A @ B (r may be 0). ULPT's frozen projection is not counted.
    """
    if prompt_kind is None:
        prompt_kind = "codebook" if scpp else "dense"
    if update_kind is None:
        update_kind = "none" if not with_added else ("codebook" if scap else "lowrank")
    prompt_counts = {
        "dense": lambda: prompt_params(num_virtual_tokens, dim),
        "codebook": lambda: codebook_params(num_virtual_tokens, dim, sub_dim_scpp, codebook_size_scpp),
        "lowrank": lambda: low_rank_prompt_params(num_virtual_tokens, dim, lodim_r),
        "random_projection": lambda: random_projection_prompt_params(num_virtual_tokens, dim, lodim_r),
    }
    update_counts = {
        "none": lambda: 0,
        "lowrank": lambda: low_rank_params(max_length, dim, r),
        "codebook": lambda: codebook_params(max_length, dim, sub_dim_scap, codebook_size_scap),
        "tokenwise": lambda: tokenwise_params(dim, r),
    }
    if prompt_kind not in prompt_counts:
        raise ValueError(f"--prompt_kind {prompt_kind!r} is not one of {PROMPT_KINDS}.")
    if update_kind not in update_counts:
        raise ValueError(f"--update_kind {update_kind!r} is not one of {UPDATE_KINDS}.")
    return ParamCount(prepended=prompt_counts[prompt_kind](), added=update_counts[update_kind]())


@dataclass(frozen=True)
class Budget:
    """The paper's budget split: prepended side <= m*d, added side <= (100 - m)*d."""

    prepended: int
    added: int

    @property
    def total(self) -> int:
        return self.prepended + self.added


def paper_budget(dim: int, num_virtual_tokens: int, budget_tokens: int = PT_BUDGET_TOKENS) -> Budget:
    """Budget of PT with ``budget_tokens`` tokens, split at m (docs/fidelity.md#f-budget)."""
    if num_virtual_tokens > budget_tokens:
        raise AdapterConfigError(
            f"num_virtual_tokens {num_virtual_tokens} exceeds the budget of {budget_tokens} prompt tokens.",
            "num_virtual_tokens",
        )
    return Budget(prepended=num_virtual_tokens * dim, added=(budget_tokens - num_virtual_tokens) * dim)


@dataclass(frozen=True)
class CodebookOption:
    """One feasible (sub_dim, codebook_size) pair and its parameter count."""

    sub_dim: int
    codebook_size: int
    params: int


def feasible_codebooks(
    num_rows: int, dim: int, budget: int, max_codebook_size: int | None = None
) -> list[CodebookOption]:
    """All (s, C) with s | d and the largest C that fits ``budget``, largest count first.

    For each divisor s of d the codebook size is the largest C >= 1 with K*C*(n + s) <= budget
    (parameter count grows linearly in C, so smaller C are dominated). Options that cannot fit even
    C = 1 are skipped. Ties in the count are broken by smaller s (more subspaces) first.
    """
    options = []
    for sub_dim in (s for s in range(1, dim + 1) if dim % s == 0):
        per_codeword = (dim // sub_dim) * (num_rows + sub_dim)
        size = budget // per_codeword
        if max_codebook_size is not None:
            size = min(size, max_codebook_size)
        if size >= 1:
            options.append(CodebookOption(sub_dim, size, size * per_codeword))
    return sorted(options, key=lambda o: (-o.params, o.sub_dim))


def largest_rank(max_length: int, dim: int, budget: int) -> int:
    """Largest DePT rank r whose A (L x r) and B (r x d) fit ``budget``: r * (L + d) <= budget (0 if none)."""
    return max(budget, 0) // (max_length + dim)


def largest_prompt_rank(prompt_kind: str, num_virtual_tokens: int, dim: int, budget: int) -> int:
    """Largest DPT/ULPT prompt rank r_p whose prompt fits ``budget`` (0 if none).

    DPT: r_p * (m + d) <= budget; ULPT: m * r_p + 2d <= budget (its frozen projection is free).
    """
    if prompt_kind == "lowrank":
        return max(budget, 0) // (num_virtual_tokens + dim)
    if prompt_kind == "random_projection":
        return max(budget - 2 * dim, 0) // num_virtual_tokens
    raise ValueError(f"prompt kind {prompt_kind!r} has no rank; use 'lowrank' or 'random_projection'.")


def largest_tokenwise_rank(dim: int, budget: int) -> int:
    """Largest ADePT rank r whose network fits ``budget``: r * (2d + 1) + d <= budget (0 if none)."""
    return max(budget - dim, 0) // (2 * dim + 1)
