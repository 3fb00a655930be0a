"""``scripts/cost.py``: the FLOP model, the cost of a run from its length distribution, measured ratios."""

from __future__ import annotations

import json

import pytest

from scripts import cost

GLUE = cost.TABLES[0]
LLAMA = cost.TABLES[-1]


def test_shapes_have_the_published_parameter_counts():
    assert cost.T5_BASE.layer() * 12 == 84_934_656  # T5-base encoder without embeddings
    assert cost.T5_BASE.layer(cross=True) * 12 == 113_246_208  # its decoder
    assert cost.LLAMA2_7B.layer() * 32 == 6_476_005_376  # Llama-2-7B without embeddings and head


def test_row_flops_counts_two_flops_per_weight_and_token_plus_attention():
    s, shape = 316, cost.LLAMA2_7B
    expected = 2 * s * 6_476_005_376 + 32 * 4 * s * s * 4096 + 2 * s * 4096 * 32000
    assert cost.row_flops(shape, s, 3) == expected
    t5 = cost.row_flops(cost.T5_BASE, s, 3)
    assert t5 == pytest.approx(2 * s * 84_934_656 * (1 + 4 * s * 768 * 12 / (2 * 84_934_656)), rel=0.03)


@pytest.fixture
def args():
    return cost.parse_args(["--data_dir", "unused", "--tokenizer", "unused"])


@pytest.mark.parametrize("table", [GLUE, LLAMA], ids=["t5", "llama"])
def test_dynamic_padding_cost_follows_the_length_distribution(table, args, t5_tokenizer, monkeypatch):
    short = [8 + i % 40 for i in range(640)]  # sst2-like: short rows, a few long ones
    monkeypatch.setattr(cost, "lengths", lambda *a: (short, short))
    run = cost.task_cost(table, "sst2", args, t5_tokenizer)
    monkeypatch.setattr(cost, "lengths", lambda *a: None)  # no data: every row assumed at L
    at_l = cost.task_cost(table, "sst2", args, t5_tokenizer)
    hours = {p: run[p]["train_h"] + run[p]["eval_h"] for p in ("fixed", "dynamic", "dynamic+grouped")}
    assert run["fixed"] == at_l["fixed"]  # padding to L costs the same whatever the lengths
    assert hours["dynamic+grouped"] < hours["dynamic"] < hours["fixed"] / 2
    assert at_l["dynamic"]["train_h"] == pytest.approx(at_l["fixed"]["train_h"])
    assert 8 < run["dynamic+grouped"]["batch_length"] < run["dynamic"]["batch_length"] <= 47
    # 30,000 steps x 1000-step evaluations of the 1,000 held-out rows, then validation and the 872 test rows
    assert (
        run["steps"] == 30_000
        and cost.eval_rows("sst2") == (1000, 872)
        and cost.eval_rows("rte") == (138, 139)
    )


def test_measured_ratios_fill_the_tables(args, t5_tokenizer, tmp_path, monkeypatch):
    bench = tmp_path / "bench.json"
    rows = [{"ratio": "sst2: fixed L / dynamic step", "method": "ACCEPT", "value": 2.0},
            {"ratio": "sst2: fixed L / dynamic+grouped step", "method": "ACCEPT", "value": 4.0},
            {"ratio": "sst2: fixed L / dynamic step", "method": "DePT", "value": 9.0}]  # fmt: skip
    bench.write_text(json.dumps({"decoder_ratios": rows}))
    ratios = cost.measured_ratios([str(bench)])
    assert ratios == {("Llama", "sst2", "dynamic"): 2.0, ("Llama", "sst2", "dynamic+grouped"): 4.0}
    monkeypatch.setattr(cost, "lengths", lambda *a: None)
    run = cost.task_cost(LLAMA, "sst2", args, t5_tokenizer)
    text = cost.render(
        [(LLAMA, [run]), (GLUE, [cost.task_cost(GLUE, "sst2", args, t5_tokenizer)])], ratios, args
    )
    applied = run["fixed"]["train_h"] / 4.0 + run["dynamic+grouped"]["eval_h"]
    assert f"4.00x: {applied:.1f} h" in text
    assert "not measured" in text  # the T5 table has no measured ratio yet
