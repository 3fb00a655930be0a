"""Prompt tuning, DePT, ACCEPT (SCPP / SCAP), DPT, ULPT and ADePT adapters for frozen HuggingFace models.

Written for this project (not HuggingFace PEFT); it shadows an installed ``peft`` distribution and
provides the names transformers' Trainer imports from it (``PeftModel``, ``PeftMixedModel``).
"""

from .budget import ParamCount
from .config import BudgetWarning, PromptTuningConfig
from .family import FAMILIES, Family, detect_family, get_family
from .io import MissingAdapterTensorsWarning
from .model import (
    PeftMixedModel,
    PeftModel,
    PeftModelForCausalLM,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    get_peft_model,
)

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "BudgetWarning",
    "Family",
    "MissingAdapterTensorsWarning",
    "ParamCount",
    "PeftMixedModel",
    "PeftModel",
    "PeftModelForCausalLM",
    "PeftModelForSeq2SeqLM",
    "PeftModelForSequenceClassification",
    "PromptTuningConfig",
    "__version__",
    "detect_family",
    "get_family",
    "get_peft_model",
]
