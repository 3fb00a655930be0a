"""Fail-fast checks of a command line, run before any model weights are loaded.

Everything here reads only small files (the model's ``config.json``, an adapter config, directory
listings). Each problem raises ``ConfigError`` with one line that names the flag to change.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.trainer_utils import get_last_checkpoint
from transformers.training_args import ParallelMode

from data.tasks import TaskSpec, get_task
from peft import PromptTuningConfig
from peft.encoders import (
    KEY_LORA_A,
    KEY_LORA_B,
    KEY_PROMPT,
    KEY_PROMPT_CODEBOOK,
    KEY_PROMPT_WEIGHT,
    KEY_SCAP_CODEBOOK,
    KEY_SCAP_WEIGHT,
    PromptAdapter,
)
from peft.family import Family, detect_family
from peft.io import read_adapter_tensors
from training.modeling import (
    BASELINE_METHODS,
    PEFT_TYPES,
    hidden_size,
    load_model_config,
)

logger = logging.getLogger(__name__)

FP16_UNSAFE_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")
ADAPTER_KEYS = (
    KEY_PROMPT, KEY_PROMPT_WEIGHT, KEY_PROMPT_CODEBOOK, KEY_LORA_A, KEY_LORA_B, KEY_SCAP_WEIGHT, KEY_SCAP_CODEBOOK,
)  # fmt: skip
# Adapter config fields that decide the tensors' shapes (a resumed checkpoint must agree on all of them).
SHAPE_FIELDS = (
    "peft_type", "num_virtual_tokens", "token_dim", "max_length", "r", "scpp", "sub_dim_scpp",
    "codebook_size_scpp", "scap", "sub_dim_scap", "codebook_size_scap",
)  # fmt: skip


class ConfigError(ValueError):
    """A bad command line or environment; the message names the flag to change."""


@dataclass
class RunPlan:
    """Everything resolved from the arguments before weights load.

    Attributes:
        peft_config: the adapter config to build (None for HEAD_ONLY/FULL and for --peft_model_id,
            whose saved config is ``loaded_peft_config``).
        resume_from_checkpoint: checkpoint directory to resume from, or None.
    """

    task: TaskSpec
    family: Family
    model_config: PretrainedConfig
    token_dim: int
    method: str
    peft_config: PromptTuningConfig | None
    loaded_peft_config: PromptTuningConfig | None
    resume_from_checkpoint: str | None


def plan_run(model_args: Any, data_args: Any, training_args: Any) -> RunPlan:
    """Validate the three argument groups and resolve task, family, adapter config and resume point."""
    task = _check_task(data_args)
    peft_type = model_args.peft_type
    if peft_type not in PEFT_TYPES:
        raise ConfigError(f"--peft_type {peft_type!r} is not supported; use one of {', '.join(PEFT_TYPES)}.")
    _check_data_dir(data_args, task)
    try:
        model_config = load_model_config(
            model_args.model_name_or_path,
            model_args.cache_dir,
            trust_remote_code=model_args.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise ConfigError(
                f"--model_name_or_path {model_args.model_name_or_path} ships its own Python code (auto_map); "
                "it is not run unless you pass --trust_remote_code True (read that code first)."
            ) from exc
        raise ConfigError(
            f"--model_name_or_path {model_args.model_name_or_path}: cannot read its config ({exc})"
        ) from exc
    family = detect_family(model_config)
    d = hidden_size(model_config)
    _check_precision(model_args, training_args, model_config)
    _check_distributed(training_args)
    _check_schedule(training_args)
    _check_lengths(model_args, data_args, model_config)

    peft_config = loaded = None
    if peft_type in BASELINE_METHODS:
        if peft_type == "HEAD_ONLY" and not family.classification_head:
            raise ConfigError(
                f"--peft_type HEAD_ONLY trains a classification head; {model_config.model_type} is a {family} model."
            )
        if model_args.scpp or model_args.scap or (model_args.peft_model_id and peft_type != "HEAD_ONLY"):
            raise ConfigError(
                f"--scpp/--scap/--peft_model_id need an adapter; --peft_type {peft_type} has none."
            )
        method = BASELINE_METHODS[peft_type]
    elif model_args.peft_model_id:
        loaded = _load_adapter_config(model_args, data_args, d, family)
        method = loaded.method_name
    else:
        peft_config = build_peft_config(model_args, data_args, family, d)
        method = peft_config.method_name
    resume = _resolve_output_dir(training_args)
    if resume is not None and (peft_config or loaded) is not None:
        _check_checkpoint_matches(resume, peft_config or loaded, d)
    return RunPlan(task, family, model_config, d, method, peft_config, loaded, resume)


def _check_task(data_args: Any) -> TaskSpec:
    if not data_args.task_name:
        raise ConfigError("--task_name is required (e.g. rte, superglue-boolq, newsqa).")
    try:
        return get_task(data_args.task_name)
    except ValueError as exc:
        raise ConfigError(f"--task_name: {exc}") from exc


def _check_data_dir(data_args: Any, task: TaskSpec) -> None:
    if data_args.data_dir is None:
        return
    root = Path(data_args.data_dir)
    if not root.is_dir():
        raise ConfigError(f"--data_dir {root} does not exist.")


def _check_precision(model_args: Any, training_args: Any, model_config: PretrainedConfig) -> None:
    if model_config.model_type in FP16_UNSAFE_MODEL_TYPES:
        reason = (
            f"{model_config.model_type} overflows in float16 (inf in the feed-forward output, NaN loss); "
            "use --bf16 or float32"
        )
        if training_args.fp16:
            raise ConfigError(f"--fp16 is refused for {model_config.model_type}: {reason}.")
        if model_args.dtype == "float16":
            raise ConfigError(f"--dtype float16 is refused for {model_config.model_type}: {reason}.")


def _check_distributed(training_args: Any) -> None:
    """Processes started by torchrun/accelerate must form one DDP group, not train side by side."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise ConfigError(
            f"{world} processes were launched (WORLD_SIZE={world}) but no accelerator was found, so each would "
            "train alone on its shard; on CPU pass --use_cpu True (DDP over gloo)."
        )


def _check_schedule(training_args: Any) -> None:
    scheduler = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    if scheduler != "linear":
        raise ConfigError(
            f"--lr_scheduler_type {scheduler} is not supported: the method uses linear warm-up and decay."
        )
    optim = getattr(training_args.optim, "value", training_args.optim)
    if optim not in ("adamw_torch", "adamw_torch_fused"):
        raise ConfigError(
            f"--optim {optim} is not supported: the method uses torch AdamW (see --adam_epsilon)."
        )
    if training_args.do_train and training_args.max_steps <= 0 and training_args.num_train_epochs <= 0:
        raise ConfigError("--max_steps (or --num_train_epochs) must be > 0 to train.")


def _check_lengths(model_args: Any, data_args: Any, model_config: PretrainedConfig) -> None:
    if data_args.max_seq_length < 1:
        raise ConfigError(f"--max_seq_length must be >= 1, got {data_args.max_seq_length}.")
    multiple = data_args.pad_to_multiple_of
    if multiple is not None and (multiple < 1 or data_args.max_seq_length % multiple):
        raise ConfigError(
            f"--pad_to_multiple_of {multiple} must be >= 1 and divide --max_seq_length {data_args.max_seq_length} "
            "(a padded batch may not be longer than the added update)."
        )
    limit = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(limit, int) or model_args.peft_type in BASELINE_METHODS:
        return
    needed = model_args.prefix_length + data_args.max_seq_length
    if needed > limit:
        raise ConfigError(
            f"--max_seq_length {data_args.max_seq_length} + --prefix_length {model_args.prefix_length} = {needed} "
            f"exceeds the model's {limit} positions."
        )


def resolve_text_init(model_args: Any) -> bool:
    """--text_init default per method: TEXT for PT and DePT (DePT's default, every released DePT run),
    RANDOM for the ACCEPT variants (ACCEPT's default; TEXT cannot initialise an SCPP codebook)."""
    if model_args.text_init is not None:
        return model_args.text_init
    return not (model_args.scpp or model_args.scap)


def build_peft_config(model_args: Any, data_args: Any, family: Family, token_dim: int) -> PromptTuningConfig:
    """The adapter config of the command line, validated against d (divisibility, budget, init)."""
    scpp_ckpt = scap_ckpt = None
    if model_args.pretrain_init:
        if not (model_args.scpp or model_args.scap):
            raise ConfigError(
                "--pretrain_init True needs --scpp True and/or --scap True (it loads their codebooks)."
            )
        if model_args.scpp:
            scpp_ckpt = _existing_dir(model_args.pretrain_scpp_ckpt, "--pretrain_scpp_ckpt")
        if model_args.scap:
            scap_ckpt = _existing_dir(model_args.pretrain_scap_ckpt, "--pretrain_scap_ckpt")
    elif model_args.pretrain_scpp_ckpt or model_args.pretrain_scap_ckpt:
        raise ConfigError(
            "--pretrain_scpp_ckpt/--pretrain_scap_ckpt are only read with --pretrain_init True."
        )
    text_init = resolve_text_init(model_args)
    config = PromptTuningConfig(
        peft_type=model_args.peft_type,
        task_type=family.task_type,
        num_virtual_tokens=model_args.prefix_length,
        token_dim=token_dim,
        max_length=data_args.max_seq_length,
        r=model_args.r,
        scpp=model_args.scpp,
        sub_dim_scpp=model_args.sub_dim_scpp,
        codebook_size_scpp=model_args.codebook_size_scpp,
        scap=model_args.scap,
        sub_dim_scap=model_args.sub_dim_scap,
        codebook_size_scap=model_args.codebook_size_scap,
        prompt_tuning_init="TEXT" if text_init else "RANDOM",
        prompt_tuning_init_text=model_args.prompt_tuning_init_text,
        tokenizer_name_or_path=model_args.tokenizer_name or model_args.model_name_or_path,
        base_model_name_or_path=model_args.model_name_or_path,
        pretrain_scpp_ckpt=scpp_ckpt,
        pretrain_scap_ckpt=scap_ckpt,
        enforce_budget=model_args.enforce_budget,
    )
    try:
        config.validate(token_dim=token_dim)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for ckpt, keys, flag in (
        (scpp_ckpt, (KEY_PROMPT_WEIGHT, KEY_PROMPT_CODEBOOK), "--pretrain_scpp_ckpt"),
        (scap_ckpt, (KEY_SCAP_WEIGHT, KEY_SCAP_CODEBOOK), "--pretrain_scap_ckpt"),
    ):
        if ckpt is not None:
            check_adapter_tensors(ckpt, config, token_dim, f"{flag} {ckpt}", keys)
    return config


def _existing_dir(path: str | None, flag: str) -> str:
    if not path:
        raise ConfigError(f"{flag} is required with --pretrain_init True.")
    if not Path(path).is_dir():
        raise ConfigError(f"{flag} {path} is not a directory.")
    return path


def _load_adapter_config(model_args: Any, data_args: Any, token_dim: int, family: Family) -> PromptTuningConfig:
    """The saved config of --peft_model_id; its shapes win over the command line (warned, defect D26).

    Checked against the model (d, family) and against the tensors in the folder (read safely: safetensors,
    or a legacy .bin with weights_only=True) before any model weights load.
    """
    path = Path(model_args.peft_model_id)
    flag = f"--peft_model_id {path}"
    try:
        config = PromptTuningConfig.from_pretrained(path)
        config.validate(token_dim=token_dim, check_init=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    if config.token_dim is not None and config.token_dim != token_dim:
        raise ConfigError(
            f"{flag}: the adapter was saved for token_dim (d) {config.token_dim}, but "
            f"{model_args.model_name_or_path} has d={token_dim}."
        )
    if config.task_type is not None and config.task_type != family.task_type:
        raise ConfigError(
            f"{flag}: the adapter was saved for task_type {config.task_type}, but "
            f"{model_args.model_name_or_path} is a {family} model ({family.task_type})."
        )
    check_adapter_tensors(path, config, token_dim, flag)
    cli = {
        "peft_type": model_args.peft_type,
        "num_virtual_tokens": model_args.prefix_length,
        "r": model_args.r,
        "max_length": data_args.max_seq_length,
        "scpp": model_args.scpp,
        "scap": model_args.scap,
    }
    differing = {k: (v, getattr(config, k)) for k, v in cli.items() if getattr(config, k) != v}
    if differing:
        logger.warning(
            "--peft_model_id %s: the saved adapter config decides the shapes; command-line values ignored "
            "(flag: given -> saved): %s",
            path,
            ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in differing.items()),
        )
    return config


def check_adapter_tensors(
    folder: str | Path,
    config: PromptTuningConfig,
    token_dim: int,
    flag: str,
    keys: tuple[str, ...] | None = None,
) -> None:
    """Read the adapter file of ``folder`` safely and compare its tensor shapes with ``config`` at width d.

    Builds the adapter on the meta device (no memory); a code-carrying pickle, a missing file or a shape
    that differs raise ConfigError naming ``flag`` and both shapes. Only ``keys`` are compared when given
    (a transfer source contributes one side); keys the adapter lacks (a classifier head) are left to the loader.
    """
    try:
        state = read_adapter_tensors(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    with torch.device("meta"):
        expected = PromptAdapter(config, token_dim).named_adapter_tensors()
    foreign = sorted(k for k in state if k in ADAPTER_KEYS and k not in expected)
    if keys is None and foreign:
        raise ConfigError(
            f"{flag}: the file holds {foreign}, which a {config.method_name} adapter (its adapter_config.json) "
            f"does not have (it has {sorted(expected)})."
        )
    for key, tensor in state.items():
        if (
            key in expected
            and (keys is None or key in keys)
            and tuple(tensor.shape) != tuple(expected[key].shape)
        ):
            raise ConfigError(
                f"{flag}: tensor {key} has shape {tuple(tensor.shape)}, but its adapter_config.json and the "
                f"model (d={token_dim}) give {tuple(expected[key].shape)}."
            )


def _check_checkpoint_matches(checkpoint: str, config: PromptTuningConfig, token_dim: int) -> None:
    """A checkpoint to resume must hold the adapter the command line builds (same method and shapes)."""
    flag = f"--resume_from_checkpoint {checkpoint}"
    try:
        saved = PromptTuningConfig.from_pretrained(checkpoint)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{flag}: {exc}") from exc
    differing = [
        f"{name}: checkpoint {getattr(saved, name)} vs command line {getattr(config, name)}"
        for name in SHAPE_FIELDS
        if None not in (getattr(saved, name), getattr(config, name))
        and getattr(saved, name) != getattr(config, name)
    ]
    if differing:
        raise ConfigError(
            f"{flag} holds a different adapter ({'; '.join(differing)}); use the flags it was trained with."
        )
    check_adapter_tensors(checkpoint, config, token_dim, flag)


def _resolve_output_dir(training_args: Any) -> str | None:
    """Checkpoint to resume from (explicit, or the last one in --output_dir), or None for a fresh run.

    An explicit --resume_from_checkpoint is never dropped silently: it needs --do_train, and ``True``
    contradicts --overwrite_output_dir.
    """
    out = Path(training_args.output_dir)
    explicit = training_args.resume_from_checkpoint
    if explicit is not None and not training_args.do_train:
        raise ConfigError(
            f"--resume_from_checkpoint {explicit} continues training and needs --do_train; to evaluate a "
            "saved adapter pass --peft_model_id <checkpoint folder> with --do_eval/--do_predict."
        )
    if str(explicit).lower() == "true" and training_args.overwrite_output_dir:
        raise ConfigError(
            "--resume_from_checkpoint True and --overwrite_output_dir contradict each other (resume vs "
            "start from scratch); pass one."
        )
    if explicit is not None and str(explicit).lower() != "true":
        if not Path(explicit).is_dir():
            raise ConfigError(f"--resume_from_checkpoint {explicit} is not a directory.")
        return str(explicit)
    if not training_args.do_train or not out.is_dir() or training_args.overwrite_output_dir:
        return None
    last = get_last_checkpoint(str(out))
    if last is not None:
        logger.info("resuming from %s (pass --overwrite_output_dir to start from scratch)", last)
        return last
    if str(explicit).lower() == "true":
        raise ConfigError(f"--resume_from_checkpoint True: no checkpoint-* folder in --output_dir {out}.")
    if any(out.iterdir()):
        raise ConfigError(
            f"--output_dir {out} is not empty and holds no checkpoint to resume; pass --overwrite_output_dir "
            "or choose another directory."
        )
    return None
