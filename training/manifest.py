"""``checkpoint_manifest.json``: the proof that a checkpoint folder is complete.

Written last into every checkpoint, after the Trainer and ``resume_record.json`` wrote everything, and
atomically (``training.outputs.atomic_write_json``). It lists each file of the folder (its path relative
to the folder, its size in bytes and its sha256). A checkpoint is complete if and only if its manifest
exists and every listed file is there with that size and hash: a save cut off by a kill, a full disk or
a file-size limit, a file removed or replaced later, all show up as a mismatch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from training.outputs import atomic_write_json

MANIFEST_NAME = "checkpoint_manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20  # bytes read at a time while hashing


def file_sha256(path: Path) -> str:
    """Hex sha256 of the bytes of ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _listed_files(folder: Path) -> list[Path]:
    """Every file below ``folder`` except the manifest and hidden temp files of interrupted writes."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
    )


def write_manifest(folder: str | Path) -> dict[str, Any]:
    """Describe every file of ``folder`` in ``folder/checkpoint_manifest.json``; returns the manifest."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in _listed_files(folder)
    }
    manifest = {"version": MANIFEST_VERSION, "files": files}
    atomic_write_json(folder / MANIFEST_NAME, manifest)
    return manifest


def manifest_problem(folder: str | Path) -> str | None:
    """Why ``folder`` does not match its manifest (first difference found), or None when it does."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return f"it has no {MANIFEST_NAME} (a save that did not finish, or a checkpoint of an older version)"
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST_NAME} is not readable"
    if not files:
        return f"{MANIFEST_NAME} lists no file"
    for name, expected in sorted(files.items()):
        member = folder / name
        if not member.is_file():
            return f"{name} is missing"
        size = member.stat().st_size
        if size != expected["bytes"]:
            return f"{name} has {size} bytes, {MANIFEST_NAME} says {expected['bytes']}"
        if file_sha256(member) != expected["sha256"]:
            return f"{name} differs from its sha256 in {MANIFEST_NAME}"
    return None
