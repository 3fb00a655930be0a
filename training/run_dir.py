"""The life cycle of an ``--output_dir``: one run at a time, finished runs kept, complete checkpoints only.

The rule (also stated in README.md, "One output directory, one run"):

- a finished run (its ``all_results.json`` exists) is never redone: the same command exits 0 and says so;
- ``--overwrite_output_dir`` starts over: everything the previous run wrote is moved into the hidden
  sibling folder ``.<name>.previous`` (replacing an older one) before anything new is written; hidden,
  so that the result scripts (``scripts/_runs.py`` skips hidden folders) never count it as a run;
- an exclusive lock (``<output_dir>/.train.lock``) makes a second run into the same folder fail at once;
- a resume picks the newest *complete* checkpoint (an interrupted save is skipped with a warning) and
  reads only the files this project writes into a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock, Timeout

from training.outputs import ALL_RESULTS

logger = logging.getLogger(__name__)

LOCK_NAME = ".train.lock"
PREVIOUS_SUFFIX = ".previous"
TRAIN_RESULTS = "train_results.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Files a checkpoint of an adapter run may hold; anything else that can carry weights is refused.
CHECKPOINT_FILES = frozenset({
    ADAPTER_WEIGHTS, "adapter_config.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth",
    TRAINER_STATE, "training_args.bin", "resume_record.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "spiece.model", "added_tokens.json", "chat_template.jinja",
})  # fmt: skip
RNG_FILE_PATTERN = re.compile(r"^rng_state_\d+\.pth$")  # one per process under DDP
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".h5",
    ".msgpack",
    ".gguf",
)


class RunDirError(ValueError):
    """An output directory or checkpoint that cannot be used as asked; the message names the fix."""


class OutputDirBusy(RunDirError):
    """Another running process holds the ``--output_dir`` lock (``train.py`` exits ``EXIT_BUSY``)."""


def is_finished(output_dir: str | Path) -> bool:
    """True when ``output_dir`` holds the ``all_results.json`` that a run writes as its very last file."""
    return (Path(output_dir) / ALL_RESULTS).is_file()


def training_finished(output_dir: str | Path) -> bool:
    """True when training ended and its final adapter and ``train_results.json`` were written."""
    out = Path(output_dir)
    return (out / TRAIN_RESULTS).is_file() and (out / ADAPTER_WEIGHTS).is_file()


def run_entries(output_dir: str | Path) -> list[Path]:
    """Everything in ``output_dir`` except the lock file."""
    out = Path(output_dir)
    return [p for p in sorted(out.iterdir()) if p.name != LOCK_NAME] if out.is_dir() else []


def move_previous_run_aside(
    output_dir: str | Path, inputs: Mapping[str, str | None] | None = None
) -> Path | None:
    """Move every entry of ``output_dir`` (lock file excepted) into the sibling ``.<name>.previous``.

    An older ``.previous`` folder is deleted first, so one earlier run is kept. ``inputs`` (flag -> path)
    are the run's own inputs: one inside ``output_dir`` (the model or data next to the runs) is refused,
    as it would be moved aside and, by the next overwrite, deleted. Returns the folder the entries went
    to, or None when there was nothing to move.
    """
    out = Path(output_dir).resolve()
    entries = run_entries(out)
    if not entries:
        return None
    if Path.cwd().resolve().is_relative_to(out):
        raise RunDirError(
            f"--overwrite_output_dir would move the current working directory aside ({out}); choose an "
            "--output_dir below it."
        )
    for flag, path in (inputs or {}).items():
        if path and Path(path).exists() and Path(path).resolve().is_relative_to(out):
            raise RunDirError(
                f"--overwrite_output_dir would move {flag} {path} aside with the previous run in {out}; "
                "keep inputs outside --output_dir or choose another --output_dir."
            )
    previous = previous_run_dir(out)
    if previous.exists():
        shutil.rmtree(previous)
    staging = out.with_name(f".{out.name}{PREVIOUS_SUFFIX}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for entry in entries:
        entry.rename(staging / entry.name)
    staging.rename(previous)
    logger.warning("--overwrite_output_dir: the previous run in %s was moved to %s", out, previous)
    return previous


def previous_run_dir(output_dir: str | Path) -> Path:
    """Where ``--overwrite_output_dir`` keeps the replaced run: ``.<name>.previous`` next to ``output_dir``."""
    out = Path(output_dir).resolve()
    return out.with_name(f".{out.name}{PREVIOUS_SUFFIX}")


class OutputDirLock:
    """An exclusive, non-blocking lock on ``output_dir`` (``<output_dir>/.train.lock``), held by one run."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._lock = FileLock(str(self.path), timeout=0)
        self.held = False

    def acquire(self) -> None:
        """Take the lock (creating ``output_dir``); RunDirError at once when another process holds it."""
        if self.held:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout as exc:  # before OSError: filelock.Timeout is a TimeoutError
            raise OutputDirBusy(
                f"--output_dir {self.path.parent} is in use by another running train.py (lock {self.path}); "
                "wait for it to end or choose another --output_dir."
            ) from exc
        except OSError as exc:  # a file of that name, a read-only or missing parent
            raise RunDirError(
                f"--output_dir {self.path.parent} cannot be used as a folder ({exc.strerror or exc}); "
                "choose another --output_dir."
            ) from exc
        self.held = True

    def release(self) -> None:
        """Remove the lock file, then unlock: a finished folder holds no trace of the lock. (A process that
        opened the removed file meanwhile sees it unlinked after its lock succeeds and retries: filelock.)"""
        if self.held:
            with contextlib.suppress(OSError):  # Windows cannot remove an open file; it stays behind
                self.path.unlink()
            self._lock.release()
            self.held = False


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why ``checkpoint`` is incomplete (a missing or truncated file), or None when it is complete.

    The Trainer writes the weights, then optimizer, scheduler and RNG state, and ``trainer_state.json``
    last; every one of them must be present and readable (zip archives whole, JSON parseable,
    safetensors headers covering the file).
    """
    folder = Path(checkpoint)
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"{state.name} is missing"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{state.name} is not complete JSON"
    for name in ("optimizer.pt", "scheduler.pt"):
        path = folder / name
        if path.exists() and not zipfile.is_zipfile(path):
            return f"{name} is truncated"
    weights = [p for p in folder.iterdir() if p.suffix == ".safetensors"]
    if not weights and not (folder / "pytorch_model.bin").is_file():
        return "it holds no weights file"
    for path in weights:
        problem = safetensors_problem(path)
        if problem:
            return f"{path.name} {problem}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """None when ``path`` is a whole safetensors file (header parses and covers the file), else why not."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as exc:
        return f"is not a complete safetensors file ({str(exc).splitlines()[0]})"
    return None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered complete ``checkpoint-N`` in ``output_dir``; incomplete ones are skipped
    with a warning naming them and the reason."""
    out = Path(output_dir)
    numbered = []
    for path in out.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1)), path))
    for _, path in sorted(numbered, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        logger.warning("skipping the incomplete checkpoint %s (%s; an interrupted save)", path, problem)
    return None


def check_checkpoint_files(checkpoint: str | Path, flag: str, adapter_run: bool) -> None:
    """Refuse an incomplete checkpoint and, for an adapter run, one holding a weights file we never write
    there (a backbone ``model.safetensors`` would replace the frozen model on resume)."""
    folder = Path(checkpoint)
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise RunDirError(f"{flag} is incomplete ({problem}); resume from an earlier checkpoint.")
    if not adapter_run:
        return
    for path in sorted(folder.iterdir()):
        name = path.name
        if name in CHECKPOINT_FILES or RNG_FILE_PATTERN.match(name):
            continue
        if path.is_dir() or name.endswith(WEIGHT_SUFFIXES):
            raise RunDirError(
                f"{flag} holds {name}, which this project never writes into a checkpoint (only "
                f"{ADAPTER_WEIGHTS} and the optimizer/scheduler/RNG state); remove it or resume from "
                "another checkpoint."
            )
