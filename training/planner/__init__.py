"""The run planner: everything ``train.py`` resolves from its arguments before any model weights load.

``plan_run`` runs the fail-fast checks (``checks``), builds the adapter config (``adapter_config``), checks
saved adapters against it (``checkpoints``) and picks the checkpoint to resume (``resume``). Each problem
raises ``ConfigError`` with one line that names the flag to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from data.loading import hf_split_for, local_split_path
from data.tasks import TaskSpec
from peft import PromptTuningConfig
from peft.family import Family, detect_family
from training.identity import build_identity
from training.modeling import BASELINE_METHODS, hidden_size
from training.planner.adapter_config import build_peft_config
from training.planner.checkpoints import check_checkpoint_matches, load_saved_adapter_config
from training.planner.checks import (
    ConfigError,
    check_backbone_files,
    check_baseline,
    check_data_dir,
    check_distributed,
    check_peft_type,
    check_precision,
    check_schedule,
    check_task,
    read_model_config,
)
from training.planner.resume import check_same_run, resolve_output_dir
from training.planner.schema import check_against_model, check_locations, check_relations

__all__ = ["ConfigError", "RunPlan", "plan_run"]


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
    splits: tuple[str, ...]
    identity: dict[str, Any]
    resume_changes: dict[str, dict[str, Any]]


def fix_trainer_settings(training_args: Any, task: TaskSpec, family: Family) -> None:
    """The Trainer settings the task and family decide: model selection by the task's metric (first
    occurrence wins on ties: strictly greater replaces) and evaluation by generation for generative models."""
    training_args.metric_for_best_model = task.metric_for_best_model
    training_args.greater_is_better = True
    training_args.predict_with_generate = family.generates


def needed_splits(training_args: Any) -> tuple[str, ...]:
    """The logical splits a run reads: train to train, validation to evaluate (also during training), test
    to predict."""
    needed = []
    if training_args.do_train:
        needed.append("train")
    if training_args.do_eval or (training_args.do_train and training_args.eval_strategy != "no"):
        needed.append("validation")
    if training_args.do_predict:
        needed.append("test")
    if not needed:
        raise ConfigError("nothing to do: pass --do_train, --do_eval and/or --do_predict.")
    return tuple(needed)


def data_sources(task: TaskSpec, data_args: Any, splits: tuple[str, ...]) -> dict[str, Path | str]:
    """HF split -> the local file it is read from, or the hub dataset (``data.loading``'s rules)."""
    sources: dict[str, Path | str] = {}
    for logical in splits:
        hf_split = hf_split_for(task, logical, data_args.split_validation_test)
        if data_args.data_dir is None:
            sources[hf_split] = f"{task.hub_id}:{task.hub_config}/{hf_split}"
            continue
        try:
            sources[hf_split] = local_split_path(data_args.data_dir, task.name, hf_split)
        except FileNotFoundError as exc:
            raise ConfigError(f"--data_dir: {exc}") from exc
    return sources


def plan_run(model_args: Any, data_args: Any, training_args: Any) -> RunPlan:
    """Validate the three argument groups and resolve task, family, adapter config and resume point."""
    check_locations(model_args, data_args, training_args)
    task = check_task(data_args)
    peft_type = model_args.peft_type
    check_peft_type(peft_type)
    check_data_dir(data_args)
    model_config = read_model_config(model_args)
    check_backbone_files(model_args)
    family = detect_family(model_config)
    d = hidden_size(model_config)
    check_precision(model_args, training_args, model_config)
    check_distributed(training_args)
    check_schedule(training_args)
    check_relations(model_args, data_args, training_args)
    prefix_length = 0 if peft_type in BASELINE_METHODS else model_args.prefix_length
    check_against_model(prefix_length, data_args.max_seq_length, model_config)

    peft_config = loaded = None
    if peft_type in BASELINE_METHODS:
        check_baseline(model_args, model_config, family)
        method = BASELINE_METHODS[peft_type]
    elif model_args.peft_model_id:
        loaded = load_saved_adapter_config(model_args, data_args, d, family)
        method = loaded.method_name
    else:
        peft_config = build_peft_config(model_args, data_args, family, d)
        method = peft_config.method_name
    fix_trainer_settings(training_args, task, family)
    splits = needed_splits(training_args)
    identity = build_identity(
        (model_args, data_args, training_args),
        model_args.model_name_or_path,
        data_sources(task, data_args, splits),
        {name: getattr(model_args, name) for name in ("peft_model_id", "pretrain_scpp_ckpt", "pretrain_scap_ckpt")},
    )
    resume = resolve_output_dir(training_args)
    adapter = peft_config or loaded
    if resume is not None and adapter is not None:
        check_checkpoint_matches(resume, adapter, d, family)
    changes = check_same_run(training_args, identity, resume, adapter_run=adapter is not None)
    return RunPlan(task, family, model_config, d, method, peft_config, loaded, resume, splits, identity, changes)
