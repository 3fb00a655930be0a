"""Typed errors of the library, in the terms of its own API (config fields, tensors, inputs).

Callers that expose other names (``train.py``'s flags) translate them: an ``AdapterConfigError`` says
which ``PromptTuningConfig`` fields its message is about.
"""

from __future__ import annotations


class AdapterConfigError(ValueError):
    """A ``PromptTuningConfig`` value the library refuses.

    Attributes:
        fields: the config field names the message is about, in the order the message names them.
    """

    def __init__(self, message: str, field: str | tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields: tuple[str, ...] = (field,) if isinstance(field, str) else tuple(field)

    @property
    def field(self) -> str:
        """The (first) config field the message is about."""
        return self.fields[0]


class InputLengthError(ValueError):
    """An input longer than the L rows of an adapter's added update."""
