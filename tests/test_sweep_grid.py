"""The grid runner's parts without training: expansion, grid files, order and estimates, exit statuses,
the lock probe, the summary and the Slurm requeue hook."""

from __future__ import annotations

import json
import re

import pytest

from scripts import sweep
from scripts._sweep_grid import GridError, grid_from_json, load_grid, parse_flags
from scripts._sweep_launch import NOT_RUN, RunTask, SlurmOptions, Task, balanced_shares, worker_env
from scripts._sweep_run import FAILED, FINISHED, HELD, INTERRUPTED, Outcome, held_by_another, outcome_of
from scripts.cost import run_hours

GRID = {
    "root": "out",
    "name": "{method}/{task_name}/lr{learning_rate}_st{max_steps}",
    "fixed": {"model_name_or_path": "t5-base", "max_steps": "30000", "do_train": True},
    "sweep": {"method": ["PT", "DePT"], "task_name": ["rte", "mnli"], "learning_rate": ["3e-1", "4e-1"]},
    "labels": ["method"],
    "when": [{"if": {"method": ["PT"]}, "set": {"peft_type": "PROMPT_TUNING"}},
             {"if": {"method": ["DePT"]}, "set": {"peft_type": "PROMPT_TUNING_LORA"}},
             {"if": {"task_name": ["mnli"]}, "set": {"max_steps": "300000"}}],
}  # fmt: skip


def test_grid_expands_in_loop_order_with_rules_and_labels():
    runs = grid_from_json(GRID).runs()
    assert [r.output_dir for r in runs[:3]] == ["out/PT/rte/lr3e-1_st30000", "out/PT/rte/lr4e-1_st30000",
                                                "out/PT/mnli/lr3e-1_st300000"]  # fmt: skip
    assert len(runs) == 8
    assert runs[0].argv == ("--model_name_or_path", "t5-base", "--max_steps", "30000", "--do_train", "--task_name",
                            "rte", "--learning_rate", "3e-1", "--peft_type", "PROMPT_TUNING", "--output_dir",
                            "out/PT/rte/lr3e-1_st30000")  # fmt: skip
    assert "--method" not in runs[0].argv  # a label sets no flag
    assert runs[-1].flags["peft_type"] == "PROMPT_TUNING_LORA" and runs[-1].flags["max_steps"] == "300000"


def test_grid_file_round_trip(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid_from_json(GRID).to_json()))
    assert load_grid(path).runs() == grid_from_json(GRID).runs()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"name": "{method}/{task_name}"}, "share the folder"),
     ({"name": "{method}/{nope}_{task_name}_{learning_rate}"}, "{nope} is neither"),
     ({"labels": ["seed"]}, "labels: ['seed']"),
     ({"sweep": {"method": []}}, "has no values"),
     ({"when": [{"if": {"nope": ["1"]}, "set": {"seed": "1"}}]}, "when: ['nope']"),
     ({"fixed": {"output_dir": "x"}}, "output_dir is made from root and name"),
     ({"colour": "red"}, "unknown key(s) ['colour']")],
)  # fmt: skip
def test_bad_grids_are_refused_with_the_key_at_fault(change, message):
    with pytest.raises(GridError, match=re.escape(message)):
        grid_from_json({**GRID, **change}).runs()


def test_command_line_grid_equals_the_file(tmp_path):
    argv = ["--root", "out", "--name", GRID["name"], "--label", "method", "PT", "DePT",
            "--sweep", "task_name", "rte", "mnli", "--sweep", "learning_rate", "3e-1", "4e-1",
            "--when", "method=PT", "peft_type=PROMPT_TUNING", "--when", "method=DePT", "peft_type=PROMPT_TUNING_LORA",
            "--when", "task_name=mnli", "max_steps=300000",
            "--", "--model_name_or_path", "t5-base", "--max_steps", "30000", "--do_train"]  # fmt: skip
    args, fixed = sweep.parse_args(argv)
    assert sweep.build_grid(args, fixed).runs() == grid_from_json(GRID).runs()
    assert parse_flags(["--bf16", "--seed", "42", "--warmup_steps", "0.1"]) == {"bf16": True, "seed": "42",
                                                                                 "warmup_steps": "0.1"}  # fmt: skip
    with pytest.raises(GridError, match="'42' follows no --flag"):
        parse_flags(["42"])


def test_dry_run_orders_longest_first_and_estimates_the_wall_clock(capsys):
    grid = {**GRID, "fixed": {**GRID["fixed"], "task_name": "rte", "max_seq_length": "256", "prefix_length": "60",
                              "per_device_train_batch_size": "32", "per_device_eval_batch_size": "32",
                              "eval_strategy": "steps", "eval_steps": "1000", "do_eval": True, "do_predict": True}}  # fmt: skip
    runs = grid_from_json(grid).runs()
    ordered, hours = sweep.longest_first(runs, sweep.estimate_hours(runs))
    assert [r.flags["task_name"] for r in ordered] == ["mnli"] * 4 + ["rte"] * 4
    assert hours[0] == pytest.approx(55.7, abs=0.05) and hours[-1] == pytest.approx(4.3, abs=0.05)  # docs/cost.md
    assert ordered[0].output_dir == "out/PT/mnli/lr3e-1_st300000"  # ties keep the grid's order
    text = sweep.dry_run(ordered, hours, 4)
    assert text.startswith("8 runs, estimated 239.8 h")
    assert "wall-clock: 239.8 h with 1 worker, 59.9 h with 4 workers" in text  # each worker: one mnli + one rte
    assert text.count("python train.py ") == 8


def test_run_hours_reads_a_local_model_config(tiny_t5_dir):
    flags = {"model_name_or_path": str(tiny_t5_dir), "max_steps": "20", "max_seq_length": "64", "prefix_length": "4"}
    tiny, base = run_hours(flags), run_hours({**flags, "model_name_or_path": "t5-base"})
    assert 0 < tiny < base


def test_balanced_shares_give_the_next_run_to_the_least_loaded_worker():
    assert balanced_shares([5, 4, 3, 3, 3], 2) == [[0, 3], [1, 2, 4]]
    assert sweep.wall_clock([5, 4, 3, 3, 3], 2) == 10
    assert sweep.wall_clock([5, 4, 3, 3, 3], 1) == 18


def test_workers_get_a_gpu_each_or_a_share_of_the_cores(monkeypatch):
    assert worker_env(3, 4, ["0", "1"]) == {"CUDA_VISIBLE_DEVICES": "1"}
    monkeypatch.setattr("scripts._sweep_launch.cpu_count", lambda: 16)
    assert worker_env(0, 4, []) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert worker_env(0, 32, [])["OMP_NUM_THREADS"] == "1"


def test_exit_codes_of_train_py_map_to_the_grid(tmp_path):
    assert outcome_of("a", 0, [], 1.0).status == FINISHED
    assert outcome_of("a", 75, [], 1.0).status == HELD
    assert outcome_of("a", 130, [], 1.0).status == INTERRUPTED
    failed = outcome_of("a", 2, ["Map: 100%", "error: --data_dir x: no such folder", ""], 1.0)
    assert (failed.status, failed.reason) == (FAILED, "error: --data_dir x: no such folder")
    (tmp_path / "output.log").write_text("step 3: loss nan\nERROR - train - non-finite loss at step 3\ndone\n")
    assert outcome_of(str(tmp_path), 1, [], 1.0).reason == "ERROR - train - non-finite loss at step 3"
    assert outcome_of(str(tmp_path / "x"), -9, [], 1.0).reason == "killed by signal SIGKILL"


def test_summary_and_exit_status():
    outcomes = [Outcome("a", FINISHED, 0, "", 1), Outcome("b", FAILED, 2, "error: bad", 1),
                Outcome("c", HELD, 75, "held by another worker", 1)]  # fmt: skip
    text = sweep.summary(outcomes)
    assert text.splitlines() == ["grid: 3 runs: 1 finished, 1 failed, 1 skipped (held by another worker)",
                                 "  failed (exit 2): b: error: bad", "  held (exit 75): c: held by another worker"]  # fmt: skip
    assert sweep.exit_status(outcomes) == 1
    assert sweep.exit_status([outcomes[0], outcomes[2]]) == 0
    assert sweep.exit_status([*outcomes, Outcome("d", INTERRUPTED, 130, "", 1)]) == 130
    assert sweep.exit_status([Outcome("e", NOT_RUN, None, "worker ended", 0)]) == 1


def test_the_lock_probe_sees_a_running_train_py(tmp_path):
    from training.run_dir import OutputDirLock

    run_dir = tmp_path / "run"
    lock = OutputDirLock(run_dir)
    lock.acquire()
    try:
        assert held_by_another(run_dir)
    finally:
        lock.release()
    assert not held_by_another(run_dir)
    lock.acquire()  # the probe left the folder usable
    lock.release()


def test_slurm_task_checkpoint_requeues_the_same_run():
    task = Task("out/a", ("--seed", "1", "--output_dir", "out/a"), "/tmp")
    delayed = RunTask(task).checkpoint()
    assert isinstance(delayed.function, RunTask) and delayed.function.task == task
    params = SlurmOptions(partition="p", time_min=60, mem_gb=8, array_parallelism=4).parameters("g")
    assert params["additional_parameters"]["requeue"] is True
    assert (params["partition"], params["time"], params["mem"], params["array_parallelism"]) == ("p", 60, "8GB", 4)


def test_serial_runs_use_one_gpu_and_n_workers_one_each(monkeypatch):
    seen = {}
    monkeypatch.setattr(sweep, "launch_serial", lambda tasks: seen.setdefault("serial", tasks))
    monkeypatch.setattr(sweep, "launch_local", lambda tasks, hours, n, gpus, folder: seen.setdefault("local", (n, gpus)))
    runs = grid_from_json(GRID).runs()
    args, _ = sweep.parse_args(["--grid", "g.json", "--gpus", "3,5"])
    sweep.launch(args, grid_from_json(GRID), runs, [1.0] * len(runs))
    assert {t.env["CUDA_VISIBLE_DEVICES"] for t in seen["serial"]} == {"3"} and len(seen["serial"]) == 8
    args, _ = sweep.parse_args(["--grid", "g.json", "--gpus", "3,5", "--workers", "2"])
    sweep.launch(args, grid_from_json(GRID), runs, [1.0] * len(runs))
    assert seen["local"] == (2, ["3", "5"])


STUB_TRAIN = """import signal, sys, time
from pathlib import Path
started = Path(sys.argv[sys.argv.index("--output_dir") + 1]) / "started"
if started.exists():  # the requeued task: the run resumes and finishes
    sys.exit(0)
started.write_text("")
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
while True:
    time.sleep(0.05)
"""


def test_slurm_checkpoint_stops_train_py_and_the_requeued_task_finishes_the_run(tmp_path, monkeypatch):
    import threading
    import time

    stub = tmp_path / "train_stub.py"
    stub.write_text(STUB_TRAIN)
    monkeypatch.setattr("scripts._sweep_run.TRAIN_SCRIPT", stub)
    task = Task("run", ("--output_dir", "run"), str(tmp_path))
    running, result = RunTask(task), {}
    thread = threading.Thread(target=lambda: result.setdefault("first", running()))
    thread.start()
    while not (tmp_path / "run" / "started").exists():  # train.py is running (time-out signal arrives now)
        time.sleep(0.05)
    requeued = running.checkpoint()  # what submitit's SIGUSR2 handler calls
    thread.join(timeout=30)
    assert result["first"].status == INTERRUPTED and result["first"].code == 130
    assert requeued.function is not running and requeued.function.task == task
    assert requeued.result().status == FINISHED  # the requeued task reruns the same command
