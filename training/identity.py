"""A run's identity: everything that fixes its result, recorded when the run starts.

``run_identity.json`` in the output folder (and a copy in every checkpoint's ``resume_record.json``) holds

- ``flags``: every argument of the three groups except those that only say where results go or how a run
  reports and paces itself (``NOT_RESULT_FLAGS``, each with its reason): a new flag counts by default;
- ``backbone``: the model's ``config.json`` (hashed) and each weight file's name, size and hash (the whole
  file up to ``FULL_HASH_LIMIT``, else 16 evenly spaced blocks of 1 MiB, which differ between any two
  trained checkpoints), or the hub id when the model is not a local folder;
- ``data``: each data file the run reads (split -> size and sha256), or the hub dataset it loads;
- ``inputs``: the adapter files of ``--peft_model_id`` / ``--pretrain_scpp_ckpt`` / ``--pretrain_scap_ckpt``.

Paths themselves are not part of it: a data or model folder that moved still has the same identity.
A resume and a rerun into a finished folder compare the recorded identity with the command's
(``identity_differences``); ``train.py`` refuses any difference unless the user's explicit flag says
they mean it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from training.outputs import RUN_CONFIG, atomic_write_json

logger = logging.getLogger(__name__)

IDENTITY_NAME = "run_identity.json"
FULL_HASH_LIMIT = 64 * 2**20
SAMPLE_BLOCKS = 16
BLOCK = 2**20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")

NOT_RESULT_FLAGS: dict[str, str] = {
    # where results and logs go
    "output_dir": "where the results go",
    "overwrite_output_dir": "what to do with an earlier run, not what this one computes",
    "resume_from_checkpoint": "where to continue from",
    "allow_changed_resume_flags": "permission to resume with changes (the changes themselves are compared)",
    "logging_dir": "where logs go",
    "cache_dir": "where downloads are cached",
    "model_name_or_path": "a path: the backbone's fingerprint stands for it",
    "data_dir": "a path: the data files' fingerprints stand for it",
    "peft_model_id": "a path: the adapter files' fingerprints stand for it",
    "pretrain_scpp_ckpt": "a path: the adapter files' fingerprints stand for it",
    "pretrain_scap_ckpt": "a path: the adapter files' fingerprints stand for it",
    "run_name": "a label for the logging integrations",
    "project": "a label for the logging integrations",
    "report_to": "which logging integrations receive the logs",
    "trackio_space_id": "a logging integration",
    "trackio_bucket_id": "a logging integration",
    "trackio_static_space_id": "a logging integration",
    "push_to_hub": "publishing, not computing",
    "hub_model_id": "publishing, not computing",
    "hub_strategy": "publishing, not computing",
    "hub_token": "a secret, never recorded",
    "hub_private_repo": "publishing, not computing",
    "hub_always_push": "publishing, not computing",
    "hub_revision": "publishing, not computing",
    # how a run reports
    "log_level": "what is printed",
    "log_level_replica": "what is printed",
    "log_on_each_node": "what is printed",
    "logging_strategy": "when losses are logged",
    "logging_steps": "when losses are logged",
    "logging_first_step": "when losses are logged",
    "logging_nan_inf_filter": "what is logged",
    "disable_tqdm": "progress bars",
    "include_num_input_tokens_seen": "a logged counter",
    "skip_memory_metrics": "logged memory figures",
    # how a run paces itself and uses the machine
    "save_strategy": "when checkpoints are written (resume points, not results)",
    "save_steps": "when checkpoints are written (resume points, not results)",
    "save_total_limit": "how many checkpoints are kept",
    "save_on_each_node": "where checkpoints are written",
    "save_only_model": "what a checkpoint holds",
    "enable_jit_checkpoint": "when checkpoints are written",
    "stop_on_nan": "what happens on a failure",
    "per_device_eval_batch_size": "evaluation speed and memory (rows are scored one by one)",
    "eval_accumulation_steps": "evaluation memory",
    "dataloader_num_workers": "speed",
    "dataloader_pin_memory": "speed",
    "dataloader_persistent_workers": "speed",
    "dataloader_prefetch_factor": "speed",
    "preprocessing_num_workers": "speed",
    "overwrite_cache": "speed",
    "torch_empty_cache_steps": "memory",
    "local_rank": "set per process by the launcher",
    "ddp_timeout": "how long processes wait for each other",
    "ddp_backend": "the communication library",
    "ddp_bucket_cap_mb": "communication speed",
    "ddp_find_unused_parameters": "communication",
    "ddp_broadcast_buffers": "communication",
    "ddp_static_graph": "communication",
    "trust_remote_code": "permission to run a model's code (the model's files are fingerprinted)",
    "debug": "debugging output",
}
"""Flags that do not change what a run computes, each with the reason; every other flag is identity."""


def plain(value: Any) -> Any:
    """A JSON-comparable form of a flag value (enums by value, lists kept, others as text)."""
    value = getattr(value, "value", value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in sorted(value.items())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    return str(value)


def result_flags(*argument_groups: Any) -> dict[str, Any]:
    """Every field of the argument dataclasses that fixes the result, by flag name."""
    flags = {}
    for group in argument_groups:
        for item in dataclasses.fields(group):
            if item.name not in NOT_RESULT_FLAGS:
                flags[item.name] = plain(getattr(group, item.name))
    return flags


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file: of all of it up to ``FULL_HASH_LIMIT``, else of 16 spaced 1 MiB blocks."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
            return {"size": size, "sha256": digest.hexdigest()}
        for index in range(SAMPLE_BLOCKS):
            handle.seek((size - BLOCK) * index // (SAMPLE_BLOCKS - 1))
            digest.update(handle.read(BLOCK))
    return {"size": size, "sampled_sha256": digest.hexdigest()}


def backbone_fingerprint(model_name_or_path: str) -> dict[str, Any]:
    """``config.json`` and weight files of a local model folder; the hub id otherwise."""
    folder = Path(model_name_or_path)
    if not folder.is_dir():
        return {"hub_id": model_name_or_path}
    files = {"config.json": file_fingerprint(folder / "config.json")} if (folder / "config.json").is_file() else {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES):
            files[path.name] = file_fingerprint(path)
    return files


def folder_fingerprint(folder: str | None) -> dict[str, Any] | None:
    """The adapter files of a saved adapter folder (None when no folder is given)."""
    if not folder:
        return None
    root = Path(folder)
    return {name: file_fingerprint(root / name) for name in ADAPTER_FILES if (root / name).is_file()}


def data_fingerprint(files: dict[str, Path | str]) -> dict[str, Any]:
    """Split -> fingerprint of its local file, or the hub dataset's name for a split read from the hub."""
    return {
        split: file_fingerprint(Path(source)) if Path(source).is_file() else {"hub": str(source)}
        for split, source in sorted(files.items())
    }


def build_identity(
    argument_groups: Iterable[Any], model_name_or_path: str, data_files: dict[str, Path | str],
    inputs: dict[str, str | None],
) -> dict[str, Any]:  # fmt: skip
    """The identity of a command: its result flags, backbone, data files and input adapter folders."""
    return {
        "flags": result_flags(*argument_groups),
        "backbone": backbone_fingerprint(model_name_or_path),
        "data": data_fingerprint(data_files),
        "inputs": {flag: folder_fingerprint(path) for flag, path in sorted(inputs.items()) if path},
    }


def write_identity(folder: str | Path, identity: dict[str, Any]) -> None:
    atomic_write_json(Path(folder) / IDENTITY_NAME, identity)


def read_identity(folder: str | Path) -> dict[str, Any] | None:
    """The recorded identity of a run folder; for a folder written before identities existed, the flags
    part rebuilt from its ``run_config.json`` (``partial``: backbone and data were not recorded); None
    when neither file is there."""
    folder = Path(folder)
    path = folder / IDENTITY_NAME
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    config = folder / RUN_CONFIG
    if not config.is_file():
        return None
    recorded = json.loads(config.read_text(encoding="utf-8"))
    groups = [recorded.get(name) or {} for name in ("model_args", "data_args", "training_args")]
    flags = {key: plain(value) for group in groups for key, value in group.items() if key not in NOT_RESULT_FLAGS}
    return {"flags": flags, "partial": True}


def identity_differences(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """One phrase per difference ("--learning_rate: 0.3 recorded, 0.5 now", "data train: other file"),
    comparing what both identities hold (an older, partial record has flags only)."""
    differences = []
    old_flags, new_flags = recorded.get("flags", {}), now.get("flags", {})
    for name in sorted(set(old_flags) & set(new_flags)):
        if recorded.get("partial") and not all(_scalar(v) for v in (old_flags[name], new_flags[name])):
            continue  # an older run_config.json wrote structured values in another layout
        if old_flags[name] != new_flags[name]:
            differences.append(f"--{name}: {old_flags[name]!r} recorded, {new_flags[name]!r} now")
    for part, what in (("backbone", "backbone file"), ("data", "data split"), ("inputs", "input adapter")):
        if part not in recorded or part not in now:
            continue
        old, new = recorded[part], now[part]
        for key in sorted(set(old) | set(new)):
            if key not in old or key not in new:
                state = "not recorded" if key not in old else "gone now"
                differences.append(f"{what} {key}: {state}")
            elif old[key] != new[key]:
                differences.append(f"{what} {key}: other contents ({_short(old[key])} recorded, {_short(new[key])} now)")
    return differences


def changed_flags(recorded: dict[str, Any], now: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{flag: {"checkpoint": recorded, "now": now}}`` for the flags that differ (for run_config.json)."""
    old, new = recorded.get("flags", {}), now.get("flags", {})
    return {name: {"checkpoint": old[name], "now": new[name]} for name in sorted(set(old) & set(new))
            if old[name] != new[name]}  # fmt: skip


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _short(fingerprint: Any) -> str:
    if not isinstance(fingerprint, dict):
        return str(fingerprint)
    digest = fingerprint.get("sha256") or fingerprint.get("sampled_sha256")
    if digest:
        return f"{fingerprint.get('size')} bytes, sha256 {digest[:12]}"
    return ", ".join(f"{key} {value}" for key, value in fingerprint.items())
