"""``PeftModel``: a frozen HuggingFace model plus named prompt adapters (the adapter registry).

Adapters, classifier heads, parameter counts and save/load live here; how each family builds its
inputs is in ``peft/inputs.py`` and its ``forward`` / ``generate`` in the thin wrappers of
``peft/wrappers.py``, each naming the ``Family`` it wraps (``wrapper_for`` finds it).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import inputs, io
from .budget import ParamCount
from .config import CONFIG_NAME, PromptTuningConfig
from .encoders import PromptAdapter
from .family import Family, detect_family, family_for_task_type
from .hf_prompt_tuning import fold_submodules, read_config
from .initialise import initialise_adapter

logger = logging.getLogger(__name__)

# Name for rows of a mixed batch that run on the bare backbone (no prompt, no update).
BASE_ADAPTER = "__base__"


def _family_of(model: nn.Module, config: PromptTuningConfig) -> Family:
    if config.task_type is not None:
        return family_for_task_type(config.task_type)
    return detect_family(model)


def divide_loss_by_accumulation(model: nn.Module) -> None:
    """Make transformers' Trainer divide ``model``'s loss by the gradient-accumulation steps.

    transformers 5 skips that division for a model whose forward takes ``**kwargs``, assuming the model
    normalised its loss over the whole accumulated batch; T5, BERT and our wrappers return a plain mean over
    one micro-batch, so without it k accumulation steps give a k times larger update (docs/fidelity.md,
    F-GRAD-ACCUM). The Trainer reads ``accepts_loss_kwargs`` from the base model of a ``PeftModel``.
    """
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    base.accepts_loss_kwargs = False


def _hidden_size(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


_WRAPPERS: dict[Family, type[PeftModel]] = {}


def wrapper_for(family: Family) -> type[PeftModel]:
    """The ``PeftModel`` subclass that wraps a backbone of ``family``."""
    return _WRAPPERS[family]


class PeftModel(nn.Module):
    """A frozen base model plus named prompt adapters; family-specific subclasses implement forward/generate.

    The adapter the model is built with lives in ``adapter`` (its tensors keep their state-dict names);
    adapters added later live in ``extra_adapters``. Classifier adapters added later get their own copy
    of the task head (``extra_heads``), swapped in while they run. A subclass sets ``family`` and is then
    the wrapper of that family.
    """

    family: Family | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family is not None:
            _WRAPPERS[cls.family] = cls

    def __init__(
        self,
        model: nn.Module,
        peft_config: PromptTuningConfig,
        adapter_name: str = "default",
        tokenizer: Any = None,
        init_weights: bool = True,
    ) -> None:
        super().__init__()
        self._check_new_name(adapter_name, {})
        config = self._complete_config(model, peft_config, init_weights)
        self._check_model(model, config)
        for param in model.parameters():
            param.requires_grad_(False)
        self.base_model = model
        word_embeddings = model.get_input_embeddings().weight
        self.adapter = PromptAdapter(config, _hidden_size(model)).to(word_embeddings.device)
        self.extra_adapters = nn.ModuleDict()
        self.extra_heads = nn.ModuleDict()
        self.peft_config = {adapter_name: config}
        self.active_adapter = adapter_name
        self._first_adapter = adapter_name
        self._adapters_disabled = False
        for param in self._head_parameters().values():
            param.requires_grad_(True)
        if init_weights:
            initialise_adapter(self.adapter, config, model.get_input_embeddings().weight, tokenizer)
        if self.family.plain_mean_loss:
            divide_loss_by_accumulation(model)
        self.train(model.training)

    # ---- construction helpers ---------------------------------------------------------------------
    def _complete_config(
        self, model: nn.Module, peft_config: PromptTuningConfig, init_weights: bool
    ) -> PromptTuningConfig:
        """The config with d, task type and base model filled in, validated against ``model``."""
        dim = _hidden_size(model)
        if peft_config.token_dim is not None and peft_config.token_dim != dim:
            raise ValueError(
                f"The adapter's token_dim {peft_config.token_dim} does not match the model width {dim}."
            )
        config = replace(
            peft_config,
            token_dim=dim,
            task_type=peft_config.task_type or self.family.task_type,
            base_model_name_or_path=peft_config.base_model_name_or_path
            or getattr(model.config, "_name_or_path", None)
            or None,
        )
        if config.task_type != self.family.task_type:
            raise ValueError(
                f"The adapter's task_type {config.task_type} does not fit this {self.family} model "
                f"({self.family.task_type})."
            )
        config.validate(check_init=init_weights)
        return config

    @staticmethod
    def _check_new_name(adapter_name: str, existing: dict[str, Any]) -> None:
        if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
            raise ValueError(f"adapter_name {adapter_name!r} must be a non-empty string without dots.")
        if adapter_name == BASE_ADAPTER:
            raise ValueError(f"adapter_name {BASE_ADAPTER!r} is reserved for rows without an adapter.")
        if adapter_name in existing:
            raise ValueError(
                f"An adapter named {adapter_name!r} exists already; delete_adapter() it or pick another name."
            )

    def _check_model(self, model: nn.Module, config: PromptTuningConfig) -> None:
        """Family-specific sanity checks (overridden)."""

    def _head_modules(self) -> dict[str, nn.Module]:
        """Top-level modules of the base model that hold the task head (classifiers only)."""
        return {}

    def _head_parameters(self, adapter_name: str | None = None) -> dict[str, nn.Parameter]:
        """Trainable task-head parameters of ``adapter_name`` (default: the active one), base-model names."""
        name = adapter_name or self.active_adapter
        if name == self._first_adapter or name not in self.extra_heads:
            modules = self._head_modules()
        else:
            modules = dict(self.extra_heads[name].items())
        return {
            f"{key}.{pname}": p for key, module in modules.items() for pname, p in module.named_parameters()
        }

    @contextlib.contextmanager
    def _head_of(self, adapter_name: str) -> Iterator[None]:
        """Run the base model with ``adapter_name``'s task head in place (no-op without own head)."""
        if adapter_name not in self.extra_heads:
            yield
            return
        own = self.extra_heads[adapter_name]
        original = {key: getattr(self.base_model, key) for key in own}
        try:
            for key, module in own.items():
                setattr(self.base_model, key, module)
            yield
        finally:
            for key, module in original.items():
                setattr(self.base_model, key, module)

    # ---- HF-PEFT-like surface -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "adapter", "extra_adapters", "extra_heads"):
                raise
            return getattr(self.base_model, name)

    @property
    def config(self) -> Any:
        return self.base_model.config

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter]

    @property
    def adapter_config(self) -> PromptTuningConfig:
        """The active adapter's config."""
        return self.peft_config[self.active_adapter]

    def adapter_module(self, adapter_name: str | None = None) -> PromptAdapter:
        """The ``PromptAdapter`` of ``adapter_name`` (default: the active one)."""
        name = adapter_name or self.active_adapter
        if name == self._first_adapter:
            return self.adapter
        if name not in self.extra_adapters:
            raise ValueError(f"Unknown adapter {name!r}; the model has {sorted(self.peft_config)}.")
        return self.extra_adapters[name]

    def add_adapter(
        self,
        adapter_name: str,
        peft_config: PromptTuningConfig,
        tokenizer: Any = None,
        init_weights: bool = True,
    ) -> None:
        """Add a fresh adapter (trainable, not active); classifiers get a copy of the current task head."""
        self._check_new_name(adapter_name, self.peft_config)
        config = self._complete_config(self.base_model, peft_config, init_weights)
        self._check_model(self.base_model, config)
        device = self.base_model.get_input_embeddings().weight.device
        adapter = PromptAdapter(config, _hidden_size(self.base_model)).to(device)
        adapter.train(self.training)  # the model's mode (ADePT's dropout is off in eval)
        if init_weights:
            initialise_adapter(adapter, config, self.base_model.get_input_embeddings().weight, tokenizer)
        heads = self._head_modules()
        if heads:
            self.extra_heads[adapter_name] = nn.ModuleDict({k: copy.deepcopy(m) for k, m in heads.items()})
            for param in self.extra_heads[adapter_name].parameters():
                param.requires_grad_(True)
        self.extra_adapters[adapter_name] = adapter
        self.peft_config[adapter_name] = config

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the one forward/generate/save use by default."""
        if adapter_name not in self.peft_config:
            raise ValueError(
                f"Unknown adapter {adapter_name!r}; the model has {sorted(self.peft_config)} "
                "(add_adapter or load_adapter it first)."
            )
        self.active_adapter = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove an adapter added after construction (not the active one)."""
        if adapter_name not in self.peft_config:
            raise ValueError(f"Unknown adapter {adapter_name!r}; the model has {sorted(self.peft_config)}.")
        if adapter_name == self._first_adapter:
            raise ValueError(
                f"{adapter_name!r} is the adapter the model was built with; it cannot be deleted."
            )
        if adapter_name == self.active_adapter:
            raise ValueError(f"{adapter_name!r} is active; set_adapter() another one before deleting it.")
        del self.extra_adapters[adapter_name]
        if adapter_name in self.extra_heads:
            del self.extra_heads[adapter_name]
        del self.peft_config[adapter_name]

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[PeftModel]:
        """Run the bare backbone (no prompt, no update) inside the block."""
        self._adapters_disabled = True
        try:
            yield self
        finally:
            self._adapters_disabled = False

    def get_prompt(self, adapter_name: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The composed prompt (m, d) and position-wise update (L, d) of ``adapter_name`` (default: active); the
        update is None without one or for a tokenwise update (a function of the input, not fixed rows)."""
        return self.adapter_module(adapter_name).compose()

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def prepended_parameters(self) -> list[nn.Parameter]:
        """Prompt (or SCPP) tensors plus a classifier head: the prepended side's optimizer group."""
        return self.adapter_module().prepended_parameters() + list(self._head_parameters().values())

    def added_parameters(self) -> list[nn.Parameter]:
        """A/B or SCAP tensors: the added side's optimizer group."""
        return self.adapter_module().added_parameters()

    def named_adapter_tensors(self, adapter_name: str | None = None) -> dict[str, nn.Parameter]:
        """Saved key -> parameter for every tensor of ``adapter_name`` (default: active), head included."""
        return {
            **self.adapter_module(adapter_name).named_adapter_tensors(),
            **self._head_parameters(adapter_name),
        }

    def named_saved_tensors(self, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
        """Key -> tensor of everything ``save_pretrained`` writes for ``adapter_name``: the trained tensors
        (``named_adapter_tensors``) and frozen ones saved with the adapter (ULPT's random projection)."""
        return {
            **self.named_adapter_tensors(adapter_name),
            **self.adapter_module(adapter_name).named_frozen_tensors(),
        }

    def count_trainable_parameters(self) -> ParamCount:
        """Per-component count from the method's formulas (``peft.budget``) plus the head."""
        count = self.adapter_config.param_count()
        head = sum(p.numel() for p in self._head_parameters().values())
        return replace(count, head=head)

    def log_trainable_parameters(self) -> None:
        """Log a table of the active adapter's parameters per component and the share of all parameters."""
        total = sum(p.numel() for p in self.parameters())
        title = f"{self.adapter_config.method_name} trainable parameters:"
        logger.info(self.count_trainable_parameters().table(title, total))

    def print_trainable_parameters(self) -> None:
        """Log the per-component table and print HF's one-line summary on stdout, where users read it.

        The line counts every tensor that requires a gradient (all adapters, heads included), as
        HuggingFace PEFT does.
        """
        self.log_trainable_parameters()
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}"
        )

    @contextlib.contextmanager
    def materialized(self) -> Iterator[PeftModel]:
        """Compose every adapter's prompt and update once (no codebook work per step); inference only."""
        modules = [self.adapter, *self.extra_adapters.values()]
        for module in modules:
            module.set_materialized(True)
        try:
            yield self
        finally:
            for module in modules:
                module.set_materialized(False)

    # ---- saving / loading -------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | Path,
        state_dict: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        selected_adapters: list[str] | None = None,
        **ignored: Any,
    ) -> None:
        """Write adapter_config.json + adapter_model.safetensors per adapter (trainable tensors only).

        The adapter named ``default`` goes to ``save_directory`` itself, any other to
        ``save_directory/<name>/``; ``selected_adapters`` restricts which are written.
        """
        if not is_main_process:
            return
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        unknown = sorted(set(names) - set(self.peft_config))
        if unknown:
            raise ValueError(
                f"selected_adapters {unknown} are not adapters of this model {sorted(self.peft_config)}."
            )
        by_id = {id(p): n for n, p in self.named_parameters()}
        for name in names:
            target = Path(save_directory) if name == "default" else Path(save_directory) / name
            named = self.named_saved_tensors(name)
            qualified = {key: by_id[id(p)] for key, p in named.items() if id(p) in by_id}
            self.peft_config[name].save_pretrained(target)
            io.save_tensors(named, target, state_dict, qualified)

    def load_adapter(
        self, model_id: str | Path, adapter_name: str = "default", is_trainable: bool = False, **ignored: Any
    ) -> None:
        """Load an adapter folder (ours, the original .bin, or HF PEFT prompt tuning) as ``adapter_name``.

        A new name is added from the folder's ``adapter_config.json`` and is frozen unless
        ``is_trainable``. Loading into an existing adapter overwrites its tensors and leaves
        ``requires_grad`` as it is unless ``is_trainable`` (as HuggingFace PEFT does, so the Trainer's
        best-checkpoint reload keeps training state).
        """
        state = io.read_adapter_tensors(model_id)
        config = None
        if adapter_name not in self.peft_config or (Path(model_id) / CONFIG_NAME).is_file():
            config, state = fold_submodules(read_config(model_id), state, str(model_id))
        if adapter_name not in self.peft_config:
            self.add_adapter(adapter_name, config, init_weights=False)
            self._set_trainable(adapter_name, is_trainable)
        named = self.named_saved_tensors(adapter_name)
        io.load_tensors_into(named, io.with_original_projection(state, named, model_id), str(model_id))
        if is_trainable:
            self._set_trainable(adapter_name, True)

    def _set_trainable(self, adapter_name: str, trainable: bool) -> None:
        for param in self.named_adapter_tensors(adapter_name).values():
            param.requires_grad_(trainable)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | Path,
        adapter_name: str = "default",
        is_trainable: bool = False,
        config: PromptTuningConfig | None = None,
        **ignored: Any,
    ) -> PeftModel:
        """Rebuild the adapter from ``model_id/adapter_config.json`` and load its tensors.

        No initialisation work is done (no TEXT tokenisation, no transfer files): every tensor in
        the file overwrites the fresh one; tensors absent from the file keep their random init (a
        warning names them, e.g. A/B for DePT's prompt-only hotpotqa/nq/wic checkpoints, whose B=0
        init makes the added update zero). HF PEFT prompt-tuning folders load too (see
        ``peft.hf_prompt_tuning``). The adapter is frozen unless ``is_trainable``.
        """
        state = io.read_adapter_tensors(model_id)
        config, state = fold_submodules(config or read_config(model_id), state, str(model_id))
        target = cls if cls.family else wrapper_for(_family_of(model, config))
        wrapped = target(model, config, adapter_name, init_weights=False)
        named = wrapped.named_saved_tensors(adapter_name)
        io.load_tensors_into(named, io.with_original_projection(state, named, model_id), str(model_id))
        wrapped._set_trainable(adapter_name, is_trainable)
        return wrapped

    # ---- input construction (peft/inputs.py) ------------------------------------------------------
    def _adapter_or_none(self, adapter_name: str) -> PromptAdapter | None:
        """The adapter of ``adapter_name``; None for ``"__base__"`` rows and under ``disable_adapter()``."""
        if adapter_name == BASE_ADAPTER or self._adapters_disabled:
            return None
        return self.adapter_module(adapter_name)

    def _embeds_and_mask(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, n, d) input embeddings and the (B, n) mask (all ones when none is given)."""
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (or inputs_embeds).")
            inputs_embeds = self.base_model.get_input_embeddings()(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(
                inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device
            )
        return inputs_embeds, attention_mask

    def _prepend(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        adapter_name: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[prompt ; E[x] + update] and [1_m ; mask] of one adapter (default: the active one)."""
        embeds, mask = self._embeds_and_mask(input_ids, attention_mask, inputs_embeds)
        adapter = self._adapter_or_none(adapter_name or self.active_adapter)
        return inputs.prepend(embeds, mask, adapter, self.family)

    def _prepend_rows(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        adapter_names: Sequence[str],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Each row with its own adapter (``inputs.prepend_rows``): embeds, mask, position ids or None."""
        embeds, mask = self._embeds_and_mask(input_ids, attention_mask, inputs_embeds)
        groups = [
            inputs.RowGroup(rows, self._adapter_or_none(name), self._layout_length(name))
            for name, rows in self._row_groups(adapter_names, embeds.shape[0]).items()
        ]
        return inputs.prepend_rows(embeds, mask, groups, self.family)

    def _layout_length(self, adapter_name: str) -> int | None:
        """The config's max_length L of an adapter (also for PT, whose inputs are laid out to L)."""
        if adapter_name == BASE_ADAPTER or self._adapters_disabled:
            return None
        return self.peft_config[adapter_name].max_length

    def _row_groups(self, adapter_names: Sequence[str], batch: int) -> dict[str, list[int]]:
        """Adapter name -> row indices (first-appearance order); checks the names and the mode."""
        if self.training:
            raise ValueError(
                "adapter_names (one adapter per row) is for inference: call model.eval() first; training "
                "uses the active adapter (set_adapter)."
            )
        return inputs.group_rows(adapter_names, batch, [*self.peft_config, BASE_ADAPTER])


def get_peft_model(model: nn.Module, peft_config: PromptTuningConfig, tokenizer: Any = None) -> PeftModel:
    """Freeze ``model`` and wrap it with a fresh adapter for its family.

    ``tokenizer`` is used for TEXT init (else loaded from ``tokenizer_name_or_path``).
    """
    return wrapper_for(_family_of(model, peft_config))(model, peft_config, tokenizer=tokenizer)
