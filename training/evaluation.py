"""``compute_metrics`` for the Trainer, one callable per logical split: decode generations (or classifier
logits) and score them with ``metrics.compute_task_metrics``; ``decode`` gives the predictions as text for
``predictions_<split>.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import EvalPrediction, PreTrainedTokenizerBase

from metrics import compute_task_metrics
from metrics.postprocess import decode_generations
from peft.family import SEQ2SEQ, Family

logger = logging.getLogger(__name__)


@dataclass
class SplitReferences:
    """What scoring needs from one logical split, in dataset order."""

    sources: list[str]
    targets: list[str]
    answers: list[list[str]] | None = None
    group_ids: list[int] | None = None

    @classmethod
    def from_dataset(cls, dataset) -> SplitReferences:
        """From a split of ``data.loading.load_task_splits`` (columns source, target, [answers], [group_id])."""
        columns = set(dataset.column_names)
        return cls(
            sources=list(dataset["source"]),
            targets=[str(t) for t in dataset["target"]],
            answers=[list(a) for a in dataset["answers"]] if "answers" in columns else None,
            group_ids=[int(g) for g in dataset["group_id"]] if "group_id" in columns else None,
        )


@dataclass
class TaskMetrics:
    """The task's scoring; ``for_split`` gives the ``compute_metrics`` callable of one logical split.

    Args:
        task_name: ``--task_name``.
        tokenizer: decodes generated ids and label ids (families that generate).
        references: per logical split.
        family: one that does not generate (classifier) is scored on argmax logits (label index as its
            string, STS-B: the value).
    """

    task_name: str
    tokenizer: PreTrainedTokenizerBase
    references: dict[str, SplitReferences]
    family: Family = SEQ2SEQ
    labels_list: Sequence[str] | None = None

    def for_split(self, split: str) -> SplitMetrics:
        """The scorer of ``split`` ("validation" for the Trainer's periodic evaluation, or "test")."""
        return SplitMetrics(self, split)


@dataclass(frozen=True)
class SplitMetrics:
    """``compute_metrics`` for one logical split: decodes the predictions and scores them against its references.

    Args:
        task: the task's scoring (tokenizer, family, references of every split).
        split: "validation" or "test".
    """

    task: TaskMetrics
    split: str

    @property
    def references(self) -> SplitReferences:
        """Sources and targets (answers, group ids) of this split, in dataset order."""
        return self.task.references[self.split]

    def __call__(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        """Metric name -> value (x100, the task's keys)."""
        predictions, references = self._decode(eval_prediction.predictions, eval_prediction.label_ids)
        refs = self.references
        return compute_task_metrics(
            self.task.task_name, predictions, references, answers=refs.answers, group_ids=refs.group_ids
        )

    def decode(self, predictions, label_ids) -> list[str]:
        """The predictions as text, one per example in dataset order (for ``predictions_<split>.jsonl``).

        ``predictions``: generated ids [N, T] or classifier logits [N, classes]; ``label_ids``: label ids [N, T]."""
        return self._decode(predictions, label_ids)[0]

    def _decode(self, predictions, label_ids) -> tuple[list[str], list[str]]:
        """(predictions, references to score them against) as text."""
        if self.task.family.generates:
            texts, references = decode_generations(self.task.tokenizer, predictions, label_ids)
        else:
            texts, references = self._classifier_predictions(predictions), self.references.targets
        if len(texts) != len(self.references.targets):
            raise ValueError(
                f"{self.split}: {len(texts)} predictions for {len(self.references.targets)} examples "
                "(evaluation must keep every example, in order)"
            )
        return texts, references

    def _classifier_predictions(self, logits) -> list[str]:
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = np.asarray(logits)
        if logits.ndim == 1 or logits.shape[-1] == 1:
            return [f"{value:.4g}" for value in logits.reshape(-1)]
        indices = logits.argmax(axis=-1)
        labels_list = self.task.labels_list
        if labels_list:
            return [labels_list[i] for i in indices]
        return [str(i) for i in indices]
