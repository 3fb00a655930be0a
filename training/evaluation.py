"""``compute_metrics`` for the Trainer: decode generations (or classifier logits) and score them with
``metrics.compute_task_metrics``, keeping the decoded predictions for ``predictions_<split>.jsonl``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers import EvalPrediction, PreTrainedTokenizerBase

from metrics import compute_task_metrics
from metrics.postprocess import decode_generations
from peft.family import SEQ2SEQ, Family, get_family

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
    """Callable ``compute_metrics``; ``split`` selects the references (the Trainer's periodic evaluation
    uses "validation"; ``train.py`` switches to "test" before ``predict``).

    Args:
        task_name: ``--task_name``.
        tokenizer: decodes generated ids and label ids (seq2seq/causal).
        references: per logical split.
        family: one that does not generate (classifier) scores argmax logits (label index as its string,
            STS-B: the value).
    """

    task_name: str
    tokenizer: PreTrainedTokenizerBase
    references: dict[str, SplitReferences]
    family: Family | str = SEQ2SEQ
    labels_list: Sequence[str] | None = None
    split: str = "validation"
    last_predictions: dict[str, list[str]] = field(default_factory=dict)

    def __call__(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        refs = self.references[self.split]
        if not get_family(self.family).generates:
            predictions = self._classifier_predictions(eval_prediction.predictions)
            references = refs.targets
        else:
            predictions, references = decode_generations(
                self.tokenizer, eval_prediction.predictions, eval_prediction.label_ids
            )
        if len(predictions) != len(refs.targets):
            raise ValueError(
                f"{self.split}: {len(predictions)} predictions for {len(refs.targets)} examples "
                "(evaluation must keep every example, in order)"
            )
        self.last_predictions[self.split] = predictions
        return compute_task_metrics(
            self.task_name, predictions, references, answers=refs.answers, group_ids=refs.group_ids
        )

    def _classifier_predictions(self, logits) -> list[str]:
        if isinstance(logits, tuple):
            logits = logits[0]
        logits = np.asarray(logits)
        if logits.ndim == 1 or logits.shape[-1] == 1:
            return [f"{value:.4g}" for value in logits.reshape(-1)]
        indices = logits.argmax(axis=-1)
        if self.labels_list:
            return [self.labels_list[i] for i in indices]
        return [str(i) for i in indices]
