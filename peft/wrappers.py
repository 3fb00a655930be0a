"""The thin per-family wrappers: each names its ``Family`` and passes the inputs that ``peft/inputs.py``
builds to the backbone's ``forward`` / ``generate``.

``generate`` with one adapter per row (``adapter_names``) is one exact call over the whole batch;
grouping requests of similar length into calls is the serving layer's job (``peft/serving.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from . import inputs
from .config import PromptTuningConfig
from .family import CAUSAL, CLASSIFIER, SEQ2SEQ
from .model import BASE_ADAPTER, PeftModel


def _refuse_with_rows(kwargs: dict[str, Any], names: tuple[str, ...]) -> None:
    """ValueError naming the given ``names`` of ``kwargs``: they cannot be combined with ``adapter_names``."""
    given = [name for name in names if kwargs.get(name) is not None]
    if given:
        raise ValueError(f"{given} cannot be combined with adapter_names; pass input_ids/attention_mask.")


class PeftModelForSeq2SeqLM(PeftModel):
    """Encoder-decoder: prompt on the encoder input only; labels and decoder untouched."""

    family = SEQ2SEQ

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

        With ``adapter_names`` every row gets its own adapter in this one call; grouping requests of
        similar length into calls is the serving layer's job (``peft/serving.py``).
        """
        kwargs.pop("labels", None)
        embeds, mask = self._encoder_inputs(input_ids, attention_mask, inputs_embeds, adapter_names)
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
        return embeds, mask, inputs.layout_position_ids(embeds.shape[1] - n, n, length, embeds.device)

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
            _refuse_with_rows(kwargs, ("position_ids", "past_key_values"))
        embeds, mask, positions = self._decoder_inputs(
            input_ids, attention_mask, inputs_embeds, adapter_names
        )
        if kwargs.get("position_ids") is None:
            kwargs["position_ids"] = positions
        if labels is not None:
            labels = inputs.fill_prompt_positions(
                labels, embeds.shape[1] - labels.shape[1], -100, self.family
            )
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
        so rows padded in front for ``adapter_names`` keep their positions: the whole batch is one call.
        """
        kwargs.pop("labels", None)
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
        modules = {name: self._adapter_or_none(name) for name in set(adapter_names)}
        tokenwise = {
            name for name, module in modules.items()
            if module is not None and module.added is not None and not module.position_wise
        }  # fmt: skip
        ids = model_inputs.get("input_ids")
        if not tokenwise or ids is None:
            return
        embeds = self.base_model.get_input_embeddings()(ids)
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

    def _check_model(self, model: nn.Module, config: PromptTuningConfig) -> None:
        inputs.check_position_limit(model.config, config.num_virtual_tokens, config.max_length)

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
            _refuse_with_rows(kwargs, tuple(kwargs))
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
            kwargs["token_type_ids"] = inputs.fill_prompt_positions(token_type_ids, m, 0, self.family)
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
            adapter = self._adapter_or_none(name)
            max_length = adapter.max_length if adapter is not None else None
            columns = slice(None) if mask is None else inputs.fitting_columns(mask, max_length, self.family)

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
