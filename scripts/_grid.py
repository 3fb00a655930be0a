"""The PT / DePT / ACCEPT method grid at matched parameter budgets; every count from ``peft/budget.py``.

Vanilla PT with ``pt_tokens`` tokens fixes the budget ``pt_tokens * d``, split at m: the prepended side
gets ``m * d``, the added side ``(pt_tokens - m) * d`` (``peft.budget.paper_budget``). DePT keeps m
dense tokens and, unless a rank is given, the largest rank r whose A (L x r) B (r x d) fits the added
side. ACCEPT takes on each side the first published codebook that fits, else the solver's largest.
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
    count_adapter_params,
    feasible_codebooks,
    largest_rank,
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
        """PT: total within the budget; the others: each side within its share."""
        if self.name == "PT":
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
                strict: bool = False) -> list[GridMethod]:  # fmt: skip
    """PT, DePT and ACCEPT (SCPP / SCAP / both) at width ``dim``, input length L=``max_length``, m tokens.

    ``budget`` overrides the paper split of ``pt_tokens``; ``r``/``scpp``/``scap`` override the
    defaults above. Methods whose codebook fits nowhere are left out, or raise a ValueError that lists
    the nearest options when ``strict`` (which also refuses a rank below 1).
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
    return [GridMethod(PromptTuningConfig(**config).method_name, config, _count(config, dim, max_length), shape)
            for config, shape in specs]  # fmt: skip


def _count(config: dict[str, Any], dim: int, max_length: int) -> ParamCount:
    kwargs = {k: v for k, v in config.items() if k != "peft_type"}
    with_added = config["peft_type"] != "PROMPT_TUNING"
    return count_adapter_params(dim=dim, max_length=max_length, with_added=with_added, **kwargs)
