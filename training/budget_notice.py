"""The paper's budget warning for a ``train.py`` run: once, and only when a method flag the user set
breaks the rule.

The library (``PromptTuningConfig.validate``) warns on every adapter over the budget. ``train.py``
validates the same config twice (before and while building the model) and its defaults (m = 100 with
an added update) never fit the rule on their own, so it silences the library warning and asks here
instead. A flag counts as set when its value differs from the argument's default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterator
from typing import Any

from peft import BudgetWarning, PromptTuningConfig
from peft.config import BUDGET_FIELDS
from training.planner.config_flags import flag_terms

logger = logging.getLogger("train")

# The method flags (ModelArguments fields) that enter each part of the budget rule.
PREPENDED_FLAGS = ("prefix_length", "peft_type", "prompt_kind", "scpp", "sub_dim_scpp", "codebook_size_scpp", "lodim_r")
ADDED_FLAGS = ("prefix_length", "peft_type", "update_kind", "r", "scap", "sub_dim_scap", "codebook_size_scap")
FLAGS_PER_PART = {
    "prepended": PREPENDED_FLAGS,
    "added": ADDED_FLAGS,
    "total": tuple(dict.fromkeys(PREPENDED_FLAGS + ADDED_FLAGS)),
}


def flags_set(arguments: Any) -> set[str]:
    """Field names of a dataclass of arguments whose value differs from the field's default."""
    names = set()
    for item in dataclasses.fields(arguments):
        if item.default is not dataclasses.MISSING and getattr(arguments, item.name) != item.default:
            names.add(item.name)
    return names


def budget_warning(config: PromptTuningConfig | None, token_dim: int, user_flags: set[str]) -> str | None:
    """The warning line for the parts over budget that a flag in ``user_flags`` enters, or None."""
    if config is None:
        return None
    problems = {
        part: text
        for part, text in config.budget_problems(token_dim).items()
        if user_flags.intersection(FLAGS_PER_PART[part])
    }
    if not problems:
        return None
    return flag_terms(config.budget_message(problems) + ".", BUDGET_FIELDS)


def warn_budget(config: PromptTuningConfig | None, token_dim: int, model_args: Any) -> None:
    """Log the budget warning once when the user's method flags break the rule (see ``budget_warning``)."""
    message = budget_warning(config, token_dim, flags_set(model_args))
    if message is not None:
        logger.warning("%s", message)


@contextlib.contextmanager
def library_budget_warnings_off() -> Iterator[None]:
    """Silence the library's ``BudgetWarning`` (``warn_budget`` reports it once, for set flags only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        yield
