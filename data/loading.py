"""Loading, splitting, templating and few-shot sampling of a task (docs/fidelity.md#f-split, #f-kshot).

``load_task_splits`` returns a ``DatasetDict`` with the logical splits ``train``/``validation``/``test``
and the columns ``source``, ``target``, ``task`` plus ``label`` (classification: int, STS-B: float;
-1 for unlabeled rows), ``answers`` (QA: every gold answer, punctuation-padded like the target) and
``group_id`` (MultiRC question id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch

from data.labels import check_rows, real_answers
from data.tasks import LARGE_HOLDOUT, LOGICAL_SPLITS, SCITAIL_LABELS, SPLIT_SEED, TaskSpec, get_task
from metrics.postprocess import mark_wsc_spans, pad_punctuation, remove_markup, stsb_target

logger = logging.getLogger(__name__)

LOCAL_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet")
_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
UNLABELED = -1


# ----------------------------------------------------------------------------------------------
# raw HF splits


def local_split_path(data_dir: str | Path, task_name: str, hf_split: str) -> Path:
    """The file of ``hf_split`` under ``data_dir/<task_name>/``; raises FileNotFoundError naming it."""
    base = Path(data_dir) / task_name / hf_split
    for ext in LOCAL_EXTENSIONS:
        candidate = base.with_name(base.name + ext)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Task {task_name!r}: missing local split {hf_split!r}; expected the file {base}.jsonl "
        f"(or {', '.join(LOCAL_EXTENSIONS[1:])}) in the HuggingFace schema"
    )


def _load_local(path: Path, fields: Sequence[str]) -> tuple[datasets.Dataset, list[dict] | None]:
    """Read a local split; an empty, non-UTF-8 or malformed file raises ValueError naming file and line.

    Returns the dataset and, for a .jsonl file, ``fields`` of every row as the file spells them (the
    dataset's columns are typed by Arrow, which may turn a valid answer "1859" into the number 1859 when
    another row holds numbers, so rows are judged from the file).
    """
    raw_rows = check_text_file(path, fields)
    try:
        dataset = datasets.load_dataset(_BUILDERS[path.suffix], data_files=str(path), split="train")
    except Exception as exc:  # the builders raise many types (ArrowInvalid, DatasetGenerationError, ...)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} cannot be read as {path.suffix[1:]} ({detail})") from exc
    return dataset, raw_rows


def check_text_file(path: Path, fields: Sequence[str] = ()) -> list[dict] | None:
    """A .jsonl/.json/.csv split must be non-empty UTF-8; every .jsonl line must be one JSON object.

    Returns ``fields`` of each .jsonl row (blank lines skipped, as the loader skips them), else None.
    """
    if path.suffix == ".parquet":
        return None
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; it needs at least one row")
    kept: list[dict] = []
    with path.open("rb") as handle:
        rows = 0
        for number, raw_line in enumerate(handle, 1):
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(
                    f"{path} line {number}: not UTF-8 ({exc.reason} at byte {exc.start}); save the file as UTF-8"
                ) from exc
            if path.suffix != ".jsonl" or not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno})"
                ) from exc
            if not isinstance(row, dict):
                raise ValueError(
                    f"{path} line {number}: a row must be a JSON object, got {type(row).__name__}"
                )
            rows += 1
            kept.append({name: row.get(name) for name in fields if name in row})
    if path.suffix != ".jsonl":
        return None
    if rows == 0:
        raise ValueError(f"{path} holds no rows; it needs at least one")
    return kept


def _load_hub(task: TaskSpec, hf_split: str) -> datasets.Dataset:
    """One split from the hub (namespaced, script-free ids; parquet-conversion branch as a fallback)."""
    try:
        return datasets.load_dataset(task.hub_id, task.hub_config, split=hf_split)
    except RuntimeError as err:  # a repository that still ships a loading script
        if "script" not in str(err).lower():
            raise
        logger.warning("%s: %s; retrying the parquet conversion branch", task.hub_id, err)
        return datasets.load_dataset(
            task.hub_id, task.hub_config, split=hf_split, revision="refs/convert/parquet"
        )


def _load_raw(
    task: TaskSpec, hf_split: str, data_dir: str | Path | None
) -> tuple[datasets.Dataset, str, list[dict] | None]:
    """The raw split, a description of where it came from (for error messages) and, for a .jsonl file,
    the task's fields of every row as the file spells them (``_load_local``)."""
    if data_dir is None:
        return _load_hub(task, hf_split), f"{task.hub_id}:{task.hub_config}/{hf_split}", None
    path = local_split_path(data_dir, task.name, hf_split)
    dataset, raw_rows = _load_local(path, (*task.required_fields, task.label_field))
    return dataset, str(path), raw_rows


def _check_schema(task: TaskSpec, dataset: datasets.Dataset, origin: str) -> None:
    for name in task.required_fields:
        if name not in dataset.column_names:
            raise ValueError(
                f"Task {task.name!r}: field {name!r} is missing in {origin} (columns: {dataset.column_names})"
            )
    if task.label_field not in dataset.column_names:
        logger.warning("%s: no %r column in %s; rows are unlabeled", task.name, task.label_field, origin)


# ----------------------------------------------------------------------------------------------
# split rule (docs/fidelity.md#f-split)


def split_permutation(n: int) -> list[int]:
    """``torch.randperm(n)`` with a CPU generator seeded with 42 (the original's split permutation)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()


def _first(indices: list[int], n_obs: int | None, what: str) -> list[int]:
    if n_obs is None:
        return indices
    if n_obs > len(indices):
        logger.warning("%s: requested %d samples but only %d exist; using all", what, n_obs, len(indices))
    return indices[:n_obs]


def split_indices(
    rule: str, logical_split: str, n: int, n_obs: int | None, split_validation_test: bool = True
):
    """Row indices of the HF split (size ``n``) that form ``logical_split``, in order; None = all rows.

    small: train = all; validation/test = first/second half of the permutation of HF validation.
    large: train = permutation[1000:], validation = permutation[:1000] (of HF train); test = all.
    Where all rows are kept, ``n_obs`` takes ``permutation[:n_obs]``; otherwise the first ``n_obs``.
    """
    what = f"{logical_split} split"
    if split_validation_test and rule == "small" and logical_split != "train":
        perm = split_permutation(n)
        half = perm[: n // 2] if logical_split == "validation" else perm[n // 2 :]
        return _first(half, n_obs, what)
    if split_validation_test and rule == "large" and logical_split != "test":
        if n <= LARGE_HOLDOUT:
            logger.warning("%s: only %d rows; %d are held out for validation", what, n, LARGE_HOLDOUT)
        perm = split_permutation(n)
        part = perm[LARGE_HOLDOUT:] if logical_split == "train" else perm[:LARGE_HOLDOUT]
        return _first(part, n_obs, what)
    if n_obs is None:
        return None
    return _first(split_permutation(n), n_obs, what)


def hf_split_for(task: TaskSpec, logical_split: str, split_validation_test: bool = True) -> str:
    """HF split a logical split is cut from (large rule: validation comes from HF train)."""
    if split_validation_test and task.split_rule == "large" and logical_split == "validation":
        return task.split_map["train"]
    return task.split_map[logical_split]


# ----------------------------------------------------------------------------------------------
# templates and targets (docs/fidelity.md#f-template, #f-labels)


def _field_texts(task: TaskSpec, example: dict) -> list[str]:
    if task.text_transform == "wsc_spans":
        marked = mark_wsc_spans(
            example["text"],
            example["span1_text"],
            example["span1_index"],
            example["span2_text"],
            example["span2_index"],
        )
        return [marked]
    texts = [example[f] for _, f in task.fields]
    if task.text_transform == "remove_markup":
        return [remove_markup(t) for t in texts]
    if task.text_transform == "pad_punctuation":
        return [pad_punctuation(t) for t in texts]
    return texts


def build_source(task: TaskSpec, example: dict, add_prefix: bool = False) -> str:
    """``" ".join([name?, prefix1, text1, prefix2, text2, ...])`` exactly as the original."""
    pieces = [task.name] if add_prefix else []
    for (prefix, _), text in zip(task.fields, _field_texts(task, example), strict=True):
        pieces += [prefix, text]
    return " ".join(pieces)


def build_target(task: TaskSpec, example: dict) -> tuple[str, int | float | None]:
    """``(target string, numeric label)``; ``("", None)`` when the row has no gold label."""
    value = example.get(task.label_field)
    rule = task.label_rule
    if rule == "qa":
        answers = real_answers(value or [])
        return (pad_punctuation(answers[0]), None) if answers else ("", None)
    if rule == "scitail":
        target = SCITAIL_LABELS.get(value)
        return (target, int(target)) if target is not None else ("", None)
    if value is None or value == "" or value == UNLABELED:
        return "", None
    if rule == "stsb":
        return stsb_target(float(value)), float(value)
    label = int(value) - 1 if rule == "winogrande" else int(value)
    return str(label), label


def _format_example(example: dict, task: TaskSpec, add_prefix: bool) -> dict:
    target, label = build_target(task, example)
    row = {"source": build_source(task, example, add_prefix), "target": target, "task": task.name}
    if task.is_qa:
        row["answers"] = [pad_punctuation(a) for a in real_answers(example.get(task.label_field) or [])]
    else:
        row["label"] = UNLABELED if label is None else label
    if task.name == "superglue-multirc":
        row["group_id"] = int(example["idx"]["question"])
    return row


def _output_features(task: TaskSpec) -> datasets.Features:
    features = {
        "source": datasets.Value("string"),
        "target": datasets.Value("string"),
        "task": datasets.Value("string"),
    }
    if task.is_qa:
        features["answers"] = datasets.List(datasets.Value("string"))
    else:
        features["label"] = datasets.Value("float64" if task.is_regression else "int64")
    if task.name == "superglue-multirc":
        features["group_id"] = datasets.Value("int64")
    return datasets.Features(features)


def format_dataset(
    task: TaskSpec, dataset: datasets.Dataset, add_prefix: bool = False, num_proc: int | None = None
):
    """Map raw rows to ``source``/``target``/``task`` (+ ``label``/``answers``/``group_id``); cached map."""
    return dataset.map(
        _format_example,
        fn_kwargs={"task": task, "add_prefix": add_prefix},
        remove_columns=dataset.column_names,
        features=_output_features(task),
        num_proc=num_proc if num_proc and len(dataset) >= 2 * num_proc else None,
        desc=f"Formatting {task.name}",
    )


# ----------------------------------------------------------------------------------------------
# few-shot sampling (docs/fidelity.md#f-kshot)


def _kshot_class(task: TaskSpec, target: str) -> str:
    if task.is_regression:
        return "0" if float(target) <= 2.5 else "1"
    return target


def sample_k_shot(task: TaskSpec, train: datasets.Dataset, k: int, seed: int) -> datasets.Dataset:
    """DePT's k-shot sample: shuffle with ``seed``, take up to ``k // n_classes`` rows per class.

    Rows are walked in shuffled order until ``k`` are accepted; a row is accepted if its class is
    below quota or only one slot is left (that slot may go to any class). Fresh counters per call
    (the original mutated a module-level dict, so a second call in one process sampled nothing).
    """
    if task.k_shot_classes is None:
        raise ValueError(f"--k_shot_example is not defined for task {task.name!r} (no class counts)")
    if k <= 0:
        raise ValueError(f"--k_shot_example must be positive, got {k}")
    counts = {str(c): 0 for c in range(task.k_shot_classes)}
    per_class = k // task.k_shot_classes
    shuffled = train.shuffle(seed=seed)
    chosen: list[int] = []
    for i, target in enumerate(shuffled["target"]):
        if len(chosen) == k:
            break
        if target == "":
            continue
        cls = _kshot_class(task, target)
        if cls in counts and (counts[cls] < per_class or len(chosen) == k - 1):
            counts[cls] += 1
            chosen.append(i)
    if len(chosen) < k:
        logger.warning(
            "%s: only %d of %d k-shot examples found (counts %s)", task.name, len(chosen), k, counts
        )
    return shuffled.select(chosen)


# ----------------------------------------------------------------------------------------------
# public entry point


def load_task_splits(
    task_name: str,
    data_dir: str | Path | None = None,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    max_predict_samples: int | None = None,
    k_shot_example: int | None = None,
    add_prefix: bool = False,
    split_validation_test: bool = True,
    splits: Sequence[str] = LOGICAL_SPLITS,
    num_proc: int | None = None,
) -> datasets.DatasetDict:
    """Load, split, format and (optionally) few-shot-sample a task.

    Args:
        data_dir: ``None`` = the hub; else ``data_dir/<task>/<hf_split>.{jsonl,json,csv,parquet}``.
        seed: the training seed, used only by the k-shot shuffle (the split permutation is always 42).
        max_*_samples: ``n_obs`` of the train/validation/test logical split (docs/fidelity.md#f-split).
        splits: which logical splits to build (only their HF files are read).
    """
    task = get_task(task_name)
    unknown = set(splits) - set(LOGICAL_SPLITS)
    if unknown:
        raise ValueError(f"Unknown split(s) {sorted(unknown)}; valid: {LOGICAL_SPLITS}")
    n_obs = {"train": max_train_samples, "validation": max_eval_samples, "test": max_predict_samples}
    raw_cache: dict[str, tuple[datasets.Dataset, str, list[dict] | None]] = {}
    out = {}
    for logical in splits:
        hf_split = hf_split_for(task, logical, split_validation_test)
        if hf_split not in raw_cache:
            raw, origin, file_rows = _load_raw(task, hf_split, data_dir)
            _check_schema(task, raw, origin)
            raw_cache[hf_split] = (raw, origin, file_rows)
        raw, origin, file_rows = raw_cache[hf_split]
        indices = split_indices(task.split_rule, logical, len(raw), n_obs[logical], split_validation_test)
        selected = raw if indices is None else raw.select(indices)
        if len(selected) == 0:
            raise ValueError(_empty_split_message(task, logical, origin, len(raw), split_validation_test))
        names = [n for n in (*task.required_fields, task.label_field) if n in selected.column_names]
        rows = range(len(raw)) if indices is None else indices
        if file_rows is not None:
            columns = {name: [file_rows[row].get(name) for row in rows] for name in names}
        else:
            columns = {name: list(selected[name]) for name in names}
        unlabeled = check_rows(task, columns, rows, origin, logical)
        if unlabeled:
            logger.warning(
                "%s/%s: %d of %d rows are unlabeled; they get predictions but are left out of the scores",
                task.name, logical, unlabeled, len(selected),
            )  # fmt: skip
        formatted = format_dataset(task, selected, add_prefix, num_proc)
        if logical == "train" and task.max_train_rows is not None and len(formatted) > task.max_train_rows:
            formatted = formatted.select(range(task.max_train_rows))
        if logical == "train" and k_shot_example is not None:
            formatted = sample_k_shot(task, formatted, k_shot_example, seed)
        out[logical] = formatted
    return datasets.DatasetDict(out)


def _empty_split_message(
    task: TaskSpec, logical: str, origin: str, n_rows: int, split_validation_test: bool
) -> str:
    """Why ``logical`` came out empty, and the fix."""
    message = f"Task {task.name!r}: the {logical} split is empty ({origin} has {n_rows} rows)"
    if split_validation_test and task.split_rule == "large" and logical == "train":
        return (
            f"{message}: DePT's split of this large task holds out {LARGE_HOLDOUT} rows for validation and "
            f"trains on the rest; give more than {LARGE_HOLDOUT} rows or pass --split_validation_test False"
        )
    return f"{message}; add rows to the file"
