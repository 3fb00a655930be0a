"""param_budget reproduces the papers' T5-base counts and lists the codebooks that fit the budget."""

from __future__ import annotations

import json

import pytest

from scripts import param_budget


def run_json(capsys, *argv: str) -> dict:
    assert param_budget.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_paper_t5_base_counts(capsys):
    rep = run_json(capsys, "--d", "768", "--m", "60", "--L", "256")
    assert rep["r"] == 30  # largest rank within the added budget 40 * 768
    assert rep["budget"] == {"tokens": 100, "prepended": 46_080, "added": 30_720, "total": 76_800}
    totals = {row["method"]: (row["prepended"], row["added"], row["total"]) for row in rep["methods"]}
    assert totals == {
        "PT": (76_800, 0, 76_800),
        "DePT": (46_080, 30_720, 76_800),
        "ACCEPT-SCPP": (44_160, 30_720, 74_880),  # SCPP (32, 20) + r = 30: the paper's 74.9K
        "ACCEPT-SCAP": (46_080, 30_720, 76_800),
        "ACCEPT": (44_160, 30_720, 74_880),
        "DPT": (76_384, 0, 76_384),  # m = 100, r = 88: 88 * (100 + 768)
        "ULPT": (76_736, 0, 76_736),  # m = 100, r = 752: 100 * 752 + 2 * 768
        "ADePT": (46_080, 29_971, 76_051),  # m = 60, r = 19: 19 * (2 * 768 + 1) + 768 (the paper's r)
    }
    assert all(row["within_budget"] for row in rep["methods"])
    scap = [(o["sub_dim"], o["codebook_size"], o["params"]) for o in rep["scap_options"]]
    assert (256, 20, 30_720) in scap and all(p <= 30_720 for _, _, p in scap)
    assert [o["params"] for o in rep["scap_options"]] == sorted((o["params"] for o in rep["scap_options"]), reverse=True)
    marked = {(o["sub_dim"], o["codebook_size"]) for o in rep["scpp_options"] if o["paper"]}
    assert marked == {(32, 20), (16, 12), (8, 7)}
    assert next(o for o in rep["scap_options"] if o["paper"] and o["sub_dim"] == 256)["codebook_size"] == 20


def test_explicit_configs_and_budgets(capsys):
    rep = run_json(capsys, "--d", "768", "--m", "60", "--L", "256", "--r", "45", "--scpp", "8", "7")
    accept_scpp = next(row for row in rep["methods"] if row["method"] == "ACCEPT-SCPP")
    assert (accept_scpp["prepended"], accept_scpp["added"]) == (45_696, 45 * (256 + 768))
    assert accept_scpp["within_budget"] is False  # r = 45 exceeds the 30,720 added budget at m = 60
    rep = run_json(capsys, "--d", "512", "--m", "40", "--prepended_budget", "20000", "--added_budget", "30720")
    assert rep["budget"]["prepended"] == 20_000
    assert all(o["params"] <= 20_000 for o in rep["scpp_options"])
    # t5-small BoolQ script: SCPP (32, 17) at m = 40 is 19,584, marked as a paper configuration
    assert {"sub_dim": 32, "codebook_size": 17, "num_subspaces": 16, "params": 19_584,
            "paper": "ACCEPT t5-small BoolQ script"} in rep["scpp_options"]


def test_model_folder_gives_width(tmp_path, capsys):
    from transformers import T5Config

    T5Config(d_model=48, num_layers=1, num_heads=2, d_kv=8, d_ff=16).save_pretrained(tmp_path)
    rep = run_json(capsys, "--model", str(tmp_path), "--m", "10", "--L", "20")
    assert rep["d"] == 48
    pt = next(row for row in rep["methods"] if row["method"] == "PT")
    assert pt["total"] == 100 * 48


@pytest.mark.parametrize("argv", [["--model", "./no-such-model-folder"], ["--d", "768", "--scpp", "33", "4"]])
def test_clear_errors(tmp_path, capsys, argv):
    assert param_budget.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "no-such-model-folder" in err or "--scpp SUB_DIM 33 does not divide" in err


def test_folder_without_config_is_a_clear_error(tmp_path, capsys):
    assert param_budget.main(["--model", str(tmp_path)]) == 2
    assert "cannot read the config of" in capsys.readouterr().err


def test_text_output(capsys):
    assert param_budget.main(["--d", "768"]) == 0
    out = capsys.readouterr().out
    assert "| ACCEPT-SCPP | SCPP (32, 20), r=30 | 44,160 | 30,720 | 74,880 | yes |" in out
    assert "| 256 | 20 | 3 | 30,720 | ACCEPT T5-base 74.9K added part (inferred: 30,720) |" in out


def test_grid_is_the_budget_of_peft_budget():
    """The MiniLM demo's grid (d=384, L=128, PT m=20, DePT/ACCEPT m=12) worked out by hand."""
    from peft.budget import count_adapter_params, largest_rank, paper_budget
    from scripts._grid import method_grid

    budget = paper_budget(384, 12, budget_tokens=20)
    assert (budget.prepended, budget.added) == (4_608, 3_072)
    assert largest_rank(128, 384, 3_072) == 6  # 6 * (128 + 384) = 3,072 exactly
    grid = {g.name: g for g in method_grid(384, 128, 12, pt_tokens=20)}
    counts = {name: (g.count.prepended, g.count.added) for name, g in grid.items()}
    assert counts == {
        "PT": (7_680, 0),
        "DePT": (4_608, 3_072),
        "ACCEPT-SCPP": (4_608, 3_072),  # SCPP s=4, C=3: K=96, 96 * 3 * (12 + 4)
        "ACCEPT-SCAP": (4_608, 3_072),  # SCAP s=128, C=4: K=3, 3 * 4 * (128 + 128)
        "ACCEPT": (4_608, 3_072),
    }
    for g in grid.values():
        kwargs = {k: v for k, v in g.config.items() if k != "peft_type"}
        with_added = g.config["peft_type"] != "PROMPT_TUNING"
        assert g.count == count_adapter_params(dim=384, max_length=128, with_added=with_added, **kwargs)
        assert g.within(budget)
    assert grid["ACCEPT"].flags() == (
        "--peft_type", "PROMPT_TUNING_LORA", "--prefix_length", "12", "--r", "6", "--scpp", "True",
        "--sub_dim_scpp", "4", "--codebook_size_scpp", "3", "--scap", "True", "--sub_dim_scap", "128",
        "--codebook_size_scap", "4",
    )  # fmt: skip


def test_minilm_family_methods_at_matched_budgets():
    """The demo/benchmark specs of DPT, ULPT and ADePT: the grid's counts plus the head, within PT's budget;
    the demo's --family flag adds them to its four methods."""
    from scripts import demo
    from scripts.minilm_runs import LearningRates, head_params, method_specs

    lrs = LearningRates()
    specs = {s.name: s for s in method_specs(384, 128, 2, 20, 12, lrs, names=("PT", "DPT", "ULPT", "ADePT"))}
    head = head_params(384, 2)
    assert specs["DPT"].trainable == 19 * (20 + 384) + head  # m = 20, largest r within 20 * 384
    assert specs["ULPT"].trainable == 20 * 345 + 2 * 384 + head
    assert specs["ADePT"].trainable == 12 * 384 + 3 * (2 * 384 + 1) + 384 + head  # r = 3 within 8 * 384
    assert all(s.trainable <= specs["PT"].trainable for s in specs.values())
    assert specs["ADePT"].added_lr == lrs.lowrank_added and specs["ULPT"].added_lr is None
    assert "--lodim_r" in specs["ULPT"].flags and "PROMPT_TUNING_LORAX" in specs["ADePT"].flags
    assert demo.parse_args(["--family"]).methods == ["head-only", "PT", "DePT", "ACCEPT", "DPT", "ULPT", "ADePT"]
    assert demo.parse_args([]).methods == ["head-only", "PT", "DePT", "ACCEPT"]


def test_published_family_ranks(capsys):
    """--lodim_r / --adept_r count the published settings: ULPT r = 2 (2.3% of PT), ADePT r = 19."""
    rep = run_json(capsys, "--d", "768", "--m", "60", "--lodim_r", "2", "--adept_r", "19")
    totals = {row["method"]: row["total"] for row in rep["methods"]}
    assert (totals["ULPT"], totals["DPT"], totals["ADePT"]) == (1_736, 1_736, 76_051)
