"""Wrappers that prepend the prompt and add the position-wise update to a frozen HuggingFace model.

Families (from the model config, never from paths): ``seq2seq`` (T5 & co.), ``causal`` (Llama,
GPT-2, ...), ``classifier`` (BERT-style sequence classifiers). Input construction (docs/fidelity.md#f-combine):
``[prompt (m rows) ; E[x] + added[:n]]`` with the attention mask prefixed by m ones.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from . import io
from .buckets import CALL_COST, length_buckets
from .budget import ParamCount
from .config import CONFIG_NAME, PromptTuningConfig
from .encoders import DensePrompt, PromptAdapter
from .family import CAUSAL, CLASSIFIER, SEQ2SEQ, Family, detect_family, family_for_task_type
from .hf_prompt_tuning import fold_submodules, read_config

logger = logging.getLogger(__name__)

# Name for rows of a mixed batch that run on the bare backbone (no prompt, no update).
BASE_ADAPTER = "__base__"
ROW_INDEXED_ARGUMENTS = (
    "streamer", "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "negative_prompt_ids",
    "negative_prompt_attention_mask", "assistant_model", "synced_gpus",
)  # fmt: skip
"""``generate`` arguments that see rows by their index in the call, the whole batch, or every call."""


def _family_of(model: nn.Module, config: PromptTuningConfig) -> Family:
    if config.task_type is not None:
        return family_for_task_type(config.task_type)
    return detect_family(model)


def check_position_limit(model_config: Any, num_virtual_tokens: int, max_length: int | None) -> None:
    """ValueError when the m prompt rows plus L input positions exceed the model's position embeddings
    (``max_position_embeddings``; models without absolute positions, e.g. T5, have no limit)."""
    limit = getattr(model_config, "max_position_embeddings", None)
    needed = num_virtual_tokens + (max_length or 0)
    if isinstance(limit, int) and needed > limit:
        raise ValueError(
            f"--max_seq_length {max_length} + --prefix_length {num_virtual_tokens} = {needed} "
            f"exceeds the model's max_position_embeddings {limit}; reduce one of them."
        )


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


class PeftModel(nn.Module):
    """A frozen base model plus named prompt adapters; family-specific subclasses implement forward/generate.

    The adapter the model is built with lives in ``adapter`` (its tensors keep their state-dict names);
    adapters added later live in ``extra_adapters``. Classifier adapters added later get their own copy
    of the task head (``extra_heads``), swapped in while they run.
    """

    family: Family | None = None
    plain_mean_loss = False
    prompt_position = 0

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
            self._init_adapter(self.adapter, config, tokenizer)
        if self.plain_mean_loss:
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

    def _init_adapter(self, adapter: PromptAdapter, config: PromptTuningConfig, tokenizer: Any) -> None:
        word_embeddings = self.base_model.get_input_embeddings().weight
        if config.prompt_tuning_init == "TEXT" and isinstance(adapter.prompt, DensePrompt):
            if tokenizer is None:
                from transformers import AutoTokenizer

                source = config.tokenizer_name_or_path or config.base_model_name_or_path
                if source is None:
                    raise ValueError("--text_init needs a tokenizer: set tokenizer_name_or_path.")
                tokenizer = AutoTokenizer.from_pretrained(source)
            ids = tokenizer(config.prompt_tuning_init_text)["input_ids"]
            adapter.prompt.init_from_token_ids(word_embeddings, ids)
        if config.pretrain_scpp_ckpt and not config.scpp:
            logger.warning("--pretrain_scpp_ckpt is ignored: --scpp is off.")
        if config.pretrain_scap_ckpt and not config.scap:
            logger.warning("--pretrain_scap_ckpt is ignored: --scap is off.")
        io.load_transfer_init(
            adapter.named_adapter_tensors(),
            config.pretrain_scpp_ckpt if config.scpp else None,
            config.pretrain_scap_ckpt if config.scap else None,
        )

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
            self._init_adapter(adapter, config, tokenizer)
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
        """Prompt (or SCPP) tensors plus a classifier head: the ``--learning_rate`` group."""
        return self.adapter_module().prepended_parameters() + list(self._head_parameters().values())

    def added_parameters(self) -> list[nn.Parameter]:
        """A/B or SCAP tensors: the ``--added_embedding_lr`` group."""
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
        count = self.count_trainable_parameters()
        total = sum(p.numel() for p in self.parameters())
        rows = [("prepended", count.prepended), ("added", count.added)]
        if count.head:
            rows.append(("head", count.head))
        rows.append(("total", count.total))
        lines = [f"{self.adapter_config.method_name} trainable parameters:"]
        lines += [f"  {name:<10} {value:>12,}" for name, value in rows]
        lines.append(f"  of all     {total:>12,} ({100 * count.total / max(total, 1):.4f}%)")
        logger.info("\n".join(lines))

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
        target = cls if cls.family else _family_of(model, config).wrapper
        wrapped = target(model, config, adapter_name, init_weights=False)
        named = wrapped.named_saved_tensors(adapter_name)
        io.load_tensors_into(named, io.with_original_projection(state, named, model_id), str(model_id))
        wrapped._set_trainable(adapter_name, is_trainable)
        return wrapped

    # ---- input construction ---------------------------------------------------------------------
    def _word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base_model.get_input_embeddings()(input_ids)

    def _check_length(self, n: int, max_length: int | None) -> None:
        L = max_length
        if L is not None and n > L:
            raise ValueError(
                f"Input length {n} exceeds max_length L={L} of the added update; tokenize with "
                f"--max_seq_length {L} (truncation) or build the adapter with a larger --max_seq_length."
            )

    def _parts(self, adapter_name: str) -> tuple[torch.Tensor | None, PromptAdapter | None, int | None]:
        """(prompt (m, d), the adapter, its update's L) of an adapter; (None, None, None) for the bare backbone."""
        if adapter_name == BASE_ADAPTER or self._adapters_disabled:
            return None, None, None
        module = self.adapter_module(adapter_name)
        return module.composed_prompt(), module, module.max_length

    def _prepend(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        adapter_name: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[prompt ; E[x] + update] and [1_m ; mask]; the adapter is composed once per call.

        The update is the adapter's ``add_update`` (position-wise rows counted from the end for
        left-padded inputs). The prompt goes before input position ``prompt_position`` (0 = in front of
        everything). Under ``disable_adapter()`` the inputs pass unchanged (m = 0).
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (or inputs_embeds).")
            inputs_embeds = self._word_embeddings(input_ids)
        batch, n = inputs_embeds.shape[:2]
        prompt, module, max_length = self._parts(adapter_name or self.active_adapter)
        self._check_length(n, max_length)
        if attention_mask is None:
            attention_mask = torch.ones(batch, n, dtype=torch.long, device=inputs_embeds.device)
        if prompt is None:
            return inputs_embeds, attention_mask
        inputs_embeds = module.add_update(inputs_embeds, from_end=self.pads_left)
        m = prompt.shape[0]
        prompt = prompt.to(inputs_embeds.dtype).unsqueeze(0).expand(batch, m, prompt.shape[1])
        k = self.prompt_position
        embeds = torch.cat([inputs_embeds[:, :k], prompt, inputs_embeds[:, k:]], dim=1)
        return embeds, self._fill_prompt_positions(attention_mask, m, 1)

    def _layout_position_ids(
        self, m: int, n: int, max_length: int | None, device: torch.device
    ) -> torch.Tensor | None:
        """(1, m + n) position ids of m prompt and n input columns; None: the model's default ``arange``."""
        return None

    def _fill_prompt_positions(self, per_token: torch.Tensor, m: int, value: int) -> torch.Tensor:
        """(B, n) -> (B, m + n): ``value`` at the m prompt positions (mask 1, label -100, token type 0)."""
        k = self.prompt_position
        fill = torch.full((per_token.shape[0], m), value, dtype=per_token.dtype, device=per_token.device)
        return torch.cat([per_token[:, :k], fill, per_token[:, k:]], dim=1)

    # ---- per-row adapters (inference) -------------------------------------------------------------
    @property
    def pads_left(self) -> bool:
        """Inputs are left-padded (decoder-only): a mixed batch then also pads rows with a shorter
        prompt in front, so that every row's tokens end at the last position."""
        return self.family.padding_side == "left"

    def _row_groups(self, adapter_names: list[str] | tuple[str, ...], batch: int) -> dict[str, list[int]]:
        """Adapter name -> row indices (first-appearance order); checks the names and the mode."""
        if self.training:
            raise ValueError(
                "adapter_names (one adapter per row) is for inference: call model.eval() first; training "
                "uses the active adapter (set_adapter)."
            )
        if len(adapter_names) != batch:
            raise ValueError(f"adapter_names has {len(adapter_names)} entries for a batch of {batch} rows.")
        groups: dict[str, list[int]] = {}
        for row, name in enumerate(adapter_names):
            if name != BASE_ADAPTER and name not in self.peft_config:
                raise ValueError(
                    f"adapter_names[{row}] = {name!r} is not an adapter of this model "
                    f"{sorted(self.peft_config)} (or {BASE_ADAPTER!r} for the bare backbone)."
                )
            groups.setdefault(name, []).append(row)
        return groups

    def _prepend_rows(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        adapter_names: list[str] | tuple[str, ...],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Each row with its own adapter: (embeds (B, T, d), mask (B, T), position ids (B, T) or None).

        T is the longest prompt-plus-input of the batch; a shorter row gets masked zero positions
        after it, or before it when ``pads_left``. Masked positions take no attention weight, so every
        row computes what it would alone; position ids (left padding only; None when the default
        ``arange`` is already right) give each row the positions it has alone. Each adapter is
        composed once per call.
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (or inputs_embeds).")
            inputs_embeds = self._word_embeddings(input_ids)
        batch, n, dim = inputs_embeds.shape
        device = inputs_embeds.device
        if attention_mask is None:
            attention_mask = torch.ones(batch, n, dtype=torch.long, device=device)
        pieces = []
        for name, rows in self._row_groups(adapter_names, batch).items():
            index = torch.tensor(rows, device=device)
            max_length = self._max_length(name)
            columns = self._fitting_columns(attention_mask[index], max_length)
            group = inputs_embeds[index][:, columns]
            embeds, mask = self._prepend(None, attention_mask[index][:, columns], group, name)
            m = embeds.shape[1] - group.shape[1]
            positions = self._layout_position_ids(m, group.shape[1], self._layout_length(name), device)
            pieces.append((index, embeds, mask, positions))
        longest = max(embeds.shape[1] for _, embeds, _, _ in pieces)
        out = inputs_embeds.new_zeros(batch, longest, dim)
        out_mask = attention_mask.new_zeros(batch, longest)
        out_positions = torch.zeros(batch, longest, dtype=torch.long, device=device)
        default_positions = True
        for index, embeds, mask, positions in pieces:
            width = embeds.shape[1]
            start = longest - width if self.pads_left else 0
            out[index, start : start + width] = embeds
            out_mask[index, start : start + width] = mask
            default_positions = default_positions and positions is None and start == 0
            if positions is None:
                positions = torch.arange(width, device=device).unsqueeze(0)
            out_positions[index, start : start + width] = positions
        if not self.pads_left or default_positions:
            return out, out_mask, None
        return out, out_mask, out_positions

    def _max_length(self, adapter_name: str) -> int | None:
        """L of an adapter's position-wise update (None: no such update, or the bare backbone)."""
        if adapter_name == BASE_ADAPTER or self._adapters_disabled:
            return None
        return self.adapter_module(adapter_name).max_length

    def _layout_length(self, adapter_name: str) -> int | None:
        """The config's max_length L of an adapter (also for PT, whose inputs are laid out to L)."""
        if adapter_name == BASE_ADAPTER or self._adapters_disabled:
            return None
        return self.peft_config[adapter_name].max_length

    def _fitting_columns(self, attention_mask: torch.Tensor, max_length: int | None) -> slice:
        """The input columns a group of rows keeps so that it fits an update of length L.

        A mixed batch is padded to its longest row, which may exceed a shorter adapter's L; when
        the extra columns are padding for every row of the group (the last columns, or the first
        ones for left padding), they are dropped, which leaves each row's result unchanged.
        """
        n = attention_mask.shape[1]
        if max_length is None or n <= max_length:
            return slice(None)
        extra = slice(0, n - max_length) if self.pads_left else slice(max_length, None)
        if bool(attention_mask[:, extra].any()):
            return slice(None)  # real tokens there: _check_length reports the length
        return slice(n - max_length, None) if self.pads_left else slice(0, max_length)

    def _prompt_length(self, adapter_name: str) -> int:
        """m of an adapter (0 for the bare backbone)."""
        if adapter_name == BASE_ADAPTER or self._adapters_disabled:
            return 0
        return self.peft_config[adapter_name].num_virtual_tokens

    # ---- generation --------------------------------------------------------------------------------
    generation_call_cost: float = CALL_COST
    """One more backbone call's price, in padded token positions, when ``generate`` splits a mixed batch."""
    generate_returns_input = False
    """Decoder-only models return the input ids followed by the new tokens; encoder-decoders the new ones."""

    def _generate_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, adapter_names: list[str] | None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        """One ``generate`` call over the whole batch (each family builds its own inputs)."""
        raise NotImplementedError

    def _generate_by_length(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, adapter_names: list[str],
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        """Generation for a mixed batch whose rows are grouped into runs of similar length (prompt plus
        input, ``peft/buckets.py``), so that a short task's rows are not padded to a long task's."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        self._row_groups(adapter_names, input_ids.shape[0])  # checks names and mode before any work
        prompts = [self._prompt_length(name) for name in adapter_names]
        lengths = [int(n) + m for n, m in zip(attention_mask.sum(dim=1).tolist(), prompts, strict=True)]
        runs = length_buckets(lengths, self.generation_call_cost)
        # a row without a single position (no prompt, no token) attends to padding only: its output
        # depends on the width of its call, so such a batch runs as one call
        if len(runs) <= 1 or min(lengths) == 0 or not self._splittable(kwargs):
            return self._generate_batch(input_ids, attention_mask, adapter_names, **kwargs)
        return self._generate_runs(runs, input_ids, attention_mask, adapter_names, **kwargs)

    def _generation_setting(self, kwargs: dict[str, Any], name: str) -> Any:
        """A ``generate`` setting as transformers resolves it: the keyword argument (even ``None``), else the
        passed ``generation_config``'s value where set, else the model's generation config."""
        if name in kwargs:
            return kwargs[name]
        passed = kwargs.get("generation_config")
        value = getattr(passed, name, None) if passed is not None else None
        return value if value is not None else getattr(self.base_model.generation_config, name, None)

    def _splittable(self, kwargs: dict[str, Any]) -> bool:
        """Whether groups of rows give what one call gives (decoder-only: one ``generate`` per group).

        Not with several sequences per row or a dict output; not with arguments that see a row by its
        batch index or the batch as a whole (``ROW_INDEXED_ARGUMENTS``); not with settings that read the
        input columns a group drops (``min_length`` and ``max_length`` count them; a repetition penalty,
        banned n-grams and multi-token banned or biased sequences look at the padding); and not with
        sampling, whose random draws follow the batch's shape, so that a seed gives the tokens of one call,
        as T5 (one decoder loop) does.
        """

        def setting(name: str) -> Any:
            return self._generation_setting(kwargs, name)

        if setting("return_dict_in_generate") or (setting("num_return_sequences") or 1) != 1:
            return False
        given = (kwargs.get(name) for name in ROW_INDEXED_ARGUMENTS)
        if any(value is not None and value is not False for value in given) or setting("do_sample"):
            return False
        if (setting("repetition_penalty") or 1.0) != 1.0 or (setting("no_repeat_ngram_size") or 0) > 0:
            return False
        if setting("bad_words_ids") or setting("sequence_bias"):  # multi-token entries read earlier columns
            return False
        return (setting("min_length") or 0) == 0 and setting("max_new_tokens") is not None

    def _run_inputs(
        self, rows: list[int], input_ids: torch.Tensor, attention_mask: torch.Tensor, adapter_names: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """(row index, input ids, mask, names) of one run, its columns trimmed to its longest row."""
        index = torch.tensor(rows, device=input_ids.device)
        mask = attention_mask[index]
        real = torch.nonzero(mask.any(dim=0)).flatten()
        if real.numel() == 0:  # rows without a single token: nothing to trim
            columns = slice(None)
        else:
            columns = slice(int(real[0]), None) if self.pads_left else slice(0, int(real[-1]) + 1)
        return index, input_ids[index][:, columns], mask[:, columns], [adapter_names[r] for r in rows]

    def _generate_runs(
        self, runs: list[list[int]], input_ids: torch.Tensor, attention_mask: torch.Tensor,
        adapter_names: list[str], **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """One generation call per run; the rows come back in batch order, a run that finished early padded
        with the pad id (as finished rows are inside one call), so the result equals one call."""
        new_tokens = []
        for rows in runs:
            index, ids, mask, names = self._run_inputs(rows, input_ids, attention_mask, adapter_names)
            out = self._generate_batch(ids, mask, names, **kwargs)
            new_tokens.append((index, out[:, ids.shape[1] :] if self.generate_returns_input else out))
        width = max(tokens.shape[1] for _, tokens in new_tokens)
        merged = input_ids.new_full((input_ids.shape[0], width), self._generation_pad_id(kwargs))
        for index, tokens in new_tokens:
            merged[index, : tokens.shape[1]] = tokens
        return torch.cat([input_ids, merged], dim=1) if self.generate_returns_input else merged

    def _generation_pad_id(self, kwargs: dict[str, Any]) -> int:
        """The id generation pads finished rows with: ``pad_token_id``, else the first EOS id, each resolved
        as transformers does (``_generation_setting``)."""
        for name in ("pad_token_id", "eos_token_id"):
            value = self._generation_setting(kwargs, name)
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            if value is not None:
                return int(value)
        return 0

    @staticmethod
    def _unsupported_with_rows(kwargs: dict[str, Any], names: tuple[str, ...]) -> None:
        given = [name for name in names if kwargs.get(name) is not None]
        if given:
            raise ValueError(f"{given} cannot be combined with adapter_names; pass input_ids/attention_mask.")


class PeftModelForSeq2SeqLM(PeftModel):
    """Encoder-decoder: prompt on the encoder input only; labels and decoder untouched."""

    family = SEQ2SEQ
    plain_mean_loss = True

    def _encoder_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        adapter_names: list[str] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if adapter_names is None:
            return self._prepend(input_ids, attention_mask, inputs_embeds)
        return self._prepend_rows(input_ids, attention_mask, inputs_embeds, adapter_names)[:2]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Returns the base model's output (logits over the decoder positions).

        ``adapter_names`` (inference only): one adapter name (or ``"__base__"``) per row.
        """
        embeds, mask = self._encoder_inputs(input_ids, attention_mask, inputs_embeds, adapter_names)
        return self.base_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Decoder tokens (starting with the decoder start token); ``labels`` are ignored.

        With ``adapter_names`` the rows run in runs of similar length (``_generate_by_length``).
        """
        kwargs.pop("labels", None)
        if adapter_names is not None and input_ids is not None and inputs_embeds is None:
            return self._generate_by_length(input_ids, attention_mask, adapter_names, **kwargs)
        embeds, mask = self._encoder_inputs(input_ids, attention_mask, inputs_embeds, adapter_names)
        return self.base_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def _generate_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, adapter_names: list[str] | None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        embeds, mask = self._encoder_inputs(input_ids, attention_mask, None, adapter_names)
        return self.base_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)

    def _splittable(self, kwargs: dict[str, Any]) -> bool:
        """The groups share one generation call, only the encoder runs per group: any settings but
        attentions and hidden states, whose encoder parts and cross-attention widths are the whole
        batch's in one call."""
        names = ("output_attentions", "output_hidden_states")
        return not any(self._generation_setting(kwargs, name) for name in names)

    def _generate_runs(
        self, runs: list[list[int]], input_ids: torch.Tensor, attention_mask: torch.Tensor,
        adapter_names: list[str], **kwargs: Any,
    ) -> Any:  # fmt: skip
        """The encoder once per run (trimmed to the run's longest row), the decoder once for the batch.

        Every row's encoder states are placed at the front of a batch padded to the longest run, with
        the padding masked: the decoder's cross-attention gives those positions no weight, so each row
        decodes as it does alone, in one generation loop for all rows.
        """
        encoder = self.base_model.get_encoder()
        outputs = []
        for rows in runs:
            index, ids, mask, names = self._run_inputs(rows, input_ids, attention_mask, adapter_names)
            embeds, mask = self._encoder_inputs(ids, mask, None, names)
            hidden = encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            outputs.append((index, hidden, mask))
        width = max(hidden.shape[1] for _, hidden, _ in outputs)
        batch, dim = input_ids.shape[0], outputs[0][1].shape[2]
        states = outputs[0][1].new_zeros(batch, width, dim)
        state_mask = attention_mask.new_zeros(batch, width)
        for index, hidden, mask in outputs:
            states[index, : hidden.shape[1]] = hidden
            state_mask[index, : mask.shape[1]] = mask
        return self.base_model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=state_mask, **kwargs
        )


class PeftModelForCausalLM(PeftModel):
    """Decoder-only: prompt before the (left-padded) input; labels prefixed with m x -100.

    Inputs are left-padded to L (the original) or, with dynamic padding, to the batch's longest row
    n <= L. A token at column q of such a batch sat at column q + (L - n) of the original's layout, so
    the batch gets the update's last n rows, ``added[L - n:]``, and the training forward gets the
    positions of that layout: 0..m-1 for the prompt, then m + (L - n) + q. Generation needs nothing
    extra: transformers derives its positions from the attention mask, which counts the same real
    tokens either way. docs/benchmarks.md has the equivalence argument and the measurements.
    """

    family = CAUSAL
    generate_returns_input = True

    def _layout_position_ids(
        self, m: int, n: int, max_length: int | None, device: torch.device
    ) -> torch.Tensor | None:
        """(1, m + n) position ids of a batch of n columns placed at the end of the L-column layout.

        ``None`` when the batch already has L columns (or no L is known): the base model's default
        ``arange(m + n)`` is then that layout, and the fixed-length path stays exactly as it was.
        """
        L = max_length
        if not L or n >= L:
            return None
        prompt = torch.arange(m, device=device)
        inputs = torch.arange(m + L - n, m + L, device=device)
        return torch.cat([prompt, inputs]).unsqueeze(0)

    def _decoder_inputs(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        adapter_names: list[str] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(embeds, mask, position ids or None) for the active adapter or one adapter per row."""
        if adapter_names is not None:
            return self._prepend_rows(input_ids, attention_mask, inputs_embeds, adapter_names)
        embeds, mask = self._prepend(input_ids, attention_mask, inputs_embeds)
        n = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        length = self._layout_length(self.active_adapter)
        return embeds, mask, self._layout_position_ids(embeds.shape[1] - n, n, length, embeds.device)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits cover the m prompt positions first, then the n input positions.

        With ``adapter_names`` (inference only) every row's logits end at the same position: a row
        with a shorter prompt has masked positions in front of it.
        """
        if adapter_names is not None:
            self._unsupported_with_rows(kwargs, ("position_ids", "past_key_values"))
        embeds, mask, positions = self._decoder_inputs(
            input_ids, attention_mask, inputs_embeds, adapter_names
        )
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = positions
        if labels is not None:
            labels = self._fill_prompt_positions(labels, embeds.shape[1] - labels.shape[1], -100)
        return self.base_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Input ids followed by new tokens; the prompt and update are injected on the first step.

        The first step is detected from the cache (``None`` or empty): transformers 5 passes a
        cache object already on step one. Generation numbers positions from the attention mask,
        so rows padded in front for ``adapter_names`` keep their positions, and such a batch runs in
        runs of similar length (``_generate_by_length``).
        """
        kwargs.pop("labels", None)
        if adapter_names is not None and input_ids is not None:
            return self._generate_by_length(input_ids, attention_mask, adapter_names, **kwargs)
        return self._generate_batch(input_ids, attention_mask, adapter_names, **kwargs)

    def _generate_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, adapter_names: list[str] | None,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        embeds, mask, _ = self._decoder_inputs(input_ids, attention_mask, None, adapter_names)
        base = self.base_model
        original = base.prepare_inputs_for_generation
        names = adapter_names or [BASE_ADAPTER if self._adapters_disabled else self.active_adapter] * len(input_ids)

        def prepare(input_ids: torch.Tensor, *args: Any, cache: Any = None, **kwargs: Any) -> dict[str, Any]:
            first = cache is None or cache.get_seq_length() == 0
            if first:
                # beam search and several sequences per row repeat each row (repeat_interleave) before step 1
                copies = input_ids.shape[0] // embeds.shape[0]
                kwargs["inputs_embeds"] = embeds.repeat_interleave(copies, dim=0) if copies > 1 else embeds
                kwargs["is_first_iteration"] = True
            else:
                kwargs.pop("inputs_embeds", None)
            model_inputs = original(input_ids, *args, cache=cache, **kwargs)
            if not first:
                self._update_new_tokens(model_inputs, names)
            return model_inputs

        base.prepare_inputs_for_generation = prepare
        try:
            return base.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        finally:
            del base.prepare_inputs_for_generation


    def _update_new_tokens(self, model_inputs: dict[str, Any], adapter_names: list[str]) -> None:
        """Give the generated tokens of a step the token-wise update of their row's adapter, as every token had
        in training (a position-wise update has no rows beyond the input: those tokens get none).

        ``model_inputs["input_ids"]`` (rows repeated for beams) become ``inputs_embeds`` when a row's adapter
        has a token-wise update; otherwise the inputs stay as they are.
        """
        modules = {
            name: self.adapter_module(name)
            for name in set(adapter_names)
            if name != BASE_ADAPTER and not self._adapters_disabled
        }
        tokenwise = {name for name, module in modules.items() if module.added is not None and not module.position_wise}
        ids = model_inputs.get("input_ids")
        if not tokenwise or ids is None:
            return
        embeds = self._word_embeddings(ids)
        copies = ids.shape[0] // len(adapter_names)
        for name in tokenwise:
            rows = [row * copies + c for row, n in enumerate(adapter_names) if n == name for c in range(copies)]
            index = torch.tensor(rows, device=ids.device)
            embeds[index] = modules[name].add_update(embeds[index], from_end=True)
        model_inputs["input_ids"] = None
        model_inputs["inputs_embeds"] = embeds


class PeftModelForSequenceClassification(PeftModel):
    """Encoder classifier: prompt right after the first token (token types 0), trainable head.

    The pooler and head of BERT-style classifiers read position 0, which the pretrained model filled
    with its start token ([CLS] / <s>); the prompt is inserted after it so that this stays true
    (a deviation from the T5/decoder paths, where the prompt is in front of everything).
    """

    family = CLASSIFIER
    plain_mean_loss = True
    prompt_position = 1

    def _check_model(self, model: nn.Module, config: PromptTuningConfig) -> None:
        check_position_limit(model.config, config.num_virtual_tokens, config.max_length)

    def _head_modules(self) -> dict[str, nn.Module]:
        base = self.base_model
        prefix = getattr(base, "base_model_prefix", "")
        return {
            name: module
            for name, module in base.named_children()
            if name != prefix and any(True for _ in module.parameters())
        }

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        adapter_names: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits (B, num_labels) from the active adapter's prompt and head.

        ``adapter_names`` (inference only): rows are grouped by adapter and each group runs through
        the backbone with its own head (heads differ per task); logits come back in row order and the
        loss is the mean over labelled rows. Only ``loss`` and ``logits`` are returned then.
        """
        if adapter_names is not None:
            self._unsupported_with_rows(kwargs, tuple(kwargs))
            return self._forward_rows(
                input_ids, attention_mask, token_type_ids, inputs_embeds, labels, adapter_names
            )
        name = BASE_ADAPTER if self._adapters_disabled else self.active_adapter
        with self._head_of(name):
            return self._classify(
                name, input_ids, attention_mask, token_type_ids, inputs_embeds, labels, **kwargs
            )

    def _classify(
        self,
        adapter_name: str,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        labels: torch.Tensor | None,
        **kwargs: Any,
    ) -> Any:
        embeds, mask = self._prepend(input_ids, attention_mask, inputs_embeds, adapter_name)
        if token_type_ids is not None:
            m = embeds.shape[1] - token_type_ids.shape[1]
            kwargs["token_type_ids"] = self._fill_prompt_positions(token_type_ids, m, 0)
        return self.base_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    def _forward_rows(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        labels: torch.Tensor | None,
        adapter_names: list[str],
    ) -> SequenceClassifierOutput:
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("Pass input_ids (or inputs_embeds).")
        groups = self._row_groups(adapter_names, reference.shape[0])
        logits: torch.Tensor | None = None
        loss_sum, counted = None, 0
        for name, rows in groups.items():
            index = torch.tensor(rows, device=reference.device)

            mask = attention_mask[index] if attention_mask is not None else None
            columns = slice(None) if mask is None else self._fitting_columns(mask, self._max_length(name))

            def pick(tensor: torch.Tensor | None, index: torch.Tensor = index, columns: slice = columns):
                return None if tensor is None else tensor[index][:, columns]

            with self._head_of(name):
                out = self._classify(
                    name,
                    pick(input_ids),
                    pick(attention_mask),
                    pick(token_type_ids),
                    pick(inputs_embeds),
                    None if labels is None else labels[index],
                )
            if logits is None:
                logits = out.logits.new_zeros(reference.shape[0], *out.logits.shape[1:])
            if out.logits.shape[1:] != logits.shape[1:]:
                raise ValueError(
                    f"adapter {name!r} has a head with {out.logits.shape[-1]} outputs, others "
                    f"{logits.shape[-1]}; rows of one batch must share the head size."
                )
            logits[index] = out.logits
            if out.loss is not None:
                labelled = int((labels[index] != -100).sum()) if not labels.is_floating_point() else len(rows)
                if labelled:
                    loss_sum = out.loss * labelled if loss_sum is None else loss_sum + out.loss * labelled
                    counted += labelled
        loss = loss_sum / counted if loss_sum is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PeftMixedModel(nn.Module):
    """Placeholder so that ``from peft import PeftMixedModel`` (transformers' Trainer) works; never built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("Mixed adapters are not supported; use get_peft_model.")


def get_peft_model(model: nn.Module, peft_config: PromptTuningConfig, tokenizer: Any = None) -> PeftModel:
    """Freeze ``model`` and wrap it with a fresh adapter for its family.

    ``tokenizer`` is used for TEXT init (else loaded from ``tokenizer_name_or_path``).
    """
    return _family_of(model, peft_config).wrapper(model, peft_config, tokenizer=tokenizer)
