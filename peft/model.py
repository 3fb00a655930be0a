"""Wrappers that prepend the prompt and add the position-wise update to a frozen HuggingFace model.

Families (from the model config, never from paths): ``seq2seq`` (T5 & co.), ``causal`` (Llama,
GPT-2, ...), ``classifier`` (BERT-style sequence classifiers). Input construction (method.md §5):
``[prompt (m rows) ; E[x] + added[:n]]`` with the attention mask prefixed by m ones.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io
from .budget import ParamCount
from .config import PromptTuningConfig
from .encoders import DensePrompt, PromptAdapter
from .family import CAUSAL, CLASSIFIER, SEQ2SEQ, Family, detect_family, family_for_task_type

logger = logging.getLogger(__name__)

def _family_of(model: nn.Module, config: PromptTuningConfig) -> Family:
    if config.task_type is not None:
        return family_for_task_type(config.task_type)
    return detect_family(model)


def _hidden_size(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[1])


class PeftModel(nn.Module):
    """A frozen base model plus a prompt adapter; family-specific subclasses implement forward/generate."""

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
        if adapter_name != "default":
            raise ValueError("Only one adapter, named 'default', is supported.")
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
        config.validate(check_init=init_weights)
        self._check_model(model, config)
        for param in model.parameters():
            param.requires_grad_(False)
        self.base_model = model
        word_embeddings = model.get_input_embeddings().weight
        self.adapter = PromptAdapter(config, dim).to(word_embeddings.device)
        self.peft_config = {"default": config}
        self.active_adapter = "default"
        for param in self._head_parameters().values():
            param.requires_grad_(True)
        if init_weights:
            self._init_adapter(config, word_embeddings, tokenizer)
        if self.plain_mean_loss and not hasattr(type(model), "accepts_loss_kwargs"):
            # transformers' Trainer inspects the unwrapped base model: a forward with **kwargs makes
            # it skip dividing the loss by the gradient-accumulation steps, although T5/BERT losses
            # are plain batch means (pitfalls.md, "Gradient accumulation with T5").
            model.accepts_loss_kwargs = False
        self.train(model.training)

    # ---- construction helpers ---------------------------------------------------------------------
    def _check_model(self, model: nn.Module, config: PromptTuningConfig) -> None:
        """Family-specific sanity checks (overridden)."""

    def _init_adapter(
        self, config: PromptTuningConfig, word_embeddings: torch.Tensor, tokenizer: Any
    ) -> None:
        if config.prompt_tuning_init == "TEXT" and isinstance(self.adapter.prompt, DensePrompt):
            if tokenizer is None:
                from transformers import AutoTokenizer

                source = config.tokenizer_name_or_path or config.base_model_name_or_path
                if source is None:
                    raise ValueError("--text_init needs a tokenizer: set tokenizer_name_or_path.")
                tokenizer = AutoTokenizer.from_pretrained(source)
            ids = tokenizer(config.prompt_tuning_init_text)["input_ids"]
            self.adapter.prompt.init_from_token_ids(word_embeddings, ids)
        if config.pretrain_scpp_ckpt and not config.scpp:
            logger.warning("--pretrain_scpp_ckpt is ignored: --scpp is off.")
        if config.pretrain_scap_ckpt and not config.scap:
            logger.warning("--pretrain_scap_ckpt is ignored: --scap is off.")
        io.load_transfer_init(
            self.adapter.named_adapter_tensors(),
            config.pretrain_scpp_ckpt if config.scpp else None,
            config.pretrain_scap_ckpt if config.scap else None,
        )

    def _head_parameters(self) -> dict[str, nn.Parameter]:
        """Trainable task-head parameters of the base model (classifiers only)."""
        return {}

    # ---- HF-PEFT-like surface -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "adapter"):
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
        return self.peft_config["default"]

    def set_adapter(self, adapter_name: str) -> None:
        if adapter_name != "default":
            raise ValueError(f"Unknown adapter {adapter_name!r}; only 'default' exists.")

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def prepended_parameters(self) -> list[nn.Parameter]:
        """Prompt (or SCPP) tensors plus a classifier head: the ``--learning_rate`` group."""
        return self.adapter.prepended_parameters() + list(self._head_parameters().values())

    def added_parameters(self) -> list[nn.Parameter]:
        """A/B or SCAP tensors: the ``--added_embedding_lr`` group."""
        return self.adapter.added_parameters()

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        """Saved key -> parameter for every trainable tensor (adapter and head)."""
        return {**self.adapter.named_adapter_tensors(), **self._head_parameters()}

    def count_trainable_parameters(self) -> ParamCount:
        """Per-component count from the method's formulas (``peft.budget``) plus the head."""
        count = self.adapter_config.param_count()
        head = sum(p.numel() for p in self._head_parameters().values())
        return replace(count, head=head)

    def print_trainable_parameters(self) -> None:
        """Log a table of trainable parameters per component and the share of all parameters."""
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

    @contextlib.contextmanager
    def materialized(self) -> Iterator[PeftModel]:
        """Compose prompt and added update once (no codebook work per step); inference only."""
        self.adapter.set_materialized(True)
        try:
            yield self
        finally:
            self.adapter.set_materialized(False)

    # ---- saving / loading -------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | Path,
        state_dict: dict[str, torch.Tensor] | None = None,
        is_main_process: bool = True,
        **ignored: Any,
    ) -> None:
        """Write adapter_config.json + adapter_model.safetensors (trainable tensors only)."""
        if not is_main_process:
            return
        named = self.named_adapter_tensors()
        by_id = {id(p): n for n, p in self.named_parameters()}
        qualified = {key: by_id[id(p)] for key, p in named.items() if id(p) in by_id}
        self.adapter_config.save_pretrained(save_directory)
        io.save_tensors(named, save_directory, state_dict, qualified)

    def load_adapter(
        self, model_id: str | Path, adapter_name: str = "default", is_trainable: bool = True, **ignored: Any
    ) -> None:
        """Load adapter tensors from a folder (ours or the original .bin) into this model."""
        self.set_adapter(adapter_name)
        state = io.read_adapter_tensors(model_id)
        io.load_tensors_into(self.named_adapter_tensors(), state, str(model_id))
        for param in self.named_adapter_tensors().values():
            param.requires_grad_(is_trainable)

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
        init makes the added update zero).
        """
        config = config or PromptTuningConfig.from_pretrained(model_id)
        target = cls if cls.family else _family_of(model, config).wrapper
        wrapped = target(model, config, adapter_name, init_weights=False)
        wrapped.load_adapter(model_id, adapter_name, is_trainable=is_trainable)
        return wrapped

    # ---- input construction ---------------------------------------------------------------------
    def _word_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base_model.get_input_embeddings()(input_ids)

    def _check_length(self, n: int) -> None:
        L = self.adapter.max_length
        if L is not None and n > L:
            raise ValueError(
                f"Input length {n} exceeds max_length L={L} of the added update; tokenize with "
                f"--max_seq_length {L} (truncation) or build the adapter with a larger --max_seq_length."
            )

    def _prepend(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[prompt ; E[x] + added[:n]] and [1_m ; mask]; the adapter is composed once per call.

        The prompt goes before input position ``prompt_position`` (0 = in front of everything).
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (or inputs_embeds).")
            inputs_embeds = self._word_embeddings(input_ids)
        batch, n = inputs_embeds.shape[:2]
        self._check_length(n)
        prompt, added = self.adapter.compose()
        if added is not None:
            inputs_embeds = inputs_embeds + self._update_rows(added, n).to(inputs_embeds.dtype)
        m = prompt.shape[0]
        prompt = prompt.to(inputs_embeds.dtype).unsqueeze(0).expand(batch, m, prompt.shape[1])
        k = self.prompt_position
        embeds = torch.cat([inputs_embeds[:, :k], prompt, inputs_embeds[:, k:]], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones(batch, n, dtype=torch.long, device=embeds.device)
        return embeds, self._fill_prompt_positions(attention_mask, m, 1)

    def _update_rows(self, added: torch.Tensor, n: int) -> torch.Tensor:
        """The (n, d) rows of the (L, d) added update that meet a right-padded batch of n positions: the first n."""
        return added[:n]

    def _fill_prompt_positions(self, per_token: torch.Tensor, m: int, value: int) -> torch.Tensor:
        """(B, n) -> (B, m + n): ``value`` at the m prompt positions (mask 1, label -100, token type 0)."""
        k = self.prompt_position
        fill = torch.full((per_token.shape[0], m), value, dtype=per_token.dtype, device=per_token.device)
        return torch.cat([per_token[:, :k], fill, per_token[:, k:]], dim=1)


class PeftModelForSeq2SeqLM(PeftModel):
    """Encoder-decoder: prompt on the encoder input only; labels and decoder untouched."""

    family = SEQ2SEQ
    plain_mean_loss = True

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Returns the base model's output (logits over the decoder positions)."""
        embeds, mask = self._prepend(input_ids, attention_mask, inputs_embeds)
        return self.base_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Decoder tokens (starting with the decoder start token); ``labels`` are ignored."""
        kwargs.pop("labels", None)
        embeds, mask = self._prepend(input_ids, attention_mask, inputs_embeds)
        return self.base_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)


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

    def _update_rows(self, added: torch.Tensor, n: int) -> torch.Tensor:
        """The last n rows of the (L, d) update: left padding aligns the batch's end with row L - 1."""
        return added[added.shape[0] - n :]

    def _layout_position_ids(self, m: int, n: int, device: torch.device) -> torch.Tensor | None:
        """(1, m + n) position ids of a batch of n columns placed at the end of the L-column layout.

        ``None`` when the batch already has L columns (or no L is known): the base model's default
        ``arange(m + n)`` is then that layout, and the fixed-length path stays exactly as it was.
        """
        L = self.adapter_config.max_length
        if not L or n >= L:
            return None
        prompt = torch.arange(m, device=device)
        inputs = torch.arange(m + L - n, m + L, device=device)
        return torch.cat([prompt, inputs]).unsqueeze(0)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Logits cover the m prompt positions first, then the n input positions."""
        embeds, mask = self._prepend(input_ids, attention_mask, inputs_embeds)
        m = self.adapter.num_virtual_tokens
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = self._layout_position_ids(m, embeds.shape[1] - m, embeds.device)
        if labels is not None:
            labels = self._fill_prompt_positions(labels, embeds.shape[1] - labels.shape[1], -100)
        return self.base_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)

    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> Any:
        """Input ids followed by new tokens; the prompt and update are injected on the first step.

        The first step is detected from the cache (``None`` or empty): transformers 5 passes a
        cache object already on step one.
        """
        kwargs.pop("labels", None)
        embeds, mask = self._prepend(input_ids, attention_mask, None)
        base = self.base_model
        original = base.prepare_inputs_for_generation

        def prepare(input_ids: torch.Tensor, *args: Any, cache: Any = None, **kwargs: Any) -> dict[str, Any]:
            if cache is None or cache.get_seq_length() == 0:
                kwargs["inputs_embeds"] = embeds
                kwargs["is_first_iteration"] = True
            else:
                kwargs.pop("inputs_embeds", None)
            return original(input_ids, *args, cache=cache, **kwargs)

        base.prepare_inputs_for_generation = prepare
        try:
            return base.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        finally:
            del base.prepare_inputs_for_generation


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
        max_pos = getattr(model.config, "max_position_embeddings", None)
        needed = config.num_virtual_tokens + (config.max_length or 0)
        if max_pos is not None and needed > max_pos:
            raise ValueError(
                f"--prefix_length {config.num_virtual_tokens} + --max_seq_length {config.max_length} = {needed} "
                f"exceeds the model's max_position_embeddings {max_pos}; reduce one of them."
            )

    def _head_parameters(self) -> dict[str, nn.Parameter]:
        base = self.base_model
        prefix = getattr(base, "base_model_prefix", "")
        return {
            name: p for name, p in base.named_parameters() if not (prefix and name.startswith(prefix + "."))
        }

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        embeds, mask = self._prepend(input_ids, attention_mask, inputs_embeds)
        if token_type_ids is not None:
            m = embeds.shape[1] - token_type_ids.shape[1]
            kwargs["token_type_ids"] = self._fill_prompt_positions(token_type_ids, m, 0)
        return self.base_model(inputs_embeds=embeds, attention_mask=mask, labels=labels, **kwargs)


class PeftMixedModel(nn.Module):
    """Placeholder so that ``from peft import PeftMixedModel`` (transformers' Trainer) works; never built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("Mixed adapters are not supported; use get_peft_model.")


def get_peft_model(model: nn.Module, peft_config: PromptTuningConfig, tokenizer: Any = None) -> PeftModel:
    """Freeze ``model`` and wrap it with a fresh adapter for its family.

    ``tokenizer`` is used for TEXT init (else loaded from ``tokenizer_name_or_path``).
    """
    return _family_of(model, peft_config).wrapper(model, peft_config, tokenizer=tokenizer)
