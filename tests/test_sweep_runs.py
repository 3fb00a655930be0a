"""The grid runner end to end on tiny T5 runs: serial vs 2 local workers (submitit's local executor), a
failing run, an interrupted run resumed, and the Slurm job array through a fake ``sbatch``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import fake_slurm
import pytest
from test_reliability_support import run_killed_after_checkpoint

from scripts._sweep_grid import grid_from_json

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
STEPS = 4


def tiny_grid(root: Path, model: Path, data: Path, methods=("PT", "DePT", "ACCEPT"), seeds=("42", "43"),
              when: tuple = ()) -> dict:  # fmt: skip
    """PT / DePT / ACCEPT x seeds on the small T5 (d = 16): 4 steps, a checkpoint every 2, eval and test."""
    fixed = {"model_name_or_path": str(model), "task_name": "rte", "data_dir": str(data), "max_seq_length": "16",
             "prefix_length": "4", "r": "2", "learning_rate": "0.3", "added_embedding_lr": "1e-2",
             "weight_decay": "0", "max_steps": str(STEPS), "warmup_steps": "1", "per_device_train_batch_size": "4",
             "per_device_eval_batch_size": "4", "logging_steps": "1", "save_strategy": "steps", "save_steps": "2",
             "do_train": True, "do_eval": True, "do_predict": True, "disable_tqdm": "True", "report_to": "none",
             "dataloader_pin_memory": "False"}  # fmt: skip
    rules = [{"if": {"method": ["PT"]}, "set": {"peft_type": "PROMPT_TUNING"}},
             {"if": {"method": ["DePT"]}, "set": {"peft_type": "PROMPT_TUNING_LORA"}},
             {"if": {"method": ["ACCEPT"]}, "set": {"peft_type": "PROMPT_TUNING_LORA", "scpp": "True", "scap": "True",
              "sub_dim_scpp": "8", "codebook_size_scpp": "2", "sub_dim_scap": "8", "codebook_size_scap": "2"}},
             *when]  # fmt: skip
    return {"root": str(root), "name": "{method}/seed{seed}", "fixed": fixed,
            "sweep": {"method": list(methods), "seed": list(seeds)}, "labels": ["method"], "when": rules}  # fmt: skip


def sweep(tmp_path: Path, grid: dict, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / f"grid-{Path(grid['root']).name}.json"
    path.write_text(json.dumps(grid), encoding="utf-8")
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), "--grid", str(path), *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})  # fmt: skip


def trained_steps(run_dir: Path) -> list[int]:
    """Every training step logged in output.log (logging_steps 1): one entry per step trained."""
    log = (run_dir / "output.log").read_text(encoding="utf-8")
    return [int(s) for s in re.findall(r"step (\d+): \{'loss'", log)]


def finished_runs(root: Path) -> set[str]:
    return {str(p.parent.relative_to(root)) for p in root.rglob("all_results.json") if ".sweep" not in p.parts}


def tables(root: Path) -> str:
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "collect_results.py"), str(root)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout


def test_two_local_workers_train_each_run_once_and_match_serial(tmp_path, small_t5_dir, rte_data):
    serial = sweep(tmp_path, tiny_grid(tmp_path / "serial", small_t5_dir, rte_data))
    assert serial.returncode == 0, serial.stderr[-2000:]
    parallel = sweep(tmp_path, tiny_grid(tmp_path / "parallel", small_t5_dir, rte_data), "--workers", "2", "--gpus", "none")
    assert parallel.returncode == 0, parallel.stderr[-2000:]
    assert "grid: 6 runs: 6 finished, 0 failed, 0 skipped" in parallel.stdout
    runs = finished_runs(tmp_path / "serial")
    assert len(runs) == 6 and finished_runs(tmp_path / "parallel") == runs
    for run in runs:
        assert trained_steps(tmp_path / "parallel" / run) == list(range(1, STEPS + 1)), run
    assert len(list((tmp_path / "parallel" / ".sweep" / "local").glob("*_result.pkl"))) == 2  # two workers
    assert tables(tmp_path / "parallel") == tables(tmp_path / "serial")
    status = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep_status.py"), str(tmp_path / "parallel")],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "finished: 6  failed: 0  unfinished: 0  missing: 0" in status  # .sweep/ is not a run


def test_a_failed_run_does_not_stop_the_grid(tmp_path, small_t5_dir, rte_data):
    bad = {"if": {"method": ["DePT"]}, "set": {"data_dir": str(tmp_path / "no-such-data")}}
    grid = tiny_grid(tmp_path / "runs", small_t5_dir, rte_data, seeds=("42",), when=(bad,))
    result = sweep(tmp_path, grid)
    assert result.returncode == 1
    assert finished_runs(tmp_path / "runs") == {"PT/seed42", "ACCEPT/seed42"}
    summary = result.stdout[result.stdout.index("grid: 3 runs") :]
    assert "2 finished, 1 failed" in summary
    line = next(line for line in summary.splitlines() if "failed (exit 2)" in line)
    assert "DePT/seed42" in line and "--data_dir" in line and "no-such-data" in line


def test_rerun_resumes_the_killed_run_and_trains_nothing_else(tmp_path, small_t5_dir, rte_data, monkeypatch):
    import train

    grid = tiny_grid(tmp_path / "runs", small_t5_dir, rte_data, methods=("DePT",))
    done, killed = grid_from_json(grid).runs()
    assert train.main(list(done.argv)) == 0
    run_killed_after_checkpoint(monkeypatch, 2, list(killed.argv))  # the worker dies after checkpoint-2
    before = (Path(done.output_dir) / "output.log").read_bytes()
    result = sweep(tmp_path, grid)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 finished" in result.stdout
    assert (Path(done.output_dir) / "output.log").read_bytes() == before  # not trained again
    steps = trained_steps(Path(killed.output_dir))
    assert steps[-2:] == [3, 4] and steps.count(3) == 1 and steps.count(4) == 1  # resumed after step 2
    assert (Path(killed.output_dir) / "all_results.json").is_file()


def test_slurm_job_array_through_a_fake_sbatch(tmp_path, small_t5_dir, rte_data):
    env = fake_slurm.install(tmp_path / "bin", tmp_path / "slurm")
    grid = tiny_grid(tmp_path / "runs", small_t5_dir, rte_data, methods=("PT", "DePT"))
    result = sweep(tmp_path, grid, "--launcher", "slurm", "--partition", "gpu-test", "--time_min", "90",
                   "--gpus_per_task", "1", "--cpus_per_task", "2", "--mem_gb", "16", "--workers", "2",
                   "--slurm_option", "account=proj", env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "grid: 4 runs: 4 finished" in result.stdout
    script = (tmp_path / "slurm" / f"sbatch_{fake_slurm.JOB_ID}.sh").read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu-test", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=16GB",
                 "#SBATCH --requeue", "#SBATCH --signal=USR2@90", "#SBATCH --account=proj"):  # fmt: skip
        assert line in script.splitlines(), line
    assert (tmp_path / "slurm" / "calls.txt").read_text().count("sbatch ") == 1  # one array, one submission
    assert len(finished_runs(tmp_path / "runs")) == 4


def test_two_invocations_at_once_split_the_grid(tmp_path, small_t5_dir, rte_data):
    grid = tiny_grid(tmp_path / "runs", small_t5_dir, rte_data, methods=("PT", "DePT"))
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid), encoding="utf-8")
    command = [sys.executable, str(REPO / "scripts" / "sweep.py"), "--grid", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True) for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=900)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    runs = finished_runs(tmp_path / "runs")
    assert len(runs) == 4
    for run in runs:
        assert trained_steps(tmp_path / "runs" / run) == list(range(1, STEPS + 1)), run  # trained once
