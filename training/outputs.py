"""Result files of a run, written atomically (temp file in the same folder, fsync, rename).

A crash mid-write leaves the previous version of a file intact, so a results file that exists is
always complete.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESULTS_SUFFIX = "_results.json"
ALL_RESULTS = "all_results.json"
RUN_CONFIG = "run_config.json"
RESULT_SPLITS = ("train", "eval", "test")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file, fsync and ``os.replace`` (atomic on POSIX and Windows):
    a kill, a full disk (ENOSPC) or a file-size limit (EFBIG) mid-write leaves the previous file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder, nor needs to)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """JSON with indent 4 and sorted keys (the HF Trainer's layout), written atomically."""
    atomic_write_text(path, json.dumps(data, indent=4, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """Serialise enums, paths, numpy scalars and other non-JSON values of argument dataclasses."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if hasattr(value, "value") and isinstance(value.value, (str, int, float)):
        return value.value
    return str(value)


def save_split_metrics(output_dir: str | os.PathLike, split: str, metrics: Mapping[str, Any]) -> None:
    """Write ``<split>_results.json`` (``all_results.json`` is written once, at the end of a run)."""
    atomic_write_json(Path(output_dir) / f"{split}{RESULTS_SUFFIX}", dict(metrics))


def write_all_results(output_dir: str | os.PathLike, extra: Mapping[str, Any]) -> None:
    """``all_results.json``: the keys of every ``{train,eval,test}_results.json`` in ``output_dir`` plus
    ``extra``. Written last: its presence marks a finished run."""
    output_dir = Path(output_dir)
    merged: dict[str, Any] = {}
    for split in RESULT_SPLITS:
        path = output_dir / f"{split}{RESULTS_SUFFIX}"
        if path.is_file():
            merged.update(json.loads(path.read_text(encoding="utf-8")))
    merged.update(extra)
    atomic_write_json(output_dir / ALL_RESULTS, merged)


def write_predictions(
    path: str | os.PathLike, sources: Iterable[str], targets: Iterable[str], predictions: Iterable[str]
) -> None:
    """``predictions_<split>.jsonl``: one ``{"source", "target", "prediction"}`` object per example, in order."""
    sources, targets, predictions = list(sources), list(targets), list(predictions)
    if not len(sources) == len(targets) == len(predictions):
        raise ValueError(
            f"predictions file {path}: {len(sources)} sources, {len(targets)} targets, "
            f"{len(predictions)} predictions"
        )
    lines = [
        json.dumps({"source": s, "target": t, "prediction": p}, ensure_ascii=False)
        for s, t, p in zip(sources, targets, predictions, strict=True)
    ]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import datasets
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
    }


def git_state(repo_dir: str | os.PathLike) -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes to tracked files) of ``repo_dir``; (None, None) outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, bool(status)


def write_run_config(output_dir: str | os.PathLike, summary: Mapping[str, Any], **arg_groups: Any) -> None:
    """``run_config.json``: ``summary`` keys, every argument group as a dict, versions and git commit."""
    config: dict[str, Any] = dict(summary)
    for name, group in arg_groups.items():
        config[name] = group.to_dict() if hasattr(group, "to_dict") else dict(vars(group))
    config["versions"] = library_versions()
    config["git_commit"], config["git_dirty"] = git_state(Path(__file__).resolve().parents[1])
    atomic_write_json(Path(output_dir) / RUN_CONFIG, config)
