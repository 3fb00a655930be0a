"""The adapter config (``PromptTuningConfig``) of a command line, validated against the model width d."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import PromptTuningConfig
from peft.config import default_prompt_init
from peft.encoders import SCAP_TRANSFER_KEYS, SCPP_TRANSFER_KEYS
from peft.family import Family
from training.planner.checkpoints import check_adapter_tensors
from training.planner.checks import ConfigError
from training.planner.config_flags import in_flag_terms


def resolve_text_init(model_args: Any, kinds: tuple[str, str]) -> bool:
    """--text_init, else the default of the method's (prompt kind, update kind) (``peft.config.default_prompt_init``)."""
    if model_args.text_init is not None:
        return model_args.text_init
    return default_prompt_init(*kinds) == "TEXT"


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
        lodim_r=model_args.lodim_r,
        num_random_proj=model_args.num_random_proj,
        prompt_kind=model_args.prompt_kind,
        update_kind=model_args.update_kind,
        prompt_tuning_init_text=model_args.prompt_tuning_init_text,
        tokenizer_name_or_path=model_args.tokenizer_name or model_args.model_name_or_path,
        base_model_name_or_path=model_args.model_name_or_path,
        pretrain_scpp_ckpt=scpp_ckpt,
        pretrain_scap_ckpt=scap_ckpt,
        enforce_budget=model_args.enforce_budget,
    )
    config.prompt_tuning_init = "TEXT" if resolve_text_init(model_args, config.kinds) else "RANDOM"
    try:
        config.validate(token_dim=token_dim)
    except ValueError as exc:
        raise ConfigError(in_flag_terms(exc)) from exc
    for ckpt, keys, flag in (
        (scpp_ckpt, SCPP_TRANSFER_KEYS, "--pretrain_scpp_ckpt"),
        (scap_ckpt, SCAP_TRANSFER_KEYS, "--pretrain_scap_ckpt"),
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
