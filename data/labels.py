"""Row checks of a raw split before it is formatted: every field present, every label valid for the task.

Rules (one per ``TaskSpec.label_rule``): ``int`` labels are whole numbers in ``0..len(labels_list)-1``;
``stsb`` a number in [0, 5]; ``winogrande`` the answer "1" or "2"; ``scitail`` "entailment" or "neutral";
``qa`` a list of answer strings with at least one that is not blank (a blank answer is no answer). Every
number must be finite. A missing label (null, -1, "" or no non-blank answer) marks an unlabeled
row: never allowed in train (it would be trained as an empty target), allowed in validation/test
(those rows are left out of the scores), except where the metric groups rows (MultiRC per-question exact
match), where a split must be labeled entirely or not at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from data.tasks import SCITAIL_LABELS, TaskSpec

STSB_RANGE = (0.0, 5.0)
WINOGRANDE_ANSWERS = ("1", "2")
GROUPED_METRIC_TASKS = ("superglue-multirc",)


def is_missing_label(value: Any) -> bool:
    """True for the spellings of "no gold label" in the HF datasets (null, NaN, -1, "", no QA answers)."""
    if value is None or (isinstance(value, str) and value == ""):
        return True
    if isinstance(value, (list, tuple)):
        return not real_answers(value) and all(isinstance(a, str) for a in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value != value or value == -1  # NaN: an empty CSV cell


def real_answers(answers: Sequence[Any]) -> list[str]:
    """The answers of a QA row that are answers: strings that are not blank."""
    return [a for a in answers if isinstance(a, str) and a.strip()]


def labeled_count(task: TaskSpec, dataset: Any) -> int:
    """Rows of a formatted split (``data.loading.format_dataset``) that carry a gold label."""
    if task.is_qa:
        return sum(1 for answers in dataset["answers"] if answers)
    return sum(1 for target in dataset["target"] if target != "")


def label_problem(task: TaskSpec, value: Any) -> str | None:
    """Why ``value`` is not a valid label of ``task`` (None when valid); missing labels are not judged."""
    rule = task.label_rule
    if rule == "qa":
        if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) for a in value):
            return "answers must be a list of strings"
        return None
    if rule == "scitail":
        return None if value in SCITAIL_LABELS else f"must be one of {sorted(SCITAIL_LABELS)}"
    if rule == "winogrande":
        return None if str(value) in WINOGRANDE_ANSWERS else 'must be "1" or "2"'
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    if rule == "stsb":
        low, high = STSB_RANGE
        return None if low <= value <= high else f"must be in [{low:g}, {high:g}]"
    classes = len(task.labels_list or ())
    if value != int(value):
        return f"must be a whole class index 0..{classes - 1}"
    return None if 0 <= value < classes else f"is out of range: {task.name} has classes 0..{classes - 1}"


def check_rows(
    task: TaskSpec, columns: dict[str, Sequence[Any]], rows: Sequence[int], origin: str, split: str
) -> int:
    """Raise ValueError naming ``origin``, the row and the value at the first bad field or label.

    Args:
        columns: field name -> values of the selected rows (the task's fields and its label field).
        rows: the file row (0-based) of each selected value, for the messages (reported 1-based).
        split: "train" refuses unlabeled rows; "validation"/"test" allow them (see the module docstring).
    Returns: the number of unlabeled rows.
    """
    for name in task.required_fields:
        for row, value in zip(rows, columns.get(name, ()), strict=False):
            if value is None:
                raise ValueError(
                    f"{origin} row {row + 1}: field {name!r} is null; every {task.name} row needs it (fix or "
                    "remove the row)"
                )
    labels = columns.get(task.label_field)
    if labels is None:
        if split == "train":
            raise ValueError(
                f"{origin}: no {task.label_field!r} column; training rows need a label (add the column)"
            )
        return len(rows)
    unlabeled = 0
    for row, value in zip(rows, labels, strict=True):
        if is_missing_label(value):
            if split == "train":
                raise ValueError(
                    f"{origin} row {row + 1}: no {task.label_field!r} ({value!r}); training rows need a label "
                    "(fix or remove the row)"
                )
            unlabeled += 1
            continue
        problem = label_problem(task, value)
        if problem:
            raise ValueError(f"{origin} row {row + 1}: {task.label_field} {value!r} {problem}")
    if 0 < unlabeled < len(rows) and task.name in GROUPED_METRIC_TASKS:
        raise ValueError(
            f"{origin}: {unlabeled} of {len(rows)} {split} rows have no label; {task.name}'s metric groups "
            "rows, so a split must be labeled entirely or not at all"
        )
    return unlabeled
