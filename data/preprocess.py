"""Tokenisation of formatted splits and the padding collator (docs/fidelity.md#f-tokenize, #f-causal).

Three model families:

* ``seq2seq`` (T5): ``input_ids``/``attention_mask`` = source truncated to L (``</s>`` kept);
  ``labels`` = target ids truncated to ``max_target_length``. Padding (right) to L and to
  ``max_target_length`` with pad labels = -100 when ``pad_to_max_length`` (the original), otherwise
  the ids are stored unpadded and :class:`PaddingCollator` pads each batch.
* ``causal`` (decoder-only). Format (a cleaned-up version of DePT's, documented deviation)::

      prompt = [BOS if the tokenizer adds one] + ids(source)[:budget] + ids("Label :")
      target = ids(target)[:max_target_length - 1] + [EOS]
      train row: input_ids = prompt + target,  labels = [-100] * len(prompt) + target
      eval row:  input_ids = prompt,           labels = ids(target)   (no EOS)

  ``ids`` = tokenisation without special tokens. The source is truncated so that the row fits L
  (the original kept the first L tokens, which could cut off the label); this happens before any
  padding, so padded and unpadded rows hold the same tokens. Rows are left-padded to L (pad id,
  mask 0, labels -100) when ``pad_to_max_length``, otherwise :class:`PaddingCollator` left-pads each
  batch; labels of eval rows are padded to the same length separately (their length differs from
  the prompt's).
* ``classifier`` (encoder + head): source ids as for seq2seq; ``labels`` = the integer class
  (float for STS-B; -100 for unlabeled rows).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import datasets
import torch

from data.tasks import get_task
from peft.family import Family

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
CAUSAL_MARKER = "Label :"
SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def max_target_length(task_name: str, tokenizer, generation_max_length: int = 20) -> int:
    """Longest tokenised label string incl. ``</s>`` (3 with T5 for every classification task and STS-B);
    ``generation_max_length`` for QA tasks."""
    task = get_task(task_name)
    if task.labels_list is None:
        return generation_max_length
    return max(len(tokenizer(label).input_ids) for label in task.labels_list)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id
    return tokenizer.eos_token_id if pad is None else pad


def _pad(seq: list, length: int, value, left: bool) -> list:
    fill = [value] * (length - len(seq))
    return fill + seq if left else seq + fill


def _special_prefix(tokenizer) -> list[int]:
    """Ids the tokenizer puts before the text (e.g. Llama's BOS; nothing for T5)."""
    probe = "a"
    full = tokenizer(probe).input_ids
    bare = tokenizer(probe, add_special_tokens=False).input_ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []


def _tokenize_seq2seq(
    batch, tokenizer, max_seq_length: int, max_target_length: int, pad: bool, classifier: bool
):
    padding = "max_length" if pad else False
    enc = tokenizer(batch["source"], max_length=max_seq_length, truncation=True, padding=padding)
    out = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    if classifier:
        out["labels"] = [IGNORE_INDEX if lab == -1 else lab for lab in batch["label"]]
        return out
    tgt = tokenizer(
        text_target=batch["target"], max_length=max_target_length, truncation=True, padding=padding
    )
    pad_id = _pad_id(tokenizer)
    out["labels"] = (
        [[IGNORE_INDEX if t == pad_id else t for t in ids] for ids in tgt["input_ids"]]
        if pad
        else tgt["input_ids"]
    )
    return out


def _tokenize_causal(
    batch, tokenizer, max_seq_length: int, max_target_length: int, pad: bool, is_train: bool
):
    prefix = _special_prefix(tokenizer)
    marker = tokenizer(CAUSAL_MARKER, add_special_tokens=False).input_ids
    sources = tokenizer(batch["source"], add_special_tokens=False).input_ids
    targets = tokenizer(batch["target"], add_special_tokens=False).input_ids
    pad_id, eos = _pad_id(tokenizer), tokenizer.eos_token_id
    out = {"input_ids": [], "attention_mask": [], "labels": []}
    for src, tgt in zip(sources, targets, strict=True):
        tgt = tgt[: max_target_length - 1]
        answer = tgt + [eos] if is_train else []
        budget = max(max_seq_length - len(prefix) - len(marker) - len(answer), 0)
        prompt = prefix + src[:budget] + marker
        ids = (prompt + answer)[-max_seq_length:]  # only cuts when prefix + marker + answer > L
        labels = ([IGNORE_INDEX] * len(prompt) + answer)[-len(ids) :] if is_train else tgt
        mask = [1] * len(ids)
        if pad:
            ids, mask = _pad(ids, max_seq_length, pad_id, True), _pad(mask, max_seq_length, 0, True)
            labels = _pad(labels, max_seq_length, IGNORE_INDEX, True)
        out["input_ids"].append(ids)
        out["attention_mask"].append(mask)
        out["labels"].append(labels)
    return out


def tokenize_splits(
    splits: datasets.DatasetDict,
    tokenizer,
    family: Family,
    max_seq_length: int,
    max_target_length: int,
    pad_to_max_length: bool = True,
    num_proc: int | None = None,
    overwrite_cache: bool = False,
) -> datasets.DatasetDict:
    """Tokenise every split (batched, cached ``datasets.map``); keeps only model columns.

    Returns splits with ``input_ids``, ``attention_mask`` (+ ``token_type_ids`` if the tokenizer
    makes them) and ``labels``; see the module docstring for each family's layout. The formatted
    splits keep ``source``/``target``/``answers``/``group_id`` for writing predictions and scoring.
    """
    if max_seq_length <= 0 or max_target_length <= 0:
        raise ValueError("max_seq_length and max_target_length must be positive")
    out = {}
    for name, split in splits.items():
        if family.answer_in_input:
            fn, kwargs = _tokenize_causal, {"is_train": name == "train"}
        else:
            if family.classification_head and "label" not in split.column_names:
                raise ValueError(
                    f"Split {name!r} has no 'label' column: QA tasks cannot use a classifier head"
                )
            fn, kwargs = _tokenize_seq2seq, {"classifier": family.classification_head}
        kwargs.update(
            tokenizer=tokenizer,
            max_seq_length=max_seq_length,
            max_target_length=max_target_length,
            pad=pad_to_max_length,
        )
        out[name] = split.map(
            fn,
            fn_kwargs=kwargs,
            batched=True,
            remove_columns=split.column_names,
            num_proc=num_proc if num_proc and len(split) >= 2 * num_proc else None,
            load_from_cache_file=not overwrite_cache,
            desc=f"Tokenizing {name} ({family})",
        )
    return datasets.DatasetDict(out)


def _round_up(n: int, multiple: int | None) -> int:
    return n if not multiple else -(-n // multiple) * multiple


class PaddingCollator:
    """Pads a list of tokenised rows into a batch of tensors.

    Sequences are padded to the batch's longest row, or to ``max_seq_length`` when given, rounded up
    to ``pad_to_multiple_of``; right padding for seq2seq/classifier, left for causal. ``input_ids``
    use the pad id, ``attention_mask``/``token_type_ids`` 0, ``labels`` -100. Sequence labels are
    padded to their own batch maximum (rounded up likewise). Causal rows share one length, labels
    included: L, or the longest input or label of the batch, so that eval labels (the target alone)
    end on the same columns as in the original's L-column layout. Scalar labels become a ``long``
    tensor (``float`` for regression); other keys are stacked as they are. Output: ``[batch, length]``
    tensors.
    """

    def __init__(
        self,
        tokenizer,
        family: Family,
        max_seq_length: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        self.family = family
        self.pad_id = _pad_id(tokenizer)
        self.max_seq_length = max_seq_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.left = self.family.padding_side == "left"

    def _target_length(self, lengths: Sequence[int], fixed: bool) -> int:
        longest = max(lengths)
        if fixed and self.max_seq_length is not None:
            if longest > self.max_seq_length:
                raise ValueError(
                    f"a row has {longest} tokens, more than max_seq_length={self.max_seq_length}"
                )
            return self.max_seq_length
        return _round_up(longest, self.pad_to_multiple_of)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        lengths = [len(f["input_ids"]) for f in features]
        if self.family.answer_in_input and isinstance(features[0].get("labels"), (list, tuple)):
            lengths += [len(f["labels"]) for f in features]  # eval rows: labels may outgrow the prompt
        input_length = self._target_length(lengths, fixed=True)
        for key in features[0]:
            values = [f[key] for f in features]
            if key == "labels" and not isinstance(values[0], (list, tuple)):
                dtype = torch.float32 if isinstance(values[0], float) else torch.long
                batch[key] = torch.tensor(values, dtype=dtype)
                continue
            if key not in SEQUENCE_KEYS:
                batch[key] = torch.tensor(values)
                continue
            if key == "labels":
                aligned = self.family.answer_in_input
                length = input_length if aligned else self._target_length([len(v) for v in values], False)
                fill = IGNORE_INDEX
            else:
                length, fill = input_length, (self.pad_id if key == "input_ids" else 0)
            batch[key] = torch.tensor(
                [_pad(list(v), length, fill, self.left) for v in values], dtype=torch.long
            )
        return batch
