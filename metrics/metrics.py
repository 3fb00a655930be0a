"""Metric functions on strings (docs/fidelity.md#f-metrics). Every score is multiplied by 100.

Each function takes ``(predictions, references)`` as equal-length lists of strings and returns
``{key: value}``. :func:`compute_task_metrics` applies a task's metric list in order.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from data.tasks import get_task
from metrics.postprocess import normalize_answer

logger = logging.getLogger(__name__)

Scores = dict[str, float]


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def accuracy(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """``100 * mean(pred == ref)`` on raw strings."""
    _check_lengths(predictions, references)
    if not references:
        return {"accuracy": 0.0}
    return {
        "accuracy": 100.0 * float(np.mean([p == r for p, r in zip(predictions, references, strict=True)]))
    }


def binary_f1(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Binary F1 (positive class "1"); a prediction other than "0"/"1" is replaced by the wrong class."""
    _check_lengths(predictions, references)
    refs = [int(r) for r in references]
    preds = [int(p) if p in ("0", "1") else 1 - (r == 1) for p, r in zip(predictions, refs, strict=True)]
    return {"f1": 100.0 * float(f1_score(refs, preds, zero_division=0))}


def matthews_correlation(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Matthews correlation on the raw strings (an invalid prediction is just one more class)."""
    _check_lengths(predictions, references)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a single class in the batch: sklearn warns and returns 0
        value = float(matthews_corrcoef(list(references), list(predictions)))
    return {"matthews_correlation": 100.0 * value}


def macro_f1_three_classes(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """CB macro-F1 over the classes "0", "1", "2" (an invalid prediction: FN of its class, FP of none).

    Equals the original ``fbeta_score(targets, preds, beta=1, labels=range(3), average="macro")``.
    """
    _check_lengths(predictions, references)
    f1s = []
    for label in ("0", "1", "2"):
        tp = sum(p == label and r == label for p, r in zip(predictions, references, strict=True))
        fp = sum(p == label and r != label for p, r in zip(predictions, references, strict=True))
        fn = sum(p != label and r == label for p, r in zip(predictions, references, strict=True))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"f1_multiclass": 100.0 * float(np.mean(f1s))}


def parse_floats(texts: Sequence[str], fallback: float = -1.0) -> tuple[list[float], int]:
    """``float(text)`` per element; unparseable -> ``fallback``. Returns ``(values, n_unparseable)``."""
    values, bad = [], 0
    for text in texts:
        try:
            values.append(float(text))
        except (TypeError, ValueError):
            values.append(fallback)
            bad += 1
    return values, bad


def _correlation(fn: Callable, key: str, predictions: Sequence[str], references: Sequence[str]) -> Scores:
    _check_lengths(predictions, references)
    preds, bad = parse_floats(predictions)
    if bad:
        logger.warning("%s: %d of %d predictions are not numbers; scored as -1.0", key, bad, len(preds))
    refs, _ = parse_floats(references)
    if len(preds) < 2:
        return {key: 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN, scored 0
        value = float(fn(refs, preds)[0])
    return {key: 0.0 if math.isnan(value) else 100.0 * value}


def pearson(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Pearson r of parsed floats (unparseable prediction -> -1.0, NaN -> 0)."""
    return _correlation(stats.pearsonr, "pearson", predictions, references)


def spearman(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """Spearman rho of parsed floats (unparseable prediction -> -1.0, NaN -> 0)."""
    return _correlation(stats.spearmanr, "spearmanr", predictions, references)


def squad_em_f1(prediction: str, gold: str) -> tuple[float, float]:
    """SQuAD exact match and token F1 (0..1) of one prediction against one gold answer."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    em = float(pred_tokens == gold_tokens)
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return em, 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return em, 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], references: Sequence[str]) -> Scores:
    """``em``/``f1`` against one gold answer per example (the paper: the first gold answer)."""
    _check_lengths(predictions, references)
    return _squad_max(predictions, [[r] for r in references], "em", "f1")


def squad_all_answers(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> Scores:
    """Standard SQuAD scores: max over all gold answers (``em_all_answers``/``f1_all_answers``)."""
    _check_lengths(predictions, answers)
    return _squad_max(predictions, answers, "em_all_answers", "f1_all_answers")


def _squad_max(
    predictions: Sequence[str], answers: Sequence[Sequence[str]], em_key: str, f1_key: str
) -> Scores:
    ems, f1s = [], []
    for prediction, golds in zip(predictions, answers, strict=True):
        scores = [squad_em_f1(prediction, g) for g in golds] or [(0.0, 0.0)]
        ems.append(max(s[0] for s in scores))
        f1s.append(max(s[1] for s in scores))
    n = max(len(ems), 1)
    return {em_key: 100.0 * sum(ems) / n, f1_key: 100.0 * sum(f1s) / n}


def multirc_exact_match(
    predictions: Sequence[str], references: Sequence[str], group_ids: Sequence[int]
) -> Scores:
    """SuperGLUE MultiRC EM: share of questions whose answer options are all predicted correctly."""
    _check_lengths(predictions, references)
    _check_lengths(group_ids, references)
    correct: dict[int, bool] = {}
    for p, r, g in zip(predictions, references, group_ids, strict=True):
        correct[g] = correct.get(g, True) and p == r
    return {"em": 100.0 * sum(correct.values()) / max(len(correct), 1)}


_CLASSIFICATION_METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], Scores]] = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_correlation": matthews_correlation,
    "f1_multiclass": macro_f1_three_classes,
    "pearson": pearson,
    "spearmanr": spearman,
}


def is_unlabeled(reference: object) -> bool:
    """True for a missing gold label (None or the empty target of an unlabeled row)."""
    return reference is None or reference == ""


def count_invalid(task_name: str, predictions: Sequence[str]) -> int:
    """Predictions that are not a label string (STS-B: not a number). 0 for QA tasks."""
    task = get_task(task_name)
    if task.is_qa:
        return 0
    if task.is_regression:
        return parse_floats(predictions)[1]
    valid = set(task.labels_list)
    return sum(p not in valid for p in predictions)


def compute_task_metrics(
    task_name: str,
    predictions: Sequence[str],
    references: Sequence[str],
    answers: Sequence[Sequence[str]] | None = None,
    group_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """All metrics of ``task_name`` (keys without split prefix, x100), plus ``invalid_predictions``.

    Args:
        predictions, references: decoded, stripped strings (references: the target strings).
        answers: QA only; all gold answers per example -> adds ``em_all_answers``/``f1_all_answers``.
        group_ids: MultiRC only; question id per answer option -> adds ``em``.
    Rows without a label (reference None or "") are left out of the scores (``invalid_predictions``
    still counts every row); when no row has a label only ``invalid_predictions`` (classification) is
    returned.
    """
    task = get_task(task_name)
    _check_lengths(predictions, references)
    predictions = [str(p) for p in predictions]
    result: dict[str, float] = {}
    labeled = [i for i, r in enumerate(references) if not is_unlabeled(r)]
    if not labeled:
        logger.warning("%s: no reference has a label; metrics skipped", task_name)
        return {} if task.is_qa else {"invalid_predictions": count_invalid(task_name, predictions)}
    invalid = count_invalid(task_name, predictions)
    if len(labeled) < len(references):
        logger.warning("%s: %d of %d rows have no label; scored on the others", task_name,
                       len(references) - len(labeled), len(references))  # fmt: skip
        predictions = [predictions[i] for i in labeled]
        references = [references[i] for i in labeled]
        answers = None if answers is None else [answers[i] for i in labeled]
        group_ids = None if group_ids is None else [group_ids[i] for i in labeled]
    references = [str(r) for r in references]
    if task.is_qa:
        result.update(squad(predictions, references))
        if answers is not None:
            result.update(squad_all_answers(predictions, answers))
        return result
    for name in task.metric_names:
        if name == "em":  # MultiRC per-question exact match
            if group_ids is not None:
                result.update(multirc_exact_match(predictions, references, group_ids))
            continue
        result.update(_CLASSIFICATION_METRICS[name](predictions, references))
    result["invalid_predictions"] = invalid
    return result
