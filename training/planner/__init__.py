"""The run planner: everything ``train.py`` resolves from its arguments before any model weights load.

``plan_run`` runs the fail-fast checks (``checks``), builds the adapter config (``adapter_config``), checks
saved adapters against it (``checkpoints``) and picks the checkpoint to resume (``resume``). Each problem
raises ``ConfigError`` with one line that names the flag to change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig

from data.tasks import TaskSpec
from peft import PromptTuningConfig
from peft.family import Family, detect_family
from training.modeling import BASELINE_METHODS, hidden_size
from training.planner.adapter_config import build_peft_config
from training.planner.checkpoints import check_checkpoint_matches, load_saved_adapter_config
from training.planner.checks import (
    ConfigError,
    check_baseline,
    check_data_dir,
    check_distributed,
    check_peft_type,
    check_precision,
    check_schedule,
    check_task,
    read_model_config,
)
from training.planner.resume import resolve_output_dir
from training.planner.schema import check_against_model, check_relations

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


def plan_run(model_args: Any, data_args: Any, training_args: Any) -> RunPlan:
    """Validate the three argument groups and resolve task, family, adapter config and resume point."""
    task = check_task(data_args)
    peft_type = model_args.peft_type
    check_peft_type(peft_type)
    check_data_dir(data_args)
    model_config = read_model_config(model_args)
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
    resume = resolve_output_dir(training_args)
    if resume is not None and (peft_config or loaded) is not None:
        check_checkpoint_matches(resume, peft_config or loaded, d)
    return RunPlan(task, family, model_config, d, method, peft_config, loaded, resume)
