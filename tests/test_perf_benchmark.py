"""``scripts/benchmark.py --quick`` runs end to end (CI smoke test; timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = {"PT", "DePT", "ACCEPT-SCPP", "ACCEPT-SCAP", "ACCEPT"}


@pytest.mark.slow
def test_benchmark_quick_writes_json_and_markdown(tmp_path):
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick",
           "--tasks", "sst2", "--m_values", "1", "--l_values", "32", "--json", str(out_json), "--markdown", str(out_md)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert set(report) == {"config", "environment", "data", "epoch_batch_length", "train", "evaluation",
                           "scaling", "ratios", "wall_seconds"}  # fmt: skip
    assert report["config"]["quick"] and report["config"]["steps"] == 2
    rows = report["train"]
    assert {(r["method"], r["padding"]) for r in rows} == {
        (m, p) for m in METHODS for p in ("fixed", "dynamic", "dynamic+grouped")
    }
    for row in rows:
        assert {"ms_per_step", "tokens_per_s", "examples_per_s", "peak_memory_mib", "mean_batch_length",
                "trainable_params"} <= set(row)  # fmt: skip
        assert row["ms_per_step"] > 0 and row["steps"] == 2
        assert row["mean_batch_length"] == 64 if row["padding"] == "fixed" else row["mean_batch_length"] <= 64
    assert {r["method"] for r in report["evaluation"]["rows"]} == METHODS
    # materialised evaluation does no composition work; without materialisation SCPP+SCAP run einsum
    assert all(r["composition_calls_in_loop"] == 0 for r in report["evaluation"]["rows"])
    profile = report["evaluation"]["profile"]
    assert profile["einsum_events_materialized"] == 0 < profile["einsum_events_not_materialized"]
    assert [r["m"] for r in report["scaling"]["m"]] == [1] and [r["L"] for r in report["scaling"]["L"]] == [
        32
    ]
    ratios = {(r["ratio"], r["method"]): r["value"] for r in report["ratios"]}
    fixed = {r["method"]: r["ms_per_step"] for r in rows if r["padding"] == "fixed"}
    assert ratios[("m=60 / PT m=100 step (fixed L)", "DePT")] == pytest.approx(fixed["DePT"] / fixed["PT"])
    assert ("sst2: fixed L / dynamic+grouped step", "ACCEPT") in ratios
    assert "### Training step" in out_md.read_text() and "### Step-time ratios" in result.stdout
    assert "<=" not in result.stdout and ">=" not in result.stdout  # targets live in docs/benchmarks.md


@pytest.mark.slow
def test_benchmark_quick_decoder_cases(tmp_path):
    """The Llama-shaped cases: fixed L against dynamic padding per method, and identical predictions."""
    out_json = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--cases", "decoder_train",
           "decoder_evaluation", "--tasks", "sst2", "rte", "--json", str(out_json)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["decoder_config"]["d_model"] == 64 and report["decoder_config"]["num_layers"] == 2
    rows = report["decoder_train"]
    expected = {(m, "sst2", "fixed") for m in METHODS}
    expected |= {(m, t, p) for m in METHODS for t in ("sst2", "rte") for p in ("dynamic", "dynamic+grouped")}
    assert {(r["method"], r["task"], r["padding"]) for r in rows} == expected
    for row in rows:
        assert row["ms_per_step"] > 0 and row["tokens_per_s"] > 0 and row["peak_memory_mib"] >= 0
        assert row["mean_batch_length"] == 64 if row["padding"] == "fixed" else row["mean_batch_length"] <= 64
    ratios = {(r["ratio"], r["method"]) for r in report["decoder_ratios"]}
    assert ("rte: fixed L / dynamic+grouped step", "ACCEPT") in ratios
    evaluation = report["decoder_evaluation"]["rows"]
    assert {r["method"] for r in evaluation} == METHODS
    assert all(r["same_predictions"] == "yes" and r["speedup"] > 0 for r in evaluation)
    assert "### Decoder-only training step" in result.stdout


def test_benchmark_grid_is_the_budget_grid():
    """PT m=100, DePT m=60 r=30 and ACCEPT codebooks within the paper's budget at d=512 (docs/benchmarks.md)."""
    from scripts._grid import method_grid

    totals = {g.name: g.count.total for g in method_grid(512, 256, 60, r=30)}
    assert totals == {
        "PT": 51_200,
        "DePT": 53_760,
        "ACCEPT-SCPP": 52_480,
        "ACCEPT-SCAP": 51_200,
        "ACCEPT": 49_920,
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data_dir", "somewhere"], "--data_dir needs --tokenizer"),
        (["--tokenizer", ".", "--tasks", "sst2", "--data_dir"], "has no folder for ['sst2']"),
    ],
)
def test_benchmark_data_flags_fail_before_work(tmp_path, capsys, argv, message):
    from scripts import benchmark

    with pytest.raises(SystemExit):
        benchmark.parse_args(argv + ([str(tmp_path)] if argv[-1] == "--data_dir" else []))
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_serving_quick(tmp_path):
    """The serving case: 8 adapters x 4 rows as one mixed call, length-grouped calls, 8 calls and the
    one-adapter limit; the first three give the same tokens (timings not asserted)."""
    out_json = tmp_path / "serving.json"
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--cases", "serving",
           "--tasks", "sst2", "rte", "--json", str(out_json)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    serving = json.loads(out_json.read_text())["serving"]
    assert serving["identical_tokens"] is True
    mixed, grouped, separate, one_adapter = (r["calls"] for r in serving["rows"])
    assert (mixed, separate, one_adapter) == (1, 8, 1)
    assert 1 < grouped < separate  # rows of similar length share a call
    assert all(r["rows_per_s"] > 0 for r in serving["rows"])
    ms = [r["ms"] for r in serving["rows"]]
    assert serving["throughput_ratio"] == pytest.approx(ms[2] / ms[1])
    assert [r["vs_separate"] for r in serving["rows"]] == pytest.approx([ms[2] / m for m in ms])
    assert "### Serving (8 adapters x 4 rows" in result.stdout
    assert "Identical tokens (mixed, grouped, separate): yes" in result.stdout
