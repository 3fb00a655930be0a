"""Every example script's grid (``--dry_run`` of scripts/sweep.py): exactly the runs its variables define,
one folder each, and every ``python train.py`` command parses with train.py's parser."""

from __future__ import annotations

import itertools
import math
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from train import parse_args

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The variables whose lists span each script's grid (the product of their lengths), plus runs outside it.
AXES = {
    "run_glue.sh": (["TASKS", "LRS", "ADDED_LRS", "SEEDS"], 0),
    "run_superglue.sh": (["TASKS", "LRS", "ADDED_LRS", "SEEDS"], 0),
    "run_mrqa.sh": (["TASKS", "LRS", "ADDED_LRS", "SEEDS"], 0),
    "run_llama.sh": (["TASKS", "LRS", "ADDED_LRS", "SEEDS"], 0),
    "run_pt.sh": (["TASKS", "LRS", "SEEDS"], 0),
    "run_dept.sh": (["TASKS", "LRS", "ADDED_LRS", "SEEDS"], 0),
    "run_fewshot.sh": (["TASKS", "K_SHOTS", "SEEDS"], 0),
    "run_transfer.sh": (["TARGET_TASKS", "TARGET_LRS"], 1),  # + the source run
    "run_tiny.sh": (["METHODS", "SEEDS"], 0),
    "run_ulpt.sh": (["TASKS", "LRS", "SEEDS"], 0),
    "run_adept.sh": (["TASKS", "LRS", "ADDED_LRS", "SEEDS"], 0),
}


def test_every_sweep_script_is_covered():
    scripts = {p.name for p in EXAMPLES.glob("run_*.sh")} - {"run_demo.sh"}
    assert scripts == set(AXES)


def variables(script: Path) -> dict[str, str]:
    """The plain ``NAME=value`` / ``NAME="v1 v2"`` assignments at the top of an example script."""
    found = re.findall(r'^([A-Z_]+)=(?:"([^"]*)"|([^\s;$]+))', script.read_text(), flags=re.MULTILINE)
    return {name: quoted or bare for name, quoted, bare in found}


def dry_run(script: str, out_root: Path) -> list[tuple[str, list[str]]]:
    """(folder, train.py argv) of every run the script's --dry_run lists."""
    env = {**os.environ, "OUT_ROOT": str(out_root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", str(EXAMPLES / script), "--dry_run"], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout  # fmt: skip
    folders = re.findall(r"^\[\d+/\d+\] \S+ \S+  (.+)$", out, flags=re.MULTILINE)
    commands = [shlex.split(line)[2:] for line in out.splitlines() if line.startswith("  python train.py ")]
    assert len(folders) == len(commands)
    return list(zip(folders, commands, strict=True))


@pytest.mark.parametrize(
    "script", [pytest.param(s, marks=pytest.mark.slow) if s == "run_tiny.sh" else s for s in sorted(AXES)]
)  # run_tiny.sh builds its tiny model first
def test_example_dry_run_lists_the_grid_and_every_command_parses(script, tmp_path):
    names, extra = AXES[script]
    values = variables(EXAMPLES / script)
    runs = dry_run(script, tmp_path / "out")
    assert len(runs) == math.prod(len(values[n].split()) for n in names) + extra
    assert len({folder for folder, _ in runs}) == len(runs), "two runs of a grid share an output directory"
    for folder, argv in runs:
        assert argv[argv.index("--output_dir") + 1] == folder
        assert folder.startswith(str(tmp_path / "out"))
        if "--bf16" in argv:  # transformers refuses bf16 on a machine without GPU unless told to use the CPU
            argv = [*argv, "--use_cpu", "True"]
        model, data, training = parse_args(argv)
        assert training.weight_decay == 0.0
        assert training.do_train and training.do_eval and training.do_predict


def test_glue_dry_run_folders_are_the_grid_of_its_variables(tmp_path):
    v = variables(EXAMPLES / "run_glue.sh")
    root = tmp_path / "out" / v["MODEL"] / "ACCEPT"
    expected = {
        f"{root}/{task}/lr{lr}_alr{alr}_pl{v['PREFIX_LENGTH']}_p32x20_a256x20_L{v['MAX_LENGTH']}_"
        f"st{300000 if task in v['LARGE_TASKS'].split() else 30000}_seed{seed}"
        for task, lr, alr, seed in itertools.product(*(v[n].split() for n in ("TASKS", "LRS", "ADDED_LRS", "SEEDS")))
    }  # fmt: skip
    runs = dry_run("run_glue.sh", tmp_path / "out")
    assert {folder for folder, _ in runs} == expected
    steps = [int(argv[argv.index("--max_steps") + 1]) for _, argv in runs]
    assert steps == sorted(steps, reverse=True)  # the 300k-step runs start first


def test_launch_variables_become_sweep_flags():
    env = {**os.environ, "LAUNCHER": "slurm", "WORKERS": "8", "PARTITION": "gpu", "TIME_MIN": "600", "MEM_GB": "32"}
    for unset in ("GPUS_PER_TASK", "CPUS_PER_TASK"):
        env.pop(unset, None)
    out = subprocess.run(["bash", "-c", f'source {EXAMPLES / "launch.sh"}; printf "%s\\n" "${{LAUNCH[@]}}"'], env=env,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert out == ["--launcher", "slurm", "--workers", "8", "--partition", "gpu", "--time_min", "600", "--mem_gb", "32"]
