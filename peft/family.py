"""Model families: what differs between encoder-decoder, decoder-only and encoder-classifier backbones.

Every layer (tokenisation, padding, model loading, training, evaluation, the run planner) asks the
family's descriptor instead of comparing family names. Adding a family means adding one ``Family``
here and its ``PeftModel`` subclass, which names the family it wraps (``peft/wrappers.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import transformers
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: "seq2seq" | "causal" | "classifier" (written to ``run_config.json``).
        task_type: the adapter config's ``task_type`` (HF PEFT's names).
        auto_class_name: the transformers Auto class that loads the backbone.
        padding_side: "right", or "left" where row j of the added update belongs to padded position j
            of a decoder-only input left-padded to ``max_length`` (a batch padded only to its longest
            row n gets the last n rows, see ``PeftModelForCausalLM``).
        generates: evaluation decodes generated tokens (``predict_with_generate``); False scores logits.
        answer_in_input: training rows are the prompt followed by the answer tokens (labels aligned with
            ``input_ids``) and generation returns the input followed by the new tokens.
        classification_head: the backbone has a task head trained with the adapter; labels are class
            indices (a ``label`` column), and ``num_labels`` is passed when loading.
        plain_mean_loss: the backbone's loss is a plain mean over one micro-batch (T5, BERT heads), so
            the Trainer must divide it by the gradient-accumulation steps; transformers' causal LMs
            normalise over the accumulated batch themselves.
    """

    name: str
    task_type: str
    auto_class_name: str
    padding_side: str
    generates: bool
    answer_in_input: bool
    classification_head: bool
    plain_mean_loss: bool

    def __str__(self) -> str:
        return self.name

    @property
    def auto_class(self) -> Any:
        """The transformers Auto class, e.g. ``AutoModelForSeq2SeqLM``."""
        return getattr(transformers, self.auto_class_name)

    @property
    def pads_left(self) -> bool:
        """Inputs are left-padded (decoder-only): a batch's rows end at its last position."""
        return self.padding_side == "left"

    @property
    def prompt_position(self) -> int:
        """The input position the prompt goes before: 1 where a classification head reads position 0
        (the pretrained start token, [CLS] / <s>), else 0 (in front of everything)."""
        return 1 if self.classification_head else 0


# name, task type, Auto class, padding side, generates, answer in input, classification head, plain mean loss
FAMILIES: tuple[Family, ...] = tuple(
    Family(*row)
    for row in (
        ("seq2seq", "SEQ_2_SEQ_LM", "AutoModelForSeq2SeqLM", "right", True, False, False, True),
        ("causal", "CAUSAL_LM", "AutoModelForCausalLM", "left", True, True, False, False),
        ("classifier", "SEQ_CLS", "AutoModelForSequenceClassification", "right", False, False, True, True),
    )
)  # fmt: skip
SEQ2SEQ, CAUSAL, CLASSIFIER = FAMILIES
TASK_TYPES: tuple[str, ...] = tuple(family.task_type for family in FAMILIES)


def get_family(family: Family | str) -> Family:
    """The descriptor of ``family`` (a descriptor or its name); ValueError for an unknown name."""
    if isinstance(family, Family):
        return family
    for candidate in FAMILIES:
        if candidate.name == family:
            return candidate
    names = tuple(f.name for f in FAMILIES)
    raise ValueError(f"Unknown model family {family!r}; expected one of {names}")


def new_tokens(generated: torch.Tensor, input_ids: torch.Tensor, family: Family) -> torch.Tensor:
    """The (B, k) tokens that ``generate`` produced after the (B, n) ``input_ids``.

    Decoder-only generation returns the input ids followed by the new tokens; encoder-decoder
    generation returns the decoder's tokens, starting with the decoder start token.
    """
    if not family.generates:
        raise ValueError(f"A {family} model scores logits; it does not generate tokens.")
    return generated[:, input_ids.shape[1] if family.answer_in_input else 1 :]


def family_for_task_type(task_type: str) -> Family:
    """The family whose adapter ``task_type`` is ``task_type`` (e.g. "CAUSAL_LM")."""
    for family in FAMILIES:
        if family.task_type == task_type:
            return family
    raise ValueError(f"task_type {task_type!r} is not supported; use one of {TASK_TYPES}.")


def detect_family(config_or_model: Any) -> Family:
    """The family from ``is_encoder_decoder`` and the architecture names of a HF config or model.

    For a model, its class name counts too (a model built in memory from a config lists no architectures).
    """
    config = getattr(config_or_model, "config", config_or_model)
    names = list(getattr(config, "architectures", None) or [])
    if config is not config_or_model:
        names.append(type(config_or_model).__name__)
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return CAUSAL
    if any(n.endswith("ForSequenceClassification") for n in names):
        return CLASSIFIER
    # A bare backbone (e.g. sentence-transformers' "BertModel" checkpoints): encoders that have a
    # masked-LM head in transformers get a new classification head; decoders are causal LMs.
    model_type = getattr(config, "model_type", None)
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return CLASSIFIER
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return CAUSAL
    raise ValueError(
        f"Cannot tell the model family of {getattr(config, 'model_type', config)!r} (architectures {names}); "
        "use an AutoModelForSeq2SeqLM / AutoModelForCausalLM / AutoModelForSequenceClassification model "
        "or set task_type in the adapter config."
    )
