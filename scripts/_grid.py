"""The method grid at matched parameter budgets; every count from ``peft/budget.py``.

Vanilla PT with ``pt_tokens`` tokens fixes the budget ``pt_tokens * d``, split at m: the prepended side
gets ``m * d``, the added side ``(pt_tokens - m) * d`` (``peft.budget.paper_budget``). DePT keeps m
dense tokens and, unless a rank is given, the largest rank r whose A (L x r) B (r x d) fits the added
side. ACCEPT takes on each side the first published codebook that fits, else the solver's largest.
With ``family``: DPT and ULPT, prompt-only like PT, keep PT's ``pt_tokens`` rows and take the largest
prompt rank (at most d) whose count fits PT's whole budget; ADePT keeps m dense tokens and the largest
rank whose token-wise network fits the added side.
The demo, the accuracy benchmark, the speed benchmark and ``param_budget.py`` all build their methods
here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft.budget import (
    PT_BUDGET_TOKENS,
    Budget,
    CodebookOption,
    ParamCount,
    feasible_codebooks,
    largest_prompt_rank,
    largest_rank,
    largest_tokenwise_rank,
    paper_budget,
)
from peft.config import PromptTuningConfig

PAPER_SCPP = {
    (32, 20): "ACCEPT T5-base 74.9K (run_qnli_pq_prompt.sh)",
    (16, 12): "ACCEPT code default; BoolQ script alternative",
    (8, 7): "ACCEPT BoolQ script alternative",
    (32, 17): "ACCEPT t5-small BoolQ script",
}
"""Published / released (sub_dim, codebook_size) of SCPP, in order of preference for the default."""

PAPER_SCAP = {
    (256, 20): "ACCEPT T5-base 74.9K added part (inferred: 30,720)",
    (256, 30): "ACCEPT t5-small BoolQ script",
    (32, 4): "ACCEPT code default",
}
"""Published / released (sub_dim, codebook_size) of SCAP."""

class ModelConfigError(RuntimeError):
    """The model's config could not be read (offline hub id, typo, folder without config.json)."""


def model_width(model: str) -> int:
    """Embedding width d of a hub id or local folder (``hidden_size``; T5's ``d_model`` maps to it)."""
    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise ModelConfigError(f"model folder {model!r} does not exist; pass a model folder, a hub id or --d")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except Exception as err:  # hub/network/parse errors come as many types; all mean "no config"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelConfigError(f"cannot read the config of {model!r} ({type(err).__name__}: {first}). Without "
                               "internet only local model folders work: pass a folder with config.json, or give "
                               "the width with --d.") from err  # fmt: skip
    width = getattr(config.get_text_config(), "hidden_size", None)
    if not width:
        raise ModelConfigError(f"the config of {model!r} has no hidden_size/d_model; pass --d")
    return int(width)


_FLAG_NAMES = {"num_virtual_tokens": "prefix_length"}
"""``PromptTuningConfig`` fields whose ``train.py`` flag has another name."""


@dataclass(frozen=True)
class GridMethod:
    """One method: its ``PromptTuningConfig`` fields, its count and a short description of its shape."""

    name: str
    config: dict[str, Any]
    count: ParamCount
    shape: str

    def flags(self) -> tuple[str, ...]:
        """The ``train.py`` flags that select this adapter."""
        out: list[str] = []
        for key, value in self.config.items():
            out += [f"--{_FLAG_NAMES.get(key, key)}", str(value)]
        return tuple(out)

    def within(self, budget: Budget) -> bool:
        """Prompt-only methods (PT, DPT, ULPT): total within the budget; the others: each side within its share."""
        if self.count.added == 0:
            return self.count.total <= budget.total
        return self.count.prepended <= budget.prepended and self.count.added <= budget.added


def default_codebook(options: list[CodebookOption], paper: dict[tuple[int, int], str]) -> tuple[int, int] | None:
    """The first paper configuration that is feasible, else the largest feasible option (None if none)."""
    feasible = [(o.sub_dim, o.codebook_size) for o in options]
    return next((pair for pair in paper if pair in feasible), feasible[0] if feasible else None)


def _no_codebook(side: str, num_rows: int, dim: int, budget: int) -> ValueError:
    cheapest = sorted(feasible_codebooks(num_rows, dim, 10**12, max_codebook_size=1), key=lambda o: o.params)
    nearest = [(o.sub_dim, o.codebook_size, o.params) for o in cheapest[:3]]
    return ValueError(f"no {side} codebook of {num_rows} rows at d={dim} fits the budget {budget}; the nearest "
                      f"options (sub_dim, codebook_size, params): {nearest}")  # fmt: skip


def method_grid(dim: int, max_length: int, m: int, *, pt_tokens: int = PT_BUDGET_TOKENS, budget: Budget | None = None,
                r: int | None = None, scpp: tuple[int, int] | None = None, scap: tuple[int, int] | None = None,
                strict: bool = False, family: bool = False, lodim_r: int | None = None,
                tokenwise_r: int | None = None) -> list[GridMethod]:  # fmt: skip
    """PT, DePT and ACCEPT (SCPP / SCAP / both) at width ``dim``, input length L=``max_length``, m tokens;
    with ``family`` also DPT, ULPT and ADePT.

    ``budget`` overrides the paper split of ``pt_tokens``; ``r``/``scpp``/``scap`` override the
    defaults above, ``lodim_r`` the DPT/ULPT prompt rank and ``tokenwise_r`` ADePT's (e.g. the published
    r_p = 2). Methods whose codebook (or rank) fits nowhere are left out, or raise a ValueError that lists
    the nearest options when ``strict`` (which also refuses a DePT rank below 1).
    """
    budget = budget or paper_budget(dim, m, pt_tokens)
    rank = largest_rank(max_length, dim, budget.added) if r is None else r
    if strict and rank < 1:
        raise ValueError(f"no DePT rank fits the added budget {budget.added} with L={max_length} (one rank costs "
                         f"L + d = {max_length + dim}); the nearest option is r=1 with L <= {budget.added - dim} "
                         "(--max_seq_length) or a smaller m")  # fmt: skip
    pairs = {}
    for side, rows, share, given, paper in (("scpp", m, budget.prepended, scpp, PAPER_SCPP),
                                            ("scap", max_length, budget.added, scap, PAPER_SCAP)):  # fmt: skip
        pairs[side] = tuple(given) if given else default_codebook(feasible_codebooks(rows, dim, share), paper)
        if strict and pairs[side] is None:
            raise _no_codebook(side.upper(), rows, dim, share)
    dept = {"peft_type": "PROMPT_TUNING_LORA", "num_virtual_tokens": m, "r": rank}
    codebook = {side: {side: True, f"sub_dim_{side}": pair[0], f"codebook_size_{side}": pair[1]}
                for side, pair in pairs.items() if pair is not None}  # fmt: skip
    specs = [({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": pt_tokens}, f"m={pt_tokens}"),
             (dept, f"m={m}, r={rank}")]  # fmt: skip
    if "scpp" in codebook:
        specs.append(({**dept, **codebook["scpp"]}, f"SCPP {pairs['scpp']}, r={rank}"))
    if "scap" in codebook:
        specs.append(({**dept, **codebook["scap"]}, f"m={m} dense, SCAP {pairs['scap']}"))
    if len(codebook) == 2:
        specs.append(({**dept, **codebook["scpp"], **codebook["scap"]}, f"SCPP {pairs['scpp']} + SCAP {pairs['scap']}"))
    if family:
        specs += _family_specs(dim, m, pt_tokens, budget, strict, lodim_r, tokenwise_r)
    return [GridMethod(PromptTuningConfig(**config).method_name, config, _count(config, dim, max_length), shape)
            for config, shape in specs]  # fmt: skip


def _family_specs(dim: int, m: int, pt_tokens: int, budget: Budget, strict: bool, lodim_r: int | None,
                  tokenwise_r: int | None) -> list[tuple[dict, str]]:  # fmt: skip
    """DPT, ULPT (PT's rows, the whole budget) and ADePT (m rows, the added side) at their largest ranks,
    or at the given ones."""
    specs = []
    for name, peft_type, kind in (("DPT", "PROMPT_TUNING_DPT", "lowrank"),
                                  ("ULPT", "PROMPT_TUNING_LODIM", "random_projection")):  # fmt: skip
        rank = min(largest_prompt_rank(kind, pt_tokens, dim, budget.total), dim) if lodim_r is None else lodim_r
        if rank >= 1:
            config = {"peft_type": peft_type, "num_virtual_tokens": pt_tokens, "lodim_r": rank}
            specs.append((config, f"m={pt_tokens}, r={rank}"))
        elif strict:
            raise ValueError(f"no {name} prompt rank fits the budget {budget.total} with m={pt_tokens} at d={dim}")
    rank = largest_tokenwise_rank(dim, budget.added) if tokenwise_r is None else tokenwise_r
    if rank >= 1:
        specs.append(({"peft_type": "PROMPT_TUNING_LORAX", "num_virtual_tokens": m, "r": rank},
                      f"m={m}, r={rank} token-wise"))  # fmt: skip
    elif strict:
        raise ValueError(f"no ADePT rank fits the added budget {budget.added} at d={dim} (one rank costs 2d + 1 "
                         f"= {2 * dim + 1}, plus d = {dim} once); use a smaller m")  # fmt: skip
    return specs


def _count(config: dict[str, Any], dim: int, max_length: int) -> ParamCount:
    """The count of a grid config, through ``PromptTuningConfig.param_count`` (``peft/budget.py``)."""
    return PromptTuningConfig(**config, max_length=max_length).param_count(dim)
