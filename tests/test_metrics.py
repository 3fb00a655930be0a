"""Metrics: hand-computed cases, cross-checks against scikit-learn/scipy, key names and released numbers."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import EvalPrediction

from data.loading import load_task_splits
from data.tasks import TASKS, get_task
from metrics import compute_task_metrics
from metrics.metrics import (
    accuracy,
    binary_f1,
    macro_f1_three_classes,
    matthews_correlation,
    multirc_exact_match,
    pearson,
    spearman,
    squad,
    squad_all_answers,
    squad_em_f1,
)
from metrics.postprocess import decode_generations, normalize_answer
from peft.family import CLASSIFIER
from training.evaluation import SplitReferences, TaskMetrics


def test_hand_computed_classification():
    preds, refs = ["1", "0", "x", "1"], ["1", "1", "0", "0"]
    assert accuracy(preds, refs) == {"accuracy": 25.0}
    # invalid "x" (gold 0) becomes "1": TP=1, FP=2, FN=1 -> F1 = 2/(2+3) = 0.4
    assert binary_f1(preds, refs) == {"f1": pytest.approx(40.0)}
    assert binary_f1(["x", "x"], ["1", "0"]) == {"f1": 0.0}
    # CB: class 0: tp1 fp1 fn0 -> 2/3; class 1: tp1 fn2 ("0" and "bad") -> 1/2; class 2 -> 0; macro 7/18
    cb = macro_f1_three_classes(["0", "0", "1", "bad"], ["0", "1", "1", "1"])
    assert cb == {"f1_multiclass": pytest.approx(100 * 7 / 18)}
    assert matthews_correlation(["1", "0", "1", "0"], ["1", "0", "1", "0"]) == {"matthews_correlation": 100.0}
    assert matthews_correlation(["1", "1"], ["1", "0"]) == {"matthews_correlation": 0.0}


def test_hand_computed_correlations(caplog):
    assert pearson(["1", "2", "3"], ["2", "4", "6"]) == {"pearson": pytest.approx(100.0)}
    assert spearman(["3", "2", "1"], ["1", "2", "3"]) == {"spearmanr": pytest.approx(-100.0)}
    assert pearson(["2", "2", "2"], ["1", "2", "3"]) == {"pearson": 0.0}  # constant: NaN -> 0
    with caplog.at_level(logging.WARNING):
        # "x" -> -1.0: pearson of refs (1,2,3) and preds (-1,2,3)
        value = pearson(["x", "2", "3"], ["1", "2", "3"])["pearson"]
    assert value == pytest.approx(100 * stats.pearsonr([1, 2, 3], [-1, 2, 3])[0])
    assert "1 of 3 predictions are not numbers" in caplog.text


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  U.S.A.!") == "usa"
    assert normalize_answer("An apple, a day") == "apple day"
    assert squad_em_f1("the Eiffel tower", "Eiffel Tower") == (1.0, 1.0)
    em, f1 = squad_em_f1("tower in Paris", "Eiffel Tower")  # 1 common; P=1/3, R=1/2 -> F1=0.4
    assert em == 0.0 and f1 == pytest.approx(0.4)
    assert squad_em_f1("", "") == (1.0, 0.0)  # the original's edge case
    assert squad(["a b", "c"], ["a b", "d"]) == {"em": 50.0, "f1": 50.0}
    scores = squad_all_answers(["Shakespeare", "x"], [["William Shakespeare", "Shakespeare"], ["y"]])
    assert scores == {"em_all_answers": 50.0, "f1_all_answers": 50.0}


def test_multirc_em_by_question():
    preds, refs, groups = ["1", "0", "1", "1", "0"], ["1", "0", "0", "1", "0"], [1, 1, 2, 3, 3]
    assert multirc_exact_match(preds, refs, groups) == {"em": pytest.approx(200 / 3)}
    result = compute_task_metrics("superglue-multirc", preds, refs, group_ids=groups)
    assert result == {"f1": pytest.approx(80.0), "em": pytest.approx(200 / 3), "invalid_predictions": 0}
    assert "em" not in compute_task_metrics("superglue-multirc", preds, refs)


def test_random_cross_checks_against_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 60))
        refs = [str(v) for v in rng.integers(0, 2, n)]
        preds = [str(v) for v in rng.integers(0, 3, n)]  # "2" = invalid for binary tasks
        assert accuracy(preds, refs)["accuracy"] == pytest.approx(100 * accuracy_score(refs, preds))
        forced = [p if p in "01" else ("0" if r == "1" else "1") for p, r in zip(preds, refs, strict=True)]
        expected = 100 * f1_score([int(r) for r in refs], [int(p) for p in forced], zero_division=0)
        assert binary_f1(preds, refs)["f1"] == pytest.approx(expected)
        expected = 100 * matthews_corrcoef(refs, preds)
        assert matthews_correlation(preds, refs)["matthews_correlation"] == pytest.approx(expected)
        refs3 = [str(v) for v in rng.integers(0, 3, n)]
        preds3 = [str(v) for v in rng.integers(0, 4, n)]  # "3" = invalid
        expected = 100 * f1_score(refs3, preds3, labels=["0", "1", "2"], average="macro", zero_division=0)
        assert macro_f1_three_classes(preds3, refs3)["f1_multiclass"] == pytest.approx(expected)
        x, y = rng.uniform(0, 5, n).round(1), rng.uniform(0, 5, n).round(1)
        sx, sy = [str(v) for v in x], [str(v) for v in y]
        assert pearson(sx, sy)["pearson"] == pytest.approx(100 * stats.pearsonr(y, x)[0])
        assert spearman(sx, sy)["spearmanr"] == pytest.approx(100 * stats.spearmanr(y, x)[0])


def test_compute_task_metrics_keys_and_invalid_counts():
    assert compute_task_metrics("mrpc", ["1", "0", "x", "1"], ["1", "1", "0", "0"]) == {
        "f1": pytest.approx(40.0), "accuracy": 25.0, "invalid_predictions": 1,
    }  # fmt: skip
    assert list(compute_task_metrics("superglue-cb", ["0"], ["0"])) == ["f1_multiclass", "accuracy",
                                                                        "invalid_predictions"]  # fmt: skip
    stsb = compute_task_metrics("stsb", ["1.0", "2", "x", "4"], ["1.0", "2.2", "3.0", "4.6"])
    assert list(stsb) == ["pearson", "spearmanr", "invalid_predictions"] and stsb["invalid_predictions"] == 1
    qa = compute_task_metrics("nq", ["the U . S . A . "], ["U . S . A . "], answers=[["x", "U . S . A . "]])
    assert qa == {"em": 100.0, "f1": 100.0, "em_all_answers": 100.0, "f1_all_answers": 100.0}
    # why the loader stores answers punctuation-padded like the target: "U . S . A" != "USA"
    assert compute_task_metrics("nq", ["U . S . A . "], ["x"], answers=[["USA"]])["em_all_answers"] == 0.0
    assert compute_task_metrics("rte", ["0", "2", " 1"], ["0", "1", "1"])["invalid_predictions"] == 2
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        compute_task_metrics("rte", ["0", "1"], ["0"])


def test_unlabeled_references_skip_metrics(caplog):
    with caplog.at_level(logging.WARNING):
        assert compute_task_metrics("rte", ["0", "x"], ["", ""]) == {"invalid_predictions": 1}
        assert compute_task_metrics("nq", ["a"], [None]) == {}
    assert "metrics skipped" in caplog.text


def test_metric_keys_match_released_results(shared_dir):
    ignored = {"test_loss", "test_runtime", "test_samples_per_second", "test_steps_per_second"}
    checked = 0
    for path in sorted((shared_dir / "dept-checkpoints").glob("*/test_results.json")):
        task = path.parent.name
        released = set(json.loads(path.read_text())) - ignored
        refs = ["0.0", "1.0"] if task == "stsb" else (["a", "b"] if get_task(task).is_qa else ["0", "1"])
        ours = compute_task_metrics(task, ["0", "1"] if task != "stsb" else ["1.0", "0.0"], refs)
        assert {f"test_{k}" for k in ours} - {"test_invalid_predictions"} == released, task
        checked += 1
    assert checked == 17


def _preds_with_confusion(refs: list[str], tp: int, tn: int) -> list[str]:
    """Predictions (binary) with exactly tp true positives and tn true negatives; the rest wrong."""
    preds, left = [], {"1": tp, "0": tn}
    for r in refs:
        right = left[r] > 0
        left[r] -= right
        preds.append(r if right else ("0" if r == "1" else "1"))
    return preds


@pytest.mark.parametrize(
    "task", ["rte", "mrpc", "sst2", "superglue-cb", "superglue-wic", "superglue-wsc.fixed", "superglue-boolq",
             "qnli", "mnli"],
)  # fmt: skip
def test_released_numbers_are_reachable_on_our_test_split(shared_dir, task):
    """The released test accuracy is k/n for our test-split size n (and MRPC's F1 fits its confusion)."""
    released = json.loads((shared_dir / "dept-checkpoints" / task / "test_results.json").read_text())
    refs = load_task_splits(task, data_dir=shared_dir / "data-real", splits=("test",))["test"]["target"]
    refs = list(refs)
    n = len(refs)
    correct = round(released["test_accuracy"] * n / 100)
    assert math.isclose(released["test_accuracy"], 100 * correct / n, rel_tol=1e-12)
    if task == "mrpc":
        f1 = released["test_f1"] / 100
        tp = round(f1 * (n - correct) / (2 * (1 - f1)))
        preds = _preds_with_confusion(refs, tp, correct - tp)
        result = compute_task_metrics(task, preds, refs)
        assert result["accuracy"] == pytest.approx(released["test_accuracy"], abs=1e-9)
        assert result["f1"] == pytest.approx(released["test_f1"], abs=1e-9)


def test_decode_generations(t5_tokenizer):
    labels = t5_tokenizer(text_target=["1", "0"]).input_ids
    labels = np.array([labels[0] + [-100] * (4 - len(labels[0])), labels[1] + [-100] * (4 - len(labels[1]))])
    gen = np.array([[0] + t5_tokenizer("1").input_ids + [0], [0, *t5_tokenizer("2").input_ids, 0]])
    preds, refs = decode_generations(t5_tokenizer, (gen, None), labels)
    assert preds == ["1", "2"] and refs == ["1", "0"]


def test_every_task_scores():
    for task in TASKS.values():
        refs = ["a"] if task.is_qa else [task.labels_list[0]]
        assert task.metric_for_best_model in compute_task_metrics(task.name, refs, refs)


def test_split_metrics_score_each_split_and_return_predictions(t5_tokenizer):
    """One scorer per split: its own references, the predictions as text, every example kept."""
    refs = {
        "validation": SplitReferences(sources=["a", "b"], targets=["1", "0"]),
        "test": SplitReferences(sources=["c", "d", "e"], targets=["0", "0", "1"]),
    }
    classifier = TaskMetrics("rte", t5_tokenizer, refs, family=CLASSIFIER, labels_list=("0", "1"))
    logits = np.array([[0.0, 2.0], [1.0, 0.0], [3.0, 1.0]])  # argmax 1, 0, 0
    test = classifier.for_split("test")
    assert test.decode(logits, None) == ["1", "0", "0"]
    assert test(EvalPrediction(predictions=logits, label_ids=None)) == {"accuracy": pytest.approx(100 / 3), "invalid_predictions": 0}
    validation = classifier.for_split("validation")
    assert validation(EvalPrediction(predictions=logits[:2], label_ids=None))["accuracy"] == 100.0
    with pytest.raises(ValueError, match="validation: 3 predictions for 2 examples"):
        validation(EvalPrediction(predictions=logits, label_ids=None))
    # a generating family scores the decoded generations against the decoded labels
    labels = [t5_tokenizer(text_target=t).input_ids for t in ("1", "0")]
    labels = np.array([ids + [-100] * (4 - len(ids)) for ids in labels])
    generated = np.array([[0, *t5_tokenizer("0").input_ids]] * 2)
    seq2seq = TaskMetrics("rte", t5_tokenizer, refs).for_split("validation")
    assert seq2seq.decode(generated, labels) == ["0", "0"]
    assert seq2seq(EvalPrediction(predictions=generated, label_ids=labels))["accuracy"] == 50.0
