"""The declarative schema of every numeric and path flag of ``train.py`` and ``scripts/predict.py``.

Each flag has one rule: a ``Number`` (finite, a range, accepted special values) or a ``Location`` (what
must exist). ``check_flags`` applies the rules to a parsed argument group, ``check_relations`` the rules
between flags, and ``check_against_model`` the ones that need the backbone's ``config.json``; each raises
``ConfigError`` with one line naming the flag, its value and the fix, before anything loads.

The argument dataclasses call ``check_flags`` in their ``__post_init__``, so a bad value never reaches
transformers' own ``TrainingArguments.__post_init__`` or the optimizer. ``tests/test_flag_schema.py``
checks that every numeric and path field of the parsers has a rule here (or is listed in ``UNCHECKED``
with its reason), so a new flag cannot skip the gate.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig

from training.planner.errors import ConfigError

# numpy's legacy seeding (called by transformers' set_seed) accepts only 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# The longest prompt-plus-input for a model without a position limit of its own (T5's relative
# positions): attention holds batch x heads x (m + L)^2 scores per layer, and the prompt is m x d.
MAX_POSITIONS_WITHOUT_LIMIT = 4096


@dataclass(frozen=True)
class Number:
    """A numeric flag: a finite number in ``[low, high]`` (ends excluded where ``*_open``), or one of
    ``special`` (value -> its meaning). ``None`` passes where the flag's default is ``None`` (unset)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple[tuple[float, str], ...] = ()
    hint: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule (None when it does not)."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if any(value == allowed for allowed, _ in self.special):
            return None
        if not math.isfinite(value):
            return f"must be a finite number{self._range_text()}"
        too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if too_low or too_high:
            return f"must be{self._range_text()}"
        return None

    def _range_text(self) -> str:
        if self.low is not None and self.low == self.high:
            return f" {_number(self.low)}"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_number(self.high)}")
        text = " and ".join(parts)
        special = ", or ".join(f"{_number(value)} ({meaning})" for value, meaning in self.special)
        if special:
            text = f"{text}, or {special}" if text else special
        return f" {text}" if text else ""


def _number(value: float) -> str:
    """A bound as written on a command line (4294967295, not 4.29497e+09)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Location:
    """A path flag: ``dir`` (an existing folder), ``file`` (an existing file), ``dir_or_hub`` (a folder, or a
    hub id: checked by ``training.sources``), ``new_dir`` (a folder to write: not an existing file),
    ``new_file`` (a file to write: not an existing folder), ``dir_or_value`` (an existing folder, or True /
    False, as ``--resume_from_checkpoint`` takes), ``json_file`` (a value ending in .json names an existing
    file; other values are JSON text or names), ``any`` (created when missing)."""

    kind: str
    hint: str = ""

    def problem(self, value: Any) -> str | None:
        if value is None or value == "" or self.kind in ("any", "dir_or_hub"):
            return None
        path = Path(str(value))
        if self.kind == "dir" and not path.is_dir():
            return "is not an existing folder" if not path.exists() else "is a file, not a folder"
        if self.kind == "file" and not path.is_file():
            return "is not an existing file"
        if self.kind == "new_dir" and path.exists() and not path.is_dir():
            return "cannot be used as a folder (it is an existing file)"
        if self.kind == "new_file" and path.is_dir():
            return "is an existing folder; name a file"
        if self.kind == "json_file" and str(value).endswith(".json") and not path.is_file():
            return "is not an existing file"
        if self.kind == "dir_or_value" and str(value).lower() not in ("true", "false") and not path.is_dir():
            return "is not an existing folder"
        return None


def positive(hint: str = "") -> Number:
    return Number(low=0, low_open=True, hint=hint)


def at_least(low: float, hint: str = "") -> Number:
    return Number(low=low, hint=hint)


def fraction(hint: str = "") -> Number:
    """[0, 1)."""
    return Number(low=0, high=1, high_open=True, hint=hint)


UNSET_IS_DEFAULT = "unset uses the default"
RULES: dict[str, Number | Location] = {
    # ---- the method (ModelArguments)
    "prefix_length": at_least(1, "m, the number of prompt tokens"),
    "r": at_least(0, "0 disables the low-rank update"),
    "sub_dim_scpp": at_least(1, "it must divide the model width d"),
    "codebook_size_scpp": at_least(1),
    "sub_dim_scap": at_least(1, "it must divide the model width d"),
    "codebook_size_scap": at_least(1),
    "lodim_r": at_least(1, "r_p, the rank of the DPT / ULPT prompt"),
    "num_random_proj": at_least(1, "G, ULPT's random projections (must divide --prefix_length)"),
    "model_name_or_path": Location("dir_or_hub"),
    "tokenizer_name": Location("dir_or_hub"),
    "peft_model_id": Location("dir", "a saved adapter folder (adapter_config.json and its weights)"),
    "pretrain_scpp_ckpt": Location("dir", "a saved ACCEPT adapter folder"),
    "pretrain_scap_ckpt": Location("dir", "a saved ACCEPT adapter folder"),
    "cache_dir": Location("any"),
    # ---- the data (DataTrainingArguments)
    "data_dir": Location("dir", "it holds <task>/<split>.jsonl"),
    "max_seq_length": at_least(1, "L, the input length (256 in the papers)"),
    "pad_to_multiple_of": at_least(1),
    "max_train_samples": at_least(1, "leave it unset to use every row"),
    "max_eval_samples": at_least(1, "leave it unset to use every row"),
    "max_predict_samples": at_least(1, "leave it unset to use every row"),
    "k_shot_example": at_least(1, "K examples per class"),
    "preprocessing_num_workers": at_least(1, "leave it unset to tokenise in this process"),
    # ---- optimisation (TrainingArguments)
    "learning_rate": at_least(0, "0 freezes the prompt side"),
    "added_embedding_lr": at_least(0, "0 freezes the added side; unset uses --learning_rate"),
    "lora_embedding_lr": at_least(0, "DePT's name of --added_embedding_lr"),
    "weight_decay": at_least(0),
    "adam_beta1": fraction(),
    "adam_beta2": fraction(),
    "adam_epsilon": at_least(0),
    "max_grad_norm": at_least(0, "0 turns clipping off"),
    "label_smoothing_factor": Number(low=0, high=0, hint="label smoothing is not supported by the prompt models"),
    "warmup_steps": at_least(0, "a value below 1 is a fraction of the training steps"),
    "warmup_ratio": fraction(),
    "neftune_noise_alpha": at_least(0),
    # ---- length of training
    "max_steps": Number(low=1, special=((-1, "train for --num_train_epochs"),)),
    "num_train_epochs": at_least(0),
    "per_device_train_batch_size": at_least(1),
    "per_device_eval_batch_size": at_least(1),
    "gradient_accumulation_steps": at_least(1),
    "eval_accumulation_steps": at_least(1),
    "torch_empty_cache_steps": at_least(1),
    # ---- schedules of logging, evaluation and saving (a value below 1 is a fraction of the training steps)
    "logging_steps": positive(),
    "eval_steps": positive(f"{UNSET_IS_DEFAULT} (--logging_steps)"),
    "eval_delay": at_least(0),
    "save_steps": positive(),
    "save_total_limit": at_least(1, "leave it unset to keep every checkpoint"),
    # ---- reproducibility and processes
    "seed": Number(low=0, high=MAX_SEED),
    "data_seed": Number(low=0, high=MAX_SEED),
    "dataloader_num_workers": at_least(0),
    "dataloader_prefetch_factor": at_least(1),
    "ddp_timeout": at_least(1, "seconds"),
    "ddp_bucket_cap_mb": at_least(1),
    "local_rank": Number(low=0, special=((-1, "not distributed"),), hint="set by the launcher"),
    # ---- generation (evaluation of generative models)
    "generation_max_length": at_least(1),
    "generation_num_beams": at_least(1),
    # ---- where things go
    "output_dir": Location("new_dir"),
    "logging_dir": Location("any"),
    "resume_from_checkpoint": Location("dir_or_value", "a checkpoint-N folder, or True for the newest one"),
    "deepspeed": Location("json_file"),
    "accelerator_config": Location("json_file"),
    "fsdp_config": Location("json_file"),
    "generation_config": Location("any"),
    # ---- scripts/predict.py
    "batch_size": at_least(1),
    "input": Location("file", "the requests, one JSON object per line"),
    "output": Location("new_file", "the predictions file to write"),
    "tokenizer_name_or_path": Location("dir_or_hub"),
}
"""Flag name -> its rule; ``dir_or_hub`` paths are checked with the hub by ``training.sources``."""

UNCHECKED: dict[str, str] = {
    "dataset_config_name": "accepted for the original scripts and ignored: every task has one configuration",
    "activation_checkpointing_kwargs": "keyword arguments as JSON text, read by transformers",
    "gradient_checkpointing_kwargs": "keyword arguments as JSON text, read by transformers",
    "trackio_space_id": "a name on the tracking service, not a local path",
    "trackio_bucket_id": "a name on the tracking service, not a local path",
    "trackio_static_space_id": "a name on the tracking service, not a local path",
    "hub_model_id": "a hub repository name, used only with --push_to_hub",
    "run_name": "a label for the logging integrations",
    "project": "a label for the logging integrations",
}
"""Numeric or path-like fields that need no rule, with the reason."""


def rule_for(name: str) -> Number | Location | None:
    return RULES.get(name)


def flag_problem(name: str, value: Any) -> str | None:
    """One line for a bad value of flag ``name`` ("--name VALUE: must be ...; hint"), else None."""
    rule = RULES.get(name)
    if rule is None:
        return None
    problem = rule.problem(value)
    if problem is None:
        return None
    hint = f" ({rule.hint})" if rule.hint else ""
    return f"--{name} {value}: {problem}{hint}."


def check_values(values: Iterable[tuple[str, Any]], kind: type = object) -> None:
    """ConfigError for the first (flag, value) pair that breaks its rule (only rules of ``kind``)."""
    for name, value in values:
        if isinstance(RULES.get(name), kind):
            problem = flag_problem(name, value)
            if problem:
                raise ConfigError(problem)


def check_flags(arguments: Any) -> None:
    """The declared type and the ``Number`` rules of every field of an argument dataclass (``train.py``'s
    three groups; a ``.json`` argument file is not type-checked by the parser). Paths are checked by
    ``check_locations`` when a run starts, so that a command can be parsed where its folders do not exist."""
    hints = declared_types(type(arguments))
    for item in dataclasses.fields(arguments):
        value = getattr(arguments, item.name)
        expected = declared_type_problem(value, hints.get(item.name))
        if expected:
            raise ConfigError(f"--{item.name} {value!r}: must be {expected}.")
    check_values(((item.name, getattr(arguments, item.name)) for item in dataclasses.fields(arguments)), Number)


def check_locations(*argument_groups: Any) -> None:
    """The ``Location`` rules of every path flag of the argument groups."""
    for arguments in argument_groups:
        fields = dataclasses.fields(arguments)
        check_values(((item.name, getattr(arguments, item.name)) for item in fields), Location)


@functools.cache
def declared_types(cls: type) -> dict[str, Any]:
    """The annotations of a dataclass, resolved (HfArgumentParser rewrites ``Field.type`` in place)."""
    return typing.get_type_hints(cls)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def declared_type_problem(value: Any, annotation: Any) -> str | None:
    """What ``value`` must be when it does not fit a plain annotation (``int``, ``float | None``, ...);
    None when it fits or the annotation is not a plain one (enums, dicts, lists are the parser's)."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else (
        annotation,
    )
    plain = [option for option in options if option in _TYPE_WORDS]
    if not plain or len(plain) + (type(None) in options) != len(options):
        return None
    if value is None:
        return None if type(None) in options else _TYPE_WORDS[plain[0]]
    for option in plain:
        kinds = (int, float) if option is float else (option,)
        if isinstance(value, kinds) and (option is bool or not isinstance(value, bool)):
            return None
    return " or ".join(_TYPE_WORDS[option] for option in plain)


def check_device(device: str) -> None:
    """A ``--device`` that exists on this machine (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device {device}: not a device name ({exc}); use cpu or cuda.") from exc
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {device}: no such CUDA device on this machine; use --device cpu.")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: MPS is not available on this machine; use --device cpu.")


def check_relations(model_args: Any, data_args: Any, training_args: Any) -> None:
    """Rules between flags (each group's own values were checked when it was parsed)."""
    multiple = data_args.pad_to_multiple_of
    if multiple is not None and data_args.max_seq_length % multiple:
        raise ConfigError(
            f"--pad_to_multiple_of {multiple} must divide --max_seq_length {data_args.max_seq_length} (a padded "
            "batch may not be longer than the added update)."
        )
    if training_args.do_train and training_args.max_steps == -1 and not training_args.num_train_epochs > 0:
        raise ConfigError(
            f"--num_train_epochs {training_args.num_train_epochs} with --max_steps -1 trains nothing: pass "
            "--max_steps N or --num_train_epochs > 0."
        )


def check_against_model(prefix_length: int, max_seq_length: int, model_config: PretrainedConfig) -> None:
    """The prompt plus input length (m + L; m = 0 without a prompt) the backbone can take
    (``max_position_embeddings``, or ``MAX_POSITIONS_WITHOUT_LIMIT`` for a model without a position limit)."""
    m, L = prefix_length, max_seq_length
    limit = getattr(model_config, "max_position_embeddings", None)
    if isinstance(limit, int):
        if m + L > limit:
            raise ConfigError(
                f"--max_seq_length {L} + --prefix_length {m} = {m + L} exceeds the model's "
                f"max_position_embeddings {limit}; reduce one of them."
            )
        return
    if m + L > MAX_POSITIONS_WITHOUT_LIMIT:
        raise ConfigError(
            f"--max_seq_length {L} + --prefix_length {m} = {m + L} is longer than {MAX_POSITIONS_WITHOUT_LIMIT}, "
            f"the limit for {model_config.model_type} (no position limit of its own): attention needs batch x "
            "heads x (m + L)^2 scores; the papers use m = 60-100 and L = 256."
        )
