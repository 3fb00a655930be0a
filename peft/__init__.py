"""Prompt tuning, DePT, ACCEPT (SCPP / SCAP), DPT, ULPT and ADePT adapters for frozen HuggingFace models.

Written for this project (not HuggingFace PEFT); it shadows an installed ``peft`` distribution and
provides the names transformers' Trainer imports from it (``PeftModel``, ``PeftMixedModel``).
"""

from .budget import ParamCount
from .config import BudgetWarning, PromptTuningConfig
from .errors import AdapterConfigError, InputLengthError
from .family import FAMILIES, Family, detect_family, get_family
from .io import MissingAdapterTensorsWarning
from .model import PeftModel, get_peft_model, wrapper_for
from .wrappers import (
    PeftMixedModel,
    PeftModelForCausalLM,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
)

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "AdapterConfigError",
    "BudgetWarning",
    "Family",
    "InputLengthError",
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
    "wrapper_for",
]
