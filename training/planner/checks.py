"""Fail-fast checks of the command line and the environment, each raising ``ConfigError`` with one line
that names the flag to change. They read only small files (the model's ``config.json``, directory listings).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig
from transformers.training_args import ParallelMode

from data.tasks import TaskSpec, get_task
from peft.family import Family
from training.modeling import PEFT_TYPES, load_model_config
from training.planner.errors import ConfigError
from training.run_dir import safetensors_problem

FP16_UNSAFE_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5")


def check_task(data_args: Any) -> TaskSpec:
    """The task of ``--task_name``."""
    if not data_args.task_name:
        raise ConfigError("--task_name is required (e.g. rte, superglue-boolq, newsqa).")
    try:
        return get_task(data_args.task_name)
    except ValueError as exc:
        raise ConfigError(f"--task_name: {exc}") from exc


def check_peft_type(peft_type: str) -> None:
    """``--peft_type`` is an adapter method or a baseline."""
    if peft_type not in PEFT_TYPES:
        raise ConfigError(f"--peft_type {peft_type!r} is not supported; use one of {', '.join(PEFT_TYPES)}.")


def check_data_dir(data_args: Any) -> None:
    """``--data_dir`` (when given) exists."""
    if data_args.data_dir is None:
        return
    root = Path(data_args.data_dir)
    if not root.is_dir():
        raise ConfigError(f"--data_dir {root} does not exist.")


def read_model_config(model_args: Any) -> PretrainedConfig:
    """The backbone's ``config.json``; a folder that ships code is refused unless ``--trust_remote_code``."""
    try:
        return load_model_config(
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


def check_backbone_files(model_args: Any) -> None:
    """Every ``*.safetensors`` file of a local backbone folder is whole (its header parses and covers the
    file): a truncated download fails here, not after minutes of loading."""
    folder = Path(model_args.model_name_or_path)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise ConfigError(
                f"--model_name_or_path {folder}: {path.name} {problem}; download or copy the model again."
            )


def check_precision(model_args: Any, training_args: Any, model_config: PretrainedConfig) -> None:
    """float16 is refused for T5-like models, which overflow in it."""
    if model_config.model_type in FP16_UNSAFE_MODEL_TYPES:
        reason = (
            f"{model_config.model_type} overflows in float16 (inf in the feed-forward output, NaN loss); "
            "use --bf16 or float32"
        )
        if training_args.fp16:
            raise ConfigError(f"--fp16 is refused for {model_config.model_type}: {reason}.")
        if model_args.dtype == "float16":
            raise ConfigError(f"--dtype float16 is refused for {model_config.model_type}: {reason}.")


def check_distributed(training_args: Any) -> None:
    """Processes started by torchrun/accelerate must form one DDP group, not train side by side."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and training_args.parallel_mode != ParallelMode.DISTRIBUTED:
        raise ConfigError(
            f"{world} processes were launched (WORLD_SIZE={world}) but no accelerator was found, so each would "
            "train alone on its shard; on CPU pass --use_cpu True (DDP over gloo)."
        )


def check_schedule(training_args: Any) -> None:
    """The method's optimizer (torch AdamW) and schedule (linear), and a positive training length."""
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


def check_baseline(model_args: Any, model_config: PretrainedConfig, family: Family) -> None:
    """HEAD_ONLY needs a classification head; the baselines take no adapter flags."""
    if model_args.peft_type == "HEAD_ONLY" and not family.classification_head:
        raise ConfigError(
            f"--peft_type HEAD_ONLY trains a classification head; {model_config.model_type} is a {family} model."
        )
    kinds = model_args.prompt_kind or model_args.update_kind
    if model_args.scpp or model_args.scap or kinds or (model_args.peft_model_id and model_args.peft_type != "HEAD_ONLY"):
        raise ConfigError(
            f"--scpp/--scap/--prompt_kind/--update_kind/--peft_model_id need an adapter; --peft_type "
            f"{model_args.peft_type} has none."
        )
