"""Saving and loading adapter tensors: ours (safetensors) and the original ``adapter_model.bin`` files.

Keys are the original names (``prompt_embeddings``, ``prompt_weight``, ``codebook_prompt``,
``prompt_encoder.lora_embedding_A/B``, ``prompt_encoder.lora_weight``, ``prompt_encoder.codebook_lora``)
plus, for classifiers, the head's own parameter names. Legacy ``.bin`` files are read with
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .encoders import (
    KEY_LORA_A,
    KEY_LORA_B,
    KEY_SCAP_CODEBOOK,
    KEY_SCAP_WEIGHT,
    KEY_ULPT_PROJECTION,
    SCAP_TRANSFER_KEYS,
    SCPP_TRANSFER_KEYS,
    random_projection_bound,
)
from .errors import AdapterConfigError

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "adapter_model.safetensors"
LEGACY_WEIGHTS_NAME = "adapter_model.bin"
RNG_STATE_NAME = "rng_state.pth"
"""The original ULPT's CPU RNG state, saved just before it draws its random projection."""

# Spellings without the "prompt_encoder." prefix (ACCEPT's pretrain_init files use both).
_ALIASES = {
    k.removeprefix("prompt_encoder."): k for k in (KEY_LORA_A, KEY_LORA_B, KEY_SCAP_WEIGHT, KEY_SCAP_CODEBOOK)
}


class MissingAdapterTensorsWarning(UserWarning):
    """An adapter file lacks tensors the model has; those keep their initial values."""


def canonical_key(key: str) -> str:
    """Drop the adapter name (``.default``) and map prefix-less spellings to the original key."""
    key = key.replace(".default", "")
    return _ALIASES.get(key, key)


def adapter_file(directory: str | Path) -> Path:
    """The adapter weights file in ``directory``: ours (safetensors) first, else the original .bin."""
    directory = Path(directory)
    for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"No {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME} in {directory}.")


def read_adapter_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """Load every tensor of the adapter file on CPU, keys canonicalised."""
    path = adapter_file(directory)
    if path.suffix == ".safetensors":
        try:
            raw = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ValueError(
                f"{path} is not a readable safetensors file ({_first_line(exc)}): truncated, empty or not "
                "written by save_pretrained; save the adapter again"
            ) from exc
    else:
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{path}: refused to load: the pickle holds objects other than tensors, which could run "
                f"code; only plain tensor files are read (weights_only=True). Detail: {_first_line(exc)}"
            ) from exc
        if not isinstance(raw, Mapping):
            raise ValueError(f"{path} does not hold a dict of tensors.")
    out = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is not a tensor.")
        out[canonical_key(key)] = value
    return out


# DePT's released prompt-only adapters lack A and B; with B = 0 at construction the added update is zero.
OPTIONAL_TOGETHER = frozenset({KEY_LORA_A, KEY_LORA_B})


def check_adapter_state(state: Mapping[str, torch.Tensor], expected: Iterable[str], source: str) -> None:
    """Every ``expected`` tensor is in ``state`` (A and B may be absent together) and every value is finite.

    Raises ValueError naming ``source`` and the tensors: an adapter file with no tensors, without its
    prompt, or with NaN/inf values would otherwise be evaluated as a random or NaN adapter.
    """
    expected = set(expected)
    missing = expected - set(state)
    if missing and not (missing <= OPTIONAL_TOGETHER and OPTIONAL_TOGETHER <= missing):
        raise ValueError(
            f"{source} lacks the adapter tensors {sorted(missing)} (it holds {sorted(state) or 'no tensors'}); "
            "use the folder the adapter was saved to"
        )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{source}: tensor {key} holds NaN or infinite values; use an earlier checkpoint"
            )


def with_original_projection(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], directory: str | Path
) -> dict[str, torch.Tensor]:
    """``state`` plus ULPT's random projection regenerated from ``directory/rng_state.pth`` when the adapter
    needs one (``expected`` has the key) and the file lacks it (the original ULPT does not save it).

    The original restores the saved CPU RNG state and draws ``torch.empty(G, r, d).uniform_(-c, c)``,
    c = sqrt(6 / (r + d)); a generator set to that state draws the same numbers (the global RNG is left
    alone). The state file is read with ``torch.load(weights_only=True)``.
    """
    if KEY_ULPT_PROJECTION not in expected or KEY_ULPT_PROJECTION in state:
        return dict(state)
    path = Path(directory) / RNG_STATE_NAME
    if not path.is_file():
        raise ValueError(
            f"{directory} holds no {KEY_ULPT_PROJECTION} (ULPT's frozen projection) and no {RNG_STATE_NAME} to "
            "regenerate it as the original ULPT code does; use the folder the adapter was trained in"
        )
    try:
        rng_state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: refused to load: not a plain tensor file ({_first_line(exc)})") from exc
    if not isinstance(rng_state, torch.Tensor) or rng_state.dtype != torch.uint8:
        raise ValueError(f"{path} does not hold a CPU RNG state (a uint8 tensor from torch.get_rng_state()).")
    shape = tuple(expected[KEY_ULPT_PROJECTION].shape)
    bound = random_projection_bound(shape[1], shape[2])
    generator = torch.Generator()
    generator.set_state(rng_state)
    projection = torch.empty(shape, dtype=torch.float32).uniform_(-bound, bound, generator=generator)
    return {**state, KEY_ULPT_PROJECTION: projection}


def _first_line(exc: BaseException) -> str:
    """The most specific line of torch's multi-line unpickling error (the refused global)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(exc).__name__])[0].split(" Please use")[0]


def save_tensors(
    named: Mapping[str, torch.nn.Parameter],
    directory: str | Path,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    qualified_names: Mapping[str, str] | None = None,
) -> Path:
    """Write detached, contiguous CPU copies of ``named`` to ``directory/adapter_model.safetensors``.

    When ``state_dict`` (a full model state dict, as the Trainer may pass) is given, values are
    taken from it by each tensor's qualified module name when present.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, param in named.items():
        value = param
        if state_dict is not None and qualified_names is not None and qualified_names.get(key) in state_dict:
            value = state_dict[qualified_names[key]]
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    out = directory / WEIGHTS_NAME
    save_file(tensors, str(out), metadata={"format": "pt"})
    return out


def load_tensors_into(
    named: Mapping[str, torch.nn.Parameter],
    state: Mapping[str, torch.Tensor],
    source: str,
    required: Iterable[str] = (),
) -> list[str]:
    """Copy ``state`` into the parameters ``named`` (same keys) with a shape check.

    Unexpected keys (a different method's tensors) and missing ``required`` keys raise ValueError;
    other missing keys are reported with a ``MissingAdapterTensorsWarning`` and keep their current
    (initial) values. Returns the missing keys.
    """
    unexpected = sorted(set(state) - set(named))
    if unexpected:
        raise AdapterConfigError(
            f"{source} holds tensors {unexpected} that this adapter does not have (it has {sorted(named)}); "
            "the adapter config (scpp/scap/peft_type) does not match the file.",
            ("scpp", "scap", "peft_type"),
        )
    for key, src in state.items():
        if tuple(src.shape) != tuple(named[key].shape):
            raise AdapterConfigError(
                f"{source}: tensor {key!r} has shape {tuple(src.shape)} but the model expects "
                f"{tuple(named[key].shape)}; check num_virtual_tokens, max_length, r, the sub_dim and "
                "codebook_size fields and the model width.",
                ("num_virtual_tokens", "max_length", "r"),
            )
    missing = sorted(set(named) - set(state))
    hard = sorted(set(required) & set(missing))
    if hard:
        raise ValueError(f"{source} lacks the tensors {hard}.")
    with torch.no_grad():
        for key, src in state.items():
            named[key].copy_(src.to(dtype=named[key].dtype, device=named[key].device))
    if missing:
        msg = f"{source} has no {missing}; these tensors keep their initial values."
        warnings.warn(msg, MissingAdapterTensorsWarning, stacklevel=3)
        logger.warning(msg)
    return missing


def load_transfer_init(
    named: Mapping[str, torch.nn.Parameter], scpp_ckpt: str | None, scap_ckpt: str | None
) -> None:
    """ACCEPT's ``pretrain_init``: copy SCPP and/or SCAP tensors from earlier runs (each side optional).

    Only the tensors of the given side are read from each folder; both spellings of the SCAP keys
    are accepted; shapes are checked.
    """
    sides = (
        (scpp_ckpt, SCPP_TRANSFER_KEYS, "pretrain_scpp_ckpt"),
        (scap_ckpt, SCAP_TRANSFER_KEYS, "pretrain_scap_ckpt"),
    )
    for ckpt, keys, field in sides:
        if ckpt is None:
            continue
        state = read_adapter_tensors(ckpt)
        absent = [k for k in keys if k not in state]
        if absent:
            raise AdapterConfigError(f"{field} {ckpt}: the adapter file lacks {absent} (has {sorted(state)}).", field)
        subset = {k: state[k] for k in keys}
        load_tensors_into({k: named[k] for k in keys}, subset, f"{field} {ckpt}", required=keys)
        logger.info("transfer init: loaded %s from %s", list(keys), ckpt)
