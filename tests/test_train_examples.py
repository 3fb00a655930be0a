"""Every ``python train.py`` command of the example scripts parses (run with a recording stub ``python``)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from train import parse_args

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SWEEPS = sorted(p.name for p in EXAMPLES.glob("run_*.sh") if p.name not in ("run_tiny.sh", "run_demo.sh"))

STUB = """#!/usr/bin/env bash
if [[ "$1" == "train.py" ]]; then shift; printf '%q ' "$@" >> "$RECORD"; echo >> "$RECORD"; fi
"""


@pytest.mark.parametrize("script", SWEEPS)
def test_example_commands_parse(script, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(STUB)
    (bin_dir / "python").chmod(0o755)
    record = tmp_path / "record.txt"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record),
           "OUT_ROOT": str(tmp_path / "out")}  # fmt: skip
    subprocess.run(["bash", str(EXAMPLES / script)], env=env, check=True, timeout=60)
    commands = [shlex.split(line) for line in record.read_text().splitlines() if line.strip()]
    assert commands, f"{script} ran no train.py command"
    out_dirs = set()
    for argv in commands:
        if "--bf16" in argv:  # transformers refuses bf16 on a machine without GPU unless told to use the CPU
            argv = [*argv, "--use_cpu", "True"]
        model, data, training = parse_args(argv)
        assert training.weight_decay == 0.0
        assert training.do_train and training.do_eval and training.do_predict
        out_dirs.add(training.output_dir)
    assert len(out_dirs) == len(commands), "two runs of a sweep share an output directory"
