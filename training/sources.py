"""Where a run's model, tokenizer and data come from, checked before anything loads.

A ``--model_name_or_path`` that is neither a folder nor a hub id is a mistyped folder. When something
is to come from the hub and the hub cannot be reached (no network), the run stops at once with the
offline recipe instead of letting the hub client retry for half a minute.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from training.head_only import holds_trained_only
from training.planner.checks import ConfigError

OFFLINE_RECIPE = (
    "to run offline, pass --model_name_or_path DIR and --data_dir DIR and set HF_HUB_OFFLINE=1 "
    "(README, 'Offline use')"
)
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
PROBE_TIMEOUT_S = 3.0


def hub_sources(model_args: Any, data_args: Any) -> list[str]:
    """The flags whose value is to be read from the hub (not a local folder); ConfigError for a value
    that is neither a folder nor a valid hub id."""
    needed = []
    for flag, value in (
        ("--model_name_or_path", model_args.model_name_or_path),
        ("--tokenizer_name", model_args.tokenizer_name),
    ):
        if value is None or Path(value).is_dir():
            continue
        try:
            validate_repo_id(value)
        except HFValidationError:
            raise ConfigError(f"{flag} {value}: no such folder (and not a hub id such as t5-base).") from None
        needed.append(f"{flag} {value}")
    if data_args.data_dir is None:
        needed.append(f"--task_name {data_args.task_name} without --data_dir")
    return needed


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached (a failed name lookup or connection), or None when it can.

    Not probed (None) under a proxy, which the hub client uses and a direct connection does not.
    """
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return None
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{url.hostname}: {exc}"


def check_trained_only_folders(model_args: Any) -> None:
    """A HEAD_ONLY run's folder (trained tensors only) is read with --peft_model_id, never as a model."""
    model = model_args.model_name_or_path
    if holds_trained_only(model):
        raise ConfigError(
            f"--model_name_or_path {model} holds only the tensors a HEAD_ONLY run trained; pass the base "
            f"model as --model_name_or_path and --peft_type HEAD_ONLY --peft_model_id {model}."
        )
    head = model_args.peft_model_id
    if model_args.peft_type == "HEAD_ONLY" and head is not None and not holds_trained_only(head):
        raise ConfigError(f"--peft_model_id {head}: not the output folder of a --peft_type HEAD_ONLY run.")


def check_sources(model_args: Any, data_args: Any) -> None:
    """ConfigError (one line) for a mistyped folder, a HEAD_ONLY folder in the wrong flag, or hub sources
    while the hub is unreachable."""
    check_trained_only_folders(model_args)
    needed = hub_sources(model_args, data_args)
    if not needed or constants.HF_HUB_OFFLINE:
        return  # offline mode: the libraries read their cache and fail at once without retries
    reason = hub_unreachable()
    if reason is not None and needed[0].startswith("--model_name_or_path"):
        raise ConfigError(
            f"{needed[0]}: no such folder, and the hub it would be read from cannot be reached ({reason}); "
            f"{OFFLINE_RECIPE}."
        )
    if reason is not None:
        raise ConfigError(
            f"{'; '.join(needed)}: needs the hub, which cannot be reached ({reason}); {OFFLINE_RECIPE}."
        )
