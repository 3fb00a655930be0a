"""Trainable parameters of PT, DPT, ULPT, DePT, ADePT and ACCEPT for a model width, and the codebooks that
fit the budget.

All counts come from ``peft/budget.py`` (the same code the model wrappers use). The budget rule is
the papers': never more than vanilla prompt tuning with 100 tokens, split at m (prepended side
<= m*d, added side <= (100 - m)*d); ``--prepended_budget`` / ``--added_budget`` override it.

Usage::

    python scripts/param_budget.py --d 768 --m 60 --L 256            # T5-base, GLUE setting
    python scripts/param_budget.py --model t5-small --m 40 --json    # hub id or local model folder
    python scripts/param_budget.py --d 768 --lodim_r 2               # ULPT / DPT at the published rank
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

from peft.budget import (  # noqa: E402
    PT_BUDGET_TOKENS,
    Budget,
    CodebookOption,
    feasible_codebooks,
    num_subspaces,
    paper_budget,
)
from scripts._grid import PAPER_SCAP, PAPER_SCPP, ModelConfigError, method_grid, model_width  # noqa: E402
from scripts._tables import markdown_table  # noqa: E402


def options_table(options: list[CodebookOption], d: int, paper: dict[tuple[int, int], str]) -> list[dict[str, Any]]:
    return [{"sub_dim": o.sub_dim, "codebook_size": o.codebook_size, "num_subspaces": num_subspaces(d, o.sub_dim),
             "params": o.params, "paper": paper.get((o.sub_dim, o.codebook_size))} for o in options]  # fmt: skip


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Everything the script prints, as one JSON-able dict."""
    d = args.d if args.d is not None else model_width(args.model)
    paper = paper_budget(d, args.m, args.budget_tokens)
    budget = Budget(prepended=paper.prepended if args.prepended_budget is None else args.prepended_budget,
                    added=paper.added if args.added_budget is None else args.added_budget)  # fmt: skip
    scpp_options = feasible_codebooks(args.m, d, budget.prepended)
    scap_options = feasible_codebooks(args.L, d, budget.added)
    for flag, pair in (("scpp", args.scpp), ("scap", args.scap)):
        if pair:
            num_subspaces(d, pair[0], field=f"--{flag} SUB_DIM")
    grid = method_grid(d, args.L, args.m, pt_tokens=args.budget_tokens, budget=budget, r=args.r,
                       scpp=args.scpp, scap=args.scap, family=True, lodim_r=args.lodim_r,
                       tokenwise_r=args.adept_r)  # fmt: skip
    return {
        "model": args.model, "d": d, "m": args.m, "L": args.L, "r": grid[1].config["r"],  # DePT's
        "budget": {"tokens": args.budget_tokens, "prepended": budget.prepended, "added": budget.added,
                   "total": budget.total},
        "methods": [{"method": g.name, "config": g.shape, "prepended": g.count.prepended, "added": g.count.added,
                     "total": g.count.total, "within_budget": g.within(budget)} for g in grid],
        "scpp_options": options_table(scpp_options, d, PAPER_SCPP),
        "scap_options": options_table(scap_options, d, PAPER_SCAP),
    }


def render(rep: dict[str, Any]) -> str:
    """The counts table and one table of feasible codebooks per side, in Markdown."""
    b = rep["budget"]
    model = f" ({rep['model']})" if rep["model"] else ""
    lines = [f"d={rep['d']}{model}, m={rep['m']}, L={rep['L']}, r={rep['r']}; budget: prepended <= {b['prepended']:,}, "
             f"added <= {b['added']:,}, total {b['total']:,} (= PT with {b['tokens']} tokens unless overridden)", ""]
    lines += markdown_table(["Method", "Configuration", "Prepended", "Added", "Total", "Within budget"],
                            [[r["method"], r["config"], f"{r['prepended']:,}", f"{r['added']:,}", f"{r['total']:,}",
                              "yes" if r["within_budget"] else "NO"] for r in rep["methods"]])
    for side, rows_name, budget in (("SCPP", "m", b["prepended"]), ("SCAP", "L", b["added"])):
        options = [[o["sub_dim"], o["codebook_size"], o["num_subspaces"], f"{o['params']:,}", o["paper"] or ""]
                   for o in rep[f"{side.lower()}_options"]] or [["–", "–", "–", "–", "nothing fits"]]
        lines += ["", f"{side} (sub_dim, codebook_size) within {budget:,} ({rows_name}={rep[rows_name]} rows), "
                      "largest count first:", ""]
        lines += markdown_table(["sub_dim", "codebook_size", "K", "params", "paper"], options)
    return "\n".join(lines) + "\n"  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    width = parser.add_mutually_exclusive_group(required=True)
    width.add_argument("--model", help="hub id or local model folder (d read from its config)")
    width.add_argument("--d", type=int, help="embedding width")
    parser.add_argument("--m", type=int, default=60, help="prompt length (--prefix_length)")
    parser.add_argument("--L", type=int, default=256, help="max input length (--max_seq_length)")
    parser.add_argument("--r", type=int, help="DePT rank (default: the largest within the added budget)")
    parser.add_argument("--lodim_r", type=int, help="DPT/ULPT prompt rank (default: the largest within PT's "
                        "budget; ULPT's paper uses 2)")
    parser.add_argument("--adept_r", type=int, help="ADePT rank (default: the largest within the added budget)")
    parser.add_argument("--budget_tokens", type=int, default=PT_BUDGET_TOKENS)
    parser.add_argument("--prepended_budget", type=int, help="override the prepended-side budget")
    parser.add_argument("--added_budget", type=int, help="override the added-side budget")
    for side in ("scpp", "scap"):
        parser.add_argument(f"--{side}", type=int, nargs=2, metavar=("SUB_DIM", "CODEBOOK_SIZE"),
                            help=f"{side.upper()} configuration to count (default: a paper one that fits, else the largest)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rep = report(args)
    except (ModelConfigError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    sys.stdout.write(json.dumps(rep, indent=1) + "\n" if args.json else render(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
