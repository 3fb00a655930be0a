"""Text processing shared by data preparation and scoring (docs/fidelity.md#f-mrqa, #f-wsc, #f-metrics)."""

from __future__ import annotations

import re
import string

import numpy as np
import regex

# Anything that is not an underscore, whitespace, number, letter or mark (needs the `regex` module).
_PUNCT = regex.compile(r"([^_\s\p{N}\p{L}\p{M}])")
_WHITESPACE = regex.compile(r"\s+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_CHARS = frozenset(string.punctuation)


def pad_punctuation(text: object) -> str:
    """T5's ``_pad_punctuation``: one space around each punctuation char, collapse whitespace, no strip.

    ``'Who wrote "Hamlet"?'`` -> ``'Who wrote " Hamlet " ? '``.
    """
    return _WHITESPACE.sub(" ", _PUNCT.sub(r" \1 ", str(text)))


def remove_markup(text: str) -> str:
    """MultiRC markup removal: ``<br>`` -> space, ``<b>``/``</b>`` deleted."""
    return re.sub(r"</?b>", "", text.replace("<br>", " "))


def mark_span(text: str, span_text: str, span_index: int, mark: str) -> str:
    """Surround the word-level span at ``span_index`` with ``mark`` (T5's WSC marking).

    The span is found after exactly ``span_index`` whitespace-separated words. Unlike the
    original, the span text is regex-escaped (the original inserted it unescaped, so a span with
    regex metacharacters could match the wrong text or raise). If it does not match, the text is
    returned unchanged.
    """
    pattern = rf"^((?:\S+\s){{{int(span_index)}}})({re.escape(span_text)})"
    return re.sub(pattern, lambda m: f"{m.group(1)}{mark} {m.group(2)} {mark}", text, count=1)


def mark_wsc_spans(text: str, span1_text: str, span1_index: int, span2_text: str, span2_index: int) -> str:
    """WSC source: span1 (the noun) in ``* ... *``, span2 (the pronoun) in ``# ... #`` (docs/fidelity.md#f-wsc)."""
    marked = mark_span(text, span1_text, span1_index, "*")
    if span1_index < span2_index:
        span2_index += 2  # the two "*" words inserted before span2
    return mark_span(marked, span2_text, span2_index, "#")


def stsb_target(label: float) -> str:
    """DePT's STS-B target: ``str(np.round((label * 5) / 5, decimals=1))`` = round-half-even to 1 decimal.

    Faithful to the original (not T5's 0.2 grid): 4.25 -> "4.2", 1.6667 -> "1.7", 5.0 -> "5.0".
    """
    return str(float(np.round((label * 5) / 5, decimals=1)))


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop ``string.punctuation``, drop a/an/the, collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT_CHARS)
    return " ".join(_ARTICLES.sub(" ", text).split())


def decode_generations(
    tokenizer, predictions, labels, pad_token_id: int | None = None
) -> tuple[list[str], list[str]]:
    """Decode generated ids and label ids to stripped strings (docs/fidelity.md#f-metrics).

    Args:
        predictions: ``[N, T]`` ids (or a tuple whose first element is), may contain -100.
        labels: ``[N, T']`` label ids with -100 for ignored positions.
    Returns:
        ``(decoded_predictions, decoded_references)``, special tokens skipped, ``.strip()``-ed.
    """
    if isinstance(predictions, tuple):
        predictions = predictions[0]
    pad = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    preds = np.where(np.asarray(predictions) == -100, pad, np.asarray(predictions))
    refs = np.where(np.asarray(labels) == -100, pad, np.asarray(labels))
    decoded_preds = tokenizer.batch_decode(preds.tolist(), skip_special_tokens=True)
    decoded_refs = tokenizer.batch_decode(refs.tolist(), skip_special_tokens=True)
    return [p.strip() for p in decoded_preds], [r.strip() for r in decoded_refs]
