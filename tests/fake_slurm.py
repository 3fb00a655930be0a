"""A Slurm stand-in for tests: ``sbatch``, ``srun``, ``sacct``, ``scancel`` and ``scontrol`` on ``PATH``.

``sbatch SCRIPT`` copies the script to ``$FAKE_SLURM_DIR/sbatch_<id>.sh``, answers ``Submitted batch job
<id>`` (what submitit parses) and then, in a detached process, runs the array tasks of ``#SBATCH
--array=0-N%P`` P at a time with the variables Slurm sets for an array task (``SLURM_ARRAY_JOB_ID``,
``SLURM_ARRAY_TASK_ID``, ``SLURM_JOB_ID``, ``SLURM_PROCID`` ...). submitit writes each task's pickle only
after ``sbatch`` has answered, and its tasks wait for it, as on a cluster. ``srun`` runs its command with
its ``--output``/``--error`` files (``%A``, ``%a``, ``%j``, ``%t`` filled in). ``sacct`` knows no job (the
jobs are followed by their result files), ``scancel`` and ``scontrol`` are recorded.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

JOB_ID = 4242
TOOLS = ("sbatch", "srun", "sacct", "scancel", "scontrol")


def install(bin_dir: Path, record_dir: Path) -> dict[str, str]:
    """Write the commands into ``bin_dir``; returns the environment that puts them first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    record_dir.mkdir(parents=True, exist_ok=True)
    for tool in TOOLS:
        path = bin_dir / tool
        path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                        f"import fake_slurm\nfake_slurm.{tool}(sys.argv[1:])\n")  # fmt: skip
        path.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_DIR": str(record_dir)}


def _record(line: str) -> None:
    with open(Path(os.environ["FAKE_SLURM_DIR"]) / "calls.txt", "a", encoding="utf-8") as f:
        f.write(line + "\n")


def sbatch(argv: list[str]) -> None:
    script = Path(argv[-1]).read_text(encoding="utf-8")
    record = Path(os.environ["FAKE_SLURM_DIR"])
    (record / f"sbatch_{JOB_ID}.sh").write_text(script, encoding="utf-8")
    _record("sbatch " + shlex.join(argv))
    print(f"Submitted batch job {JOB_ID}", flush=True)
    subprocess.Popen([sys.executable, __file__, "run-array", str(record / f"sbatch_{JOB_ID}.sh")],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def run_array(script_path: str) -> None:
    """Run every array task of the script, P at a time (the ``%P`` of ``--array``)."""
    script = Path(script_path).read_text(encoding="utf-8")
    first, last, parallel = map(int, re.search(r"#SBATCH --array=(\d+)-(\d+)%(\d+)", script).groups())
    pending = list(range(first, last + 1))
    running: list[subprocess.Popen] = []
    while pending or running:
        running = [p for p in running if p.poll() is None]
        while pending and len(running) < parallel:
            index = pending.pop(0)
            env = {**os.environ, "SLURM_ARRAY_JOB_ID": str(JOB_ID), "SLURM_ARRAY_TASK_ID": str(index),
                   "SLURM_JOB_ID": str(JOB_ID + 1 + index), "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                   "SLURM_NODEID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1",
                   "SLURM_JOB_NODELIST": "localhost"}  # fmt: skip
            running.append(subprocess.Popen(["bash", script_path], env=env))
        if running:
            running[0].wait(timeout=600)


def srun(argv: list[str]) -> None:
    files = {}
    while argv and argv[0].startswith("--"):
        option = argv.pop(0)
        if option in ("--output", "--error"):
            files[option] = argv.pop(0)
    fill = {"%A": os.environ["SLURM_ARRAY_JOB_ID"], "%a": os.environ["SLURM_ARRAY_TASK_ID"],
            "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}  # fmt: skip
    paths = {k: re.sub("%[Aajt]", lambda m: fill[m.group(0)], v) for k, v in files.items()}
    with open(paths["--output"], "a") as out, open(paths.get("--error", paths["--output"]), "a") as err:
        sys.exit(subprocess.call(argv, stdout=out, stderr=err))


def sacct(argv: list[str]) -> None:
    print("JobID|State|NodeList")


def scancel(argv: list[str]) -> None:
    _record("scancel " + shlex.join(argv))


def scontrol(argv: list[str]) -> None:
    _record("scontrol " + shlex.join(argv))


if __name__ == "__main__" and sys.argv[1] == "run-array":
    run_array(sys.argv[2])
