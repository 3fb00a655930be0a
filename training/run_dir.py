"""The life cycle of an ``--output_dir``: one run at a time, earlier work never destroyed or repeated.

The rules (also stated in README.md, "One output directory, one run"):

- the lock (``<output_dir>/.train.lock``) is taken before anything looks at the folder, so a second
  command into the same folder fails at once (exit 75) instead of deciding on a state about to change;
  on a read-only folder a finished run is still "finished, nothing to do";
- a finished run (its ``all_results.json`` exists) is never redone;
- *a run's files* are the names in ``RUN_FILES`` and ``RUN_FILE_PATTERNS``; anything else in the folder
  (a shell's ``> $OUT/train.out``) is not a run's and never blocks, moves or counts;
- ``--overwrite_output_dir`` and a restart over a folder holding nothing to keep (no complete checkpoint,
  no results: a run stopped before its first checkpoint) move the run's files, and only those, into a new
  hidden sibling ``.<name>.previous`` (then ``.previous.2``, ``.previous.3``...); nothing is deleted, and
  the result scripts (``scripts/_runs.py`` skips hidden folders) never count it as a run;
- a folder holding other runs in its subfolders (a sweep root) is never used as one run's folder;
- a checkpoint is complete when its ``checkpoint_manifest.json`` matches its files
  (``training.manifest``); a resume picks the newest complete one, naming each one skipped, and reads
  only the files this project writes into a checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from filelock import FileLock, Timeout

from training.contract import LOCK_NAME
from training.identity import IDENTITY_NAME
from training.manifest import MANIFEST_NAME, manifest_problem
from training.outputs import ALL_RESULTS, RESULTS_SUFFIX, RUN_CONFIG

logger = logging.getLogger(__name__)

PREVIOUS_SUFFIX = ".previous"
TRAIN_RESULTS = "train_results.json"
OUTPUT_LOG = "output.log"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model", "spm.model",
    "vocab.txt", "vocab.json", "merges.txt",
})  # fmt: skip
# Files a checkpoint of an adapter run may hold; anything else that can carry weights is refused.
CHECKPOINT_FILES = frozenset({
    ADAPTER_WEIGHTS, "adapter_config.json", "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth",
    TRAINER_STATE, "training_args.bin", "resume_record.json", MANIFEST_NAME, *TOKENIZER_FILES,
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
# What train.py writes at the top of --output_dir: records, the final adapter (or the baseline's model) and
# its tokenizer, the Trainer's state and TensorBoard folder.
RUN_FILES = frozenset({
    IDENTITY_NAME, RUN_CONFIG, OUTPUT_LOG, ALL_RESULTS, TRAINER_STATE, "training_args.bin", ADAPTER_WEIGHTS,
    "adapter_config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
    "config.json", "generation_config.json", "runs", *TOKENIZER_FILES,
})  # fmt: skip
RUN_FILE_PATTERNS = (
    CHECKPOINT_PATTERN,
    re.compile(rf"^\w+{re.escape(RESULTS_SUFFIX)}$"),  # train/eval/test_results.json
    re.compile(r"^predictions_\w+\.jsonl$"),
    re.compile(r"^model-\d+-of-\d+\.safetensors$"),  # a sharded baseline model
    re.compile(r"^\..+\.tmp$"),  # the temp file of an atomic write cut off by a kill
)
# Files that make a folder a run's folder (scripts/_runs.py finds runs by the same files).
RUN_MARKERS = (IDENTITY_NAME, RUN_CONFIG, ALL_RESULTS, OUTPUT_LOG)
READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


class RunDirError(ValueError):
    """An output directory or checkpoint that cannot be used as asked; the message names the fix."""


class OutputDirBusy(RunDirError):
    """Another running process holds the ``--output_dir`` lock (``train.py`` exits ``EXIT_BUSY``)."""


class OutputDirReadOnly(RunDirError):
    """The lock file cannot be created: the folder (or its file system) is read-only."""


def is_finished(output_dir: str | Path) -> bool:
    """True when ``output_dir`` holds the ``all_results.json`` that a run writes as its very last file."""
    return (Path(output_dir) / ALL_RESULTS).is_file()


def training_finished(output_dir: str | Path) -> bool:
    """True when training ended and its final adapter and ``train_results.json`` were written."""
    out = Path(output_dir)
    return (out / TRAIN_RESULTS).is_file() and (out / ADAPTER_WEIGHTS).is_file()


def is_run_file(name: str) -> bool:
    """True for a name that ``train.py`` writes at the top of ``--output_dir`` (see ``RUN_FILES``)."""
    return name in RUN_FILES or any(pattern.match(name) for pattern in RUN_FILE_PATTERNS)


def run_files(output_dir: str | Path) -> list[Path]:
    """The entries of ``output_dir`` that a run wrote; other files (a shell's redirect target) are left out."""
    out = Path(output_dir)
    return [p for p in sorted(out.iterdir()) if is_run_file(p.name)] if out.is_dir() else []


def has_results(output_dir: str | Path) -> bool:
    """True when a run wrote a ``<split>_results.json`` or ``all_results.json`` into ``output_dir``."""
    return any(p.name.endswith(RESULTS_SUFFIX) and p.is_file() for p in run_files(output_dir))


def nested_runs(output_dir: str | Path, limit: int = 3) -> list[Path]:
    """Up to ``limit`` folders below ``output_dir`` that hold a run of their own (``RUN_MARKERS``).

    Checkpoints and hidden folders (earlier runs moved aside) are not searched, nor is any folder below a
    run that was found.
    """
    found: list[Path] = []
    for root, dirs, _ in os.walk(output_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not CHECKPOINT_PATTERN.match(d))
        for name in list(dirs):
            folder = Path(root) / name
            if any((folder / marker).is_file() for marker in RUN_MARKERS):
                found.append(folder)
                dirs.remove(name)
                if len(found) >= limit:
                    return found
    return found


def refuse_nested_runs(output_dir: str | Path) -> None:
    """RunDirError when ``output_dir`` is a folder of runs (a sweep root): one run's files there would hide
    the others from the result scripts, and an overwrite would have to choose what belongs to whom."""
    out = Path(output_dir)
    runs = nested_runs(out) if out.is_dir() else []
    if runs:
        names = ", ".join(str(p.relative_to(out)) for p in runs)
        raise RunDirError(
            f"--output_dir {out} holds other runs in its subfolders ({names}); give this run a folder of its "
            f"own, e.g. --output_dir {out / '<run name>'}."
        )


def previous_run_dir(output_dir: str | Path) -> Path:
    """The first free name for a run moved aside: ``.<name>.previous``, then ``.<name>.previous.2``, ...

    A taken name (a folder of an earlier run, or any file) is never reused.
    """
    out = Path(output_dir).resolve()
    base = out.with_name(f".{out.name}{PREVIOUS_SUFFIX}")
    candidate, number = base, 1
    while os.path.lexists(candidate):
        number += 1
        candidate = base.with_name(f"{base.name}.{number}")
    return candidate


def move_run_aside(
    output_dir: str | Path, reason: str, inputs: Mapping[str, str | None] | None = None
) -> Path | None:
    """Move the run's files of ``output_dir`` (``run_files``) into a new ``previous_run_dir``.

    Nothing is deleted: earlier ``.previous`` folders stay, and files that are not a run's stay where they
    are. ``inputs`` (flag -> path) are the run's own inputs; one inside a file to be moved (the checkpoint
    this run starts from), or ``output_dir`` itself, is refused, naming ``reason`` (what moves it). Returns the new folder, or None
    when the folder held no run's file.
    """
    out = Path(output_dir).resolve()
    entries = run_files(out)
    if not entries:
        return None
    if any(Path.cwd().resolve().is_relative_to(entry) for entry in entries):
        raise RunDirError(
            f"{reason} would move the current working directory ({Path.cwd()}) aside with the previous run in "
            f"{out}; run from another folder."
        )
    for flag, path in (inputs or {}).items():
        source = Path(path).resolve() if path and Path(path).exists() else None
        # an input inside a file to be moved, or the folder itself (a model saved into it)
        if source is not None and (source == out or any(source.is_relative_to(e) for e in entries)):
            raise RunDirError(
                f"{reason} would move {flag} {path} aside with the previous run in {out}; copy it outside "
                "--output_dir first or choose another --output_dir."
            )
    # a new hidden folder beside out; a move cut off by a kill leaves it behind, holding whole files only
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{PREVIOUS_SUFFIX}.partial-", dir=out.parent))
    staging.chmod(out.stat().st_mode & 0o7777)  # mkdtemp makes it private; keep the run folder's permissions
    for entry in entries:
        entry.rename(staging / entry.name)
    previous = previous_run_dir(out)
    staging.rename(previous)
    return previous


def holds_nothing_to_keep(output_dir: str | Path) -> bool:
    """True when ``output_dir`` holds a run's files but no complete checkpoint, no final adapter and no
    results: what a run stopped before its first checkpoint (killed, out of disk) leaves behind."""
    out = Path(output_dir)
    return bool(run_files(out)) and not (
        has_results(out) or training_finished(out) or last_complete_checkpoint(out, warn=False)
    )


class OutputDirLock:
    """An exclusive, non-blocking lock on ``output_dir`` (``<output_dir>/.train.lock``), held by one run.

    ``acquire`` creates ``output_dir`` when needed; ``release`` removes the lock file and the folders that
    ``acquire`` created when they are still empty (a run refused by a check leaves no trace).
    """

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._lock = FileLock(str(self.path), timeout=0)
        self._created: list[Path] = []
        self.held = False

    def acquire(self) -> None:
        """Take the lock; OutputDirBusy at once when another process holds it, OutputDirReadOnly when the
        lock file cannot be created there (read-only), RunDirError when the path cannot be a folder."""
        if self.held:
            return
        folder = self.path.parent
        self._created = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except Timeout as exc:  # before OSError: filelock.Timeout is a TimeoutError
            raise OutputDirBusy(
                f"--output_dir {folder} is in use by another running train.py (lock {self.path}); "
                "wait for it to end or choose another --output_dir."
            ) from exc
        except OSError as exc:
            self._remove_created()
            if exc.errno in READ_ONLY_ERRNOS:
                raise OutputDirReadOnly(
                    f"--output_dir {folder} is read-only ({exc.strerror or exc}; the lock file {self.path} "
                    "cannot be created); choose a writable --output_dir."
                ) from exc
            raise RunDirError(  # a file of that name, or below one
                f"--output_dir {folder} cannot be used as a folder ({exc.strerror or exc}); "
                "choose another --output_dir."
            ) from exc
        self.held = True

    def release(self) -> None:
        """Remove the lock file, then unlock: a finished folder holds no trace of the lock. (A process that
        opened the removed file meanwhile sees it unlinked after its lock succeeds and retries: filelock.)"""
        if not self.held:
            return
        with contextlib.suppress(OSError):  # Windows cannot remove an open file; it stays behind
            self.path.unlink()
        self._lock.release()
        self.held = False
        self._remove_created()

    def _remove_created(self) -> None:
        """Remove the folders ``acquire`` created, innermost first, up to the first that is not empty."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                break


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why ``checkpoint`` is not complete (its manifest is missing or does not match), or None."""
    return manifest_problem(checkpoint)


def unmanifested_checkpoint_problem(checkpoint: str | Path) -> str | None:
    """For a checkpoint without a manifest (an older version's): why its files are visibly incomplete (a
    missing or truncated trainer state, optimizer, scheduler or weights file), or None."""
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
        if not path.is_file():
            return f"{name} is missing"
        if not zipfile.is_zipfile(path):
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


def last_complete_checkpoint(output_dir: str | Path, warn: bool = True) -> str | None:
    """The highest-numbered complete ``checkpoint-N`` in ``output_dir``; with ``warn`` each newer one that
    is skipped gets one warning line naming it and the reason."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    numbered = []
    for path in out.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1)), path))
    for _, path in sorted(numbered, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if warn:
            logger.warning("skipping the incomplete checkpoint %s: %s", path, problem)
    return None


def check_checkpoint_files(checkpoint: str | Path, flag: str, adapter_run: bool) -> None:
    """Refuse an incomplete checkpoint and, for an adapter run, one holding a weights file we never write
    there (a backbone ``model.safetensors`` would replace the frozen model on resume).

    A checkpoint without a manifest (written by an older version) is accepted only when named explicitly
    (the caller's ``flag``) and when no file is visibly missing or truncated; a warning says so.
    """
    folder = Path(checkpoint)
    problem = checkpoint_problem(folder)
    if problem is not None and (folder / MANIFEST_NAME).exists():
        raise RunDirError(f"{flag} is incomplete ({problem}); resume from an earlier checkpoint.")
    if problem is not None:
        legacy = unmanifested_checkpoint_problem(folder)
        if legacy is not None:
            raise RunDirError(f"{flag} is incomplete ({legacy}); resume from an earlier checkpoint.")
        logger.warning(
            "%s has no %s (written by an older version): it was checked for missing and truncated files only",
            flag,
            MANIFEST_NAME,
        )
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


def relative_to_run(path: str | os.PathLike | None, output_dir: str | os.PathLike) -> str | None:
    """``path`` as recorded in a run's files: relative to ``output_dir`` when inside it (the folder can be
    moved), else unchanged."""
    if path is None:
        return None
    resolved, out = Path(path).resolve(), Path(output_dir).resolve()
    return resolved.relative_to(out).as_posix() if resolved.is_relative_to(out) else str(path)


def resolve_in_run(path: str | None, output_dir: str | os.PathLike) -> str | None:
    """A path read from a run's files, resolved against the run's current ``output_dir``."""
    if path is None or Path(path).is_absolute():
        return path
    return str(Path(output_dir) / path)


def prepare_output_dir(
    output_dir: str | Path, *, overwrite: bool, starts_training: bool, inputs: Mapping[str, str | None]
) -> Path | None:
    """Clear ``output_dir`` for a run that starts from scratch, once every check has passed.

    With ``overwrite`` (``--overwrite_output_dir``) the run's files are moved aside; so are they, without
    the flag, when a run that trains from the start finds nothing to keep (``holds_nothing_to_keep``).
    Returns the folder they went to, or None when nothing was moved.
    """
    out = Path(output_dir)
    if overwrite:
        previous = move_run_aside(out, "--overwrite_output_dir", inputs)
        if previous is not None:
            logger.warning("--overwrite_output_dir: the previous run's files in %s were moved to %s", out, previous)
        return previous
    if not (starts_training and holds_nothing_to_keep(out)):
        return None
    previous = move_run_aside(out, "starting over", inputs)
    logger.warning(
        "%s holds no complete checkpoint and no results (a run stopped before its first checkpoint): its files "
        "were moved to %s; starting over",
        out,
        previous,
    )
    return previous
