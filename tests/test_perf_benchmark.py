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
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "benchmark.py"), "--quick", "--synthetic",
           "--tasks", "sst2", "--m_values", "1", "--l_values", "32", "--json", str(out_json), "--markdown", str(out_md)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert set(report) == {"config", "environment", "data", "epoch_batch_length", "train", "evaluation",
                           "scaling", "targets", "wall_seconds"}  # fmt: skip
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
    assert {t["target"].split(":")[0] for t in report["targets"]} >= {
        "sst2",
        "m=60 / PT m=100 step <= 0.85 (fixed L)",
    }
    assert "### Training step" in out_md.read_text() and "### Targets" in result.stdout
