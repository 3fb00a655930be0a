"""Launching a grid's runs: one after another, N at a time on this machine, or as one Slurm job array.

Placement is submitit's and Slurm's; this module only hands them the runs, in the order given (longest
first), and turns every run's end into an ``Outcome`` (``scripts/_sweep_run.py``):

- serial: the runs in this process, one ``train.py`` process at a time;
- local: N submitit ``LocalExecutor`` jobs, each a ``Worker`` with its share of the runs (balanced by
  the per-run estimate), one GPU each (``CUDA_VISIBLE_DEVICES``) or, on a CPU machine, cores // N threads;
- slurm: one submitit ``SlurmExecutor`` job array (``--requeue``), one array task (``RunTask``) per run.
  Before the time limit Slurm sends SIGUSR2 (``--signal=USR2@90``); submitit calls ``RunTask.checkpoint``,
  which stops ``train.py`` with SIGINT (it keeps its last complete checkpoint) and returns the same task,
  which submitit requeues (``scontrol requeue``); the requeued task reruns the same command, and
  ``train.py`` resumes from the newest complete checkpoint in its ``--output_dir``. A pre-emption that
  requeues the task itself (``PreemptMode=REQUEUE``) ends in the same resume."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from scripts._sweep_run import INTERRUPTED, Outcome, TrainProcess, execute

logger = logging.getLogger("sweep")
REPO = Path(__file__).resolve().parents[1]
NOT_RUN = "not run"


@dataclass(frozen=True)
class Task:
    """One run as launched: its folder, ``train.py`` arguments, working directory and extra environment."""

    output_dir: str
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)

    def process(self) -> TrainProcess:
        return TrainProcess(self.argv, self.cwd, self.env)


class Worker:
    """Runs its tasks one after another and returns their outcomes; stops after an interrupted run."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)

    def __call__(self) -> list[Outcome]:
        logging.basicConfig(level=logging.INFO, format="sweep: %(message)s")  # in a submitit job: its log
        outcomes = []
        for i, task in enumerate(self.tasks):
            logger.info("[%d/%d] %s", i + 1, len(self.tasks), task.output_dir)
            outcome = execute(task.process(), task.output_dir)
            outcomes.append(outcome)
            if outcome.status == INTERRUPTED:
                break
        return outcomes


class RunTask:
    """One Slurm array task: one run. ``checkpoint`` is submitit's requeue hook (see the module docstring)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._process: TrainProcess | None = None

    def __call__(self) -> Outcome:
        self._process = self.task.process()
        return execute(self._process, self.task.output_dir)

    def checkpoint(self):
        """Stop ``train.py`` cleanly and hand submitit the same run to requeue (it resumes on restart)."""
        import submitit

        if self._process is not None:
            self._process.interrupt()
        return submitit.helpers.DelayedSubmission(RunTask(self.task))

    def __getstate__(self) -> dict:
        return {"task": self.task, "_process": None}


def visible_gpus(spec: str) -> list[str]:
    """GPU ids for the local workers: ``spec`` "none", a list "0,1", or "auto" (``CUDA_VISIBLE_DEVICES``
    when set, else one id per line of ``nvidia-smi -L``, else none)."""
    if spec == "none":
        return []
    if spec != "auto":
        return [gpu for gpu in spec.split(",") if gpu]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [gpu for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu]
    if shutil.which("nvidia-smi") is None:
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    return [str(i) for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU"))]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_env(k: int, workers: int, gpus: Sequence[str]) -> dict[str, str]:
    """Environment of local worker k of N: its GPU, or on a CPU machine its share of the cores as threads."""
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpus[k % len(gpus)]}
    threads = str(max(1, cpu_count() // workers))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def balanced_shares(hours: Sequence[float], workers: int) -> list[list[int]]:
    """Indices of the runs per worker: each run (in the given order, longest first) goes to the worker
    with the least estimated work so far."""
    loads, shares = [0.0] * workers, [[] for _ in range(workers)]
    for i, h in enumerate(hours):
        k = loads.index(min(loads))
        loads[k] += h
        shares[k].append(i)
    return shares


def submitit_environment() -> None:
    """Let submitit's job processes import this repository's ``scripts`` package."""
    paths = [str(REPO), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO)]]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)


def job_failure(job, tasks: Sequence[Task]) -> list[Outcome]:
    """Outcomes for the runs of a submitit job that ended without a result (its process died or was killed)."""
    try:
        job.result()
        reason = "the worker ended without a result"
    except Exception as exc:  # submitit re-raises the job's error with its traceback as text
        lines = [line for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else type(exc).__name__
    return [Outcome(t.output_dir, NOT_RUN, None, f"worker ended: {reason}", 0.0) for t in tasks]


def launch_serial(tasks: Sequence[Task]) -> list[Outcome]:
    """Every run in this process, one after another (the default)."""
    return Worker(tasks)()


def launch_local(tasks: Sequence[Task], hours: Sequence[float], workers: int, gpus: Sequence[str],
                 folder: Path) -> list[Outcome]:  # fmt: skip
    """N submitit local jobs, one per worker, each with its balanced share; outcomes in ``tasks`` order."""
    import submitit

    submitit_environment()
    if gpus and workers > len(gpus):
        logger.warning("%d workers share %d GPUs (%s)", workers, len(gpus), ",".join(gpus))
    executor = submitit.LocalExecutor(folder=str(folder))
    executor.update_parameters(timeout_min=60 * 24 * 365)  # no limit of its own: a run ends when it ends
    shares = [share for share in balanced_shares(hours, workers) if share]
    jobs = []
    for k, share in enumerate(shares):
        env = worker_env(k, len(shares), gpus)
        mine = [replace(tasks[i], env={**tasks[i].env, **env}) for i in share]
        jobs.append((executor.submit(Worker(mine)), share))
        logger.info("worker %d: %d runs, %s, log %s", k, len(share), env, jobs[-1][0].paths.stdout)
    outcomes: dict[int, Outcome] = {}
    for job, share in jobs:
        try:
            results = job.result()
        except Exception:  # noqa: BLE001 - the worker process died; its runs are reported, the others go on
            results = []
        done = dict(zip(share, results, strict=False))
        missing = [i for i in share if i not in done]
        if missing and not any(r.status == INTERRUPTED for r in results):
            done.update(zip(missing, job_failure(job, [tasks[i] for i in missing]), strict=True))
        outcomes.update(done)
    return [outcomes.get(i) or Outcome(t.output_dir, NOT_RUN, None, "stopped before it", 0.0) for i, t in enumerate(tasks)]


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks Slurm for, and how many tasks run at once (0: no limit of ours)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int = 0
    max_timeouts: int = 20
    setup: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def parameters(self, name: str) -> dict:
        params = {"job_name": name, "time": self.time_min, "gpus_per_task": self.gpus_per_task or None,
                  "ntasks_per_node": 1, "additional_parameters": {"requeue": True, **self.extra}}  # fmt: skip
        optional = {"partition": self.partition, "cpus_per_task": self.cpus_per_task, "mem": f"{self.mem_gb:g}GB" if self.mem_gb else None,
                    "setup": list(self.setup) or None, "array_parallelism": self.array_parallelism or None}  # fmt: skip
        return {**params, **{k: v for k, v in optional.items() if v is not None}}


def launch_slurm(tasks: Sequence[Task], options: SlurmOptions, folder: Path, name: str) -> list[Outcome]:
    """One job array (one task per run, array index = position in ``tasks``); waits for every task."""
    import submitit

    submitit_environment()
    executor = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=options.max_timeouts)
    executor.update_parameters(**options.parameters(name))
    with executor.batch():
        jobs = [executor.submit(RunTask(task)) for task in tasks]
    logger.info("submitted job array %s (%d tasks); logs in %s", jobs[0].job_id.split("_")[0], len(jobs), folder)
    outcomes = []
    for job, task in zip(jobs, tasks, strict=True):
        try:
            outcomes.append(job.result())
        except Exception:  # noqa: BLE001 - a task that died is reported, the others go on
            outcomes += job_failure(job, [task])
    return outcomes
