"""One run of a grid as a ``train.py`` process, and what its exit status means for the grid.

``train.py``'s exit statuses: 0 finished (or the folder already holds the finished run), 1 stopped (a
non-finite loss), 2 bad input (one line on stderr), 75 the ``--output_dir`` is locked by another running
process, 130 interrupted (Ctrl-C). A run whose folder another process holds is skipped without starting a
process: the probe takes the same lock (``<output_dir>/.train.lock``) for an instant.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from filelock import FileLock, Timeout

from training.contract import EXIT_BUSY, EXIT_INTERRUPTED, LOCK_NAME

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train.py"

FINISHED, FAILED, HELD, INTERRUPTED = "finished", "failed", "held", "interrupted"


@dataclass(frozen=True)
class Outcome:
    """What became of one run: ``status`` one of finished / failed / held / interrupted, with the
    exit code (None: no process started), a one-line reason and the seconds it took."""

    output_dir: str
    status: str
    code: int | None
    reason: str
    seconds: float


def held_by_another(output_dir: str | Path) -> bool:
    """True when another process holds ``<output_dir>/.train.lock`` now (creates the folder otherwise, so
    that ``train.py`` takes the lock first thing)."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME), timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def last_error_line(lines: Sequence[str]) -> str | None:
    """The line that says why a run failed: the last one naming an error, else the last non-empty one."""
    lines = [line.strip() for line in lines if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else None


def failure_reason(code: int, stderr_tail: Sequence[str], output_dir: str | Path) -> str:
    """One line: the last error line of the run's stderr, else of its output.log, else the exit status."""
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    reason = last_error_line(stderr_tail)
    log = Path(output_dir) / "output.log"
    if reason is None and log.is_file():
        reason = last_error_line(log.read_text(encoding="utf-8", errors="replace").splitlines()[-200:])
    return reason or f"train.py exited with {code}"


def outcome_of(output_dir: str, code: int, stderr_tail: Sequence[str], seconds: float) -> Outcome:
    """Map ``train.py``'s exit status to the grid's view of the run."""
    if code == 0:
        return Outcome(output_dir, FINISHED, code, "", seconds)
    if code == EXIT_BUSY:
        return Outcome(output_dir, HELD, code, "held by another worker", seconds)
    if code == EXIT_INTERRUPTED:
        return Outcome(output_dir, INTERRUPTED, code, "interrupted (Ctrl-C)", seconds)
    return Outcome(output_dir, FAILED, code, failure_reason(code, stderr_tail, output_dir), seconds)


def _echo_and_keep(stream: IO[str], sink: IO[str], tail: deque) -> None:
    """Copy ``stream`` to ``sink`` line by line (progress bars' carriage returns included), keeping the tail."""
    for line in iter(stream.readline, ""):
        sink.write(line)
        sink.flush()
        tail.extend(part for part in line.split("\r") if part.strip())


class TrainProcess:
    """``python train.py ARGV`` in ``cwd`` with extra environment variables; stderr is echoed and its tail kept."""

    def __init__(self, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> None:
        self.argv, self.cwd, self.env = list(argv), cwd, dict(env)
        self.process: subprocess.Popen | None = None

    def run(self, output_dir: str) -> Outcome:
        start = time.monotonic()
        tail: deque = deque(maxlen=50)
        self.process = subprocess.Popen(
            [sys.executable, str(TRAIN_SCRIPT), *self.argv], cwd=self.cwd, env={**os.environ, **self.env},
            stderr=subprocess.PIPE, text=True, errors="replace",
        )  # fmt: skip
        reader = threading.Thread(target=_echo_and_keep, args=(self.process.stderr, sys.stderr, tail), daemon=True)
        reader.start()
        try:
            code = self.process.wait()
        except KeyboardInterrupt:  # the child got the same Ctrl-C: let it write its last line and stop
            code = self.process.wait()
        reader.join()
        return outcome_of(output_dir, code, list(tail), time.monotonic() - start)

    def interrupt(self, grace_s: float = 60.0) -> None:
        """Ctrl-C the process (it stops at once, keeping its last complete checkpoint) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def execute(process: TrainProcess, output_dir: str) -> Outcome:
    """Run one grid run to its end, or skip it when another process holds its folder."""
    if held_by_another(Path(process.cwd) / output_dir):
        return Outcome(output_dir, HELD, None, "held by another worker", 0.0)
    return process.run(output_dir)
