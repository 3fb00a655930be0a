"""Time the grid runner: the tiny grid (examples/run_tiny.sh, 6 runs) with 1 and 2 workers, and the fixed
cost every run of a grid pays (interpreter start, imports, model load, a rerun of a finished run).

Run it on an idle machine (docs/benchmarks.md, "The grid runner"):

    python scripts/bench_grid.py --out_root /tmp/bench-grid --workers 1 2 --json grid_bench.json

With 1 worker ``scripts/sweep.py`` runs the runs one after another with torch's default threads (every
core); with N workers each ``train.py`` gets cores // N threads (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

from scripts._sweep_launch import cpu_count  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOAD = ("import sys, time; from transformers import AutoModelForSeq2SeqLM; t = time.perf_counter(); "
        "AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1]); print(time.perf_counter() - t)")  # fmt: skip


def wall(argv: list[str], env: dict | None = None) -> tuple[float, str]:
    """Seconds the command takes, and its stdout (CalledProcessError when it fails)."""
    start = time.perf_counter()
    out = subprocess.run(argv, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, out.stdout


def median_wall(argv: list[str], repeats: int) -> float:
    return statistics.median(wall(argv)[0] for _ in range(repeats))


def tiny_grid(out_root: Path, workers: int, *flags: str) -> tuple[float, str]:
    env = {"OUT_ROOT": str(out_root), "WORKERS": str(workers)}
    return wall(["bash", "examples/run_tiny.sh", *flags], env)


def train_seconds(root: Path) -> list[float]:
    """``train_runtime`` of every run under ``root`` (the Trainer's own training time)."""
    return [json.loads(p.read_text())["train_runtime"] for p in sorted(root.rglob("train_results.json"))]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_root", required=True, type=Path, help="scratch folder (emptied first)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="repeats of each overhead measurement (median)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    shutil.rmtree(args.out_root, ignore_errors=True)
    first = args.out_root / f"w{args.workers[0]}"
    tiny_grid(first, 1, "--dry_run")  # builds the tiny model (and the synthetic data) once
    for n in args.workers[1:]:
        shutil.copytree(first, args.out_root / f"w{n}")
    result = {"cores": cpu_count(), "grid": []}
    for n in args.workers:
        seconds, out = tiny_grid(args.out_root / f"w{n}", n)
        trained = train_seconds(args.out_root / f"w{n}" / "runs")
        result["grid"].append({"workers": n, "runs": len(trained), "wall_s": seconds, "train_runtime_sum_s": sum(trained),
                               "threads_per_run": cpu_count() // n if n > 1 else "torch default"})  # fmt: skip
    finished = next((args.out_root / f"w{args.workers[0]}" / "runs").rglob("all_results.json")).parent
    rerun = [sys.executable, "train.py", *config_argv(finished)]
    python = [sys.executable, "-c", "pass"]
    result["overhead"] = {
        "python_start_s": median_wall(python, args.repeats),
        "import_train_s": median_wall([sys.executable, "-c", "import train"], args.repeats),
        "model_load_s": statistics.median(float(wall([sys.executable, "-c", LOAD, str(first / "model")])[1])
                                          for _ in range(args.repeats)),  # fmt: skip
        "finished_run_rerun_s": median_wall(rerun, args.repeats),
    }
    text = render(result)
    sys.stdout.write(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def config_argv(run_dir: Path) -> list[str]:
    """The ``train.py`` command of a finished run of the tiny grid, from the grid runner's dry run."""
    _, out = tiny_grid(run_dir.parents[3], 1, "--dry_run")
    for line in out.splitlines():
        if line.startswith("  python train.py ") and line.endswith(str(run_dir)):
            return shlex.split(line)[2:]
    raise RuntimeError(f"{run_dir} is not a run of the tiny grid")


def render(result: dict) -> str:
    lines = [f"Tiny grid (examples/run_tiny.sh, 6 runs), {result['cores']} cores:", "",
             "| workers | threads per run | runs | wall-clock (s) | sum of train_runtime (s) |", "|---:|---|---:|---:|---:|"]  # fmt: skip
    for g in result["grid"]:
        lines.append(f"| {g['workers']} | {g['threads_per_run']} | {g['runs']} | {g['wall_s']:.1f} | "
                     f"{g['train_runtime_sum_s']:.1f} |")  # fmt: skip
    o = result["overhead"]
    lines += ["", "Per-run overhead (median):", "", "| what | seconds |", "|---|---:|",
              f"| python start | {o['python_start_s']:.2f} |", f"| `import train` (torch, transformers, ...) | {o['import_train_s']:.2f} |",
              f"| model load (tiny T5, after the imports) | {o['model_load_s']:.2f} |"]  # fmt: skip
    lines.append(f"| `train.py` on a finished run (start, imports, exit 0) | {o['finished_run_rerun_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
