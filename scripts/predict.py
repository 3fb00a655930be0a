"""Batch prediction with many task adapters on one frozen model: requests.jsonl -> predictions.jsonl.

Each request line is a JSON object with ``id``, ``task`` and the task's fields in the HuggingFace
schema (``sentence1``/``sentence2`` for rte, ...; the label field is optional). The task's template
(``data/tasks.py``) and tokenisation (``data/preprocess.py``) are those of training; rows of all
tasks are sorted by prompt-plus-input length and cut into batches of similar length
(``peft/serving.py``), each row with its own task's adapter (``adapter_names``, exact: README
"Serving many adapters"). Bad lines (invalid JSON, unknown task,
missing field) are reported with their line numbers and skipped.

Output lines keep the request order: ``{"id", "task", "prediction"}`` plus ``"target"`` and
``"correct"`` when the request had a label (``correct``: the label string for classification, exact
match with any gold answer for QA; STS-B gives only the target). The file is written atomically.

Usage::

    python scripts/predict.py --model_name_or_path t5-base --adapter rte=outputs/rte \\
        --adapter mrpc=outputs/mrpc --input requests.jsonl --output predictions.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from data.labels import is_missing_label, label_problem  # noqa: E402
from data.loading import build_source, build_target  # noqa: E402
from data.preprocess import PaddingCollator, max_target_length, tokenize_splits  # noqa: E402
from data.tasks import TASKS, TaskSpec  # noqa: E402
from metrics.metrics import compute_task_metrics, squad_em_f1  # noqa: E402
from metrics.postprocess import pad_punctuation, stsb_target  # noqa: E402
from peft import PeftModel, detect_family  # noqa: E402
from peft.config import CONFIG_NAME  # noqa: E402
from peft.family import Family, new_tokens  # noqa: E402
from peft.serving import form_batches, request_lengths  # noqa: E402
from training.modeling import hidden_size, load_backbone, load_model_config, load_tokenizer  # noqa: E402
from training.outputs import atomic_write_text  # noqa: E402
from training.planner.checkpoints import check_saved_adapter  # noqa: E402
from training.planner.errors import ConfigError  # noqa: E402
from training.planner.schema import check_device, check_values  # noqa: E402

logger = logging.getLogger("predict")

DEFAULT_MAX_SEQ_LENGTH = 256


@dataclass
class Request:
    """One valid request line, formatted with its task's template."""

    line: int
    id: Any
    task: TaskSpec
    source: str
    target: str
    label: int | float | None
    answers: list[str] = field(default_factory=list)
    features: dict[str, list[int]] = field(default_factory=dict)
    prediction: str = ""


def parse_adapters(specs: list[str], parser: argparse.ArgumentParser) -> dict[str, Path]:
    """``["rte=DIR", ...]`` -> task -> folder; unknown tasks and folders without a config fail here."""
    adapters: dict[str, Path] = {}
    for spec in specs:
        task, sep, folder = spec.partition("=")
        if not sep or not task or not folder:
            parser.error(f"--adapter {spec!r}: write TASK=DIR, e.g. --adapter rte=outputs/rte")
        if task not in TASKS:
            parser.error(f"--adapter {spec!r}: unknown task {task!r}; valid: {', '.join(TASKS)}")
        if task in adapters:
            parser.error(f"--adapter: task {task!r} is given twice")
        if not (Path(folder) / CONFIG_NAME).is_file():
            parser.error(f"--adapter {spec!r}: no {CONFIG_NAME} in {folder}; pass a saved adapter folder")
        adapters[task] = Path(folder)
    return adapters


def read_requests(path: Path, tasks: dict[str, Path]) -> tuple[list[Request], list[tuple[int, str]]]:
    """(valid requests in file order, [(line number, reason)] for skipped lines)."""
    requests, bad = [], []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            bad.append((number, f"invalid JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            bad.append((number, "not a JSON object"))
            continue
        problem = _row_problem(row, tasks)
        if problem:
            bad.append((number, problem))
            continue
        task = TASKS[row["task"]]
        try:
            source = build_source(task, row)
            target, label = build_target(task, row)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            bad.append((number, f"cannot apply the {task.name} template ({type(exc).__name__}: {exc})"))
            continue
        answers = [pad_punctuation(a) for a in row.get(task.label_field) or []] if task.is_qa else []
        requests.append(Request(number, row["id"], task, source, target, label, answers))
    return requests, bad


def _row_problem(row: dict[str, Any], tasks: dict[str, Path]) -> str | None:
    for key in ("id", "task"):
        if key not in row:
            return f"missing field {key!r}"
    if row["task"] not in tasks:
        return f"unknown task {row['task']!r} (adapters given: {', '.join(tasks)})"
    task = TASKS[row["task"]]
    missing = [name for name in task.required_fields if name not in row]
    if missing:
        return f"missing field(s) {missing} for {row['task']}"
    value = row.get(task.label_field)
    problem = None if is_missing_label(value) else label_problem(task, value)
    return f"{task.label_field} {value!r} {problem}" if problem else None


def adapter_name(task: str) -> str:
    """Adapter names cannot hold dots (superglue-wsc.fixed)."""
    return task.replace(".", "_")


def load_model(model_path: str, adapters: dict[str, Path], family: Family, device: str) -> PeftModel:
    """The frozen backbone with every task's adapter loaded under its task name."""
    tasks = list(adapters)
    num_labels = TASKS[tasks[0]].num_labels if family.classification_head else None
    backbone = load_backbone(model_path, family, num_labels=num_labels)
    model = PeftModel.from_pretrained(backbone, adapters[tasks[0]], adapter_name=adapter_name(tasks[0]))
    for task in tasks[1:]:
        model.load_adapter(adapters[task], adapter_name(task))
    return model.to(device).eval()


def tokenize_requests(requests: list[Request], tokenizer: Any, family: Family, lengths: dict[str, int],
                      target_lengths: dict[str, int]) -> None:  # fmt: skip
    """Fill ``features`` of every request with the training tokenisation of its task (unpadded)."""
    by_task: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        by_task[request.task.name].append(request)
    for task, rows in by_task.items():
        columns = {"source": [r.source for r in rows], "target": [r.target for r in rows]}
        if family.classification_head:
            columns["label"] = [-1 if r.label is None else r.label for r in rows]
        split = datasets.DatasetDict({"test": datasets.Dataset.from_dict(columns)})
        tokenized = tokenize_splits(split, tokenizer, family, lengths[task], target_lengths[task],
                                    pad_to_max_length=False)  # fmt: skip
        for request, features in zip(rows, tokenized["test"], strict=True):
            request.features = {k: v for k, v in features.items() if k != "labels"}


def predict_batch(model: PeftModel, batch: list[Request], collator: PaddingCollator, tokenizer: Any, family: Family,
                  target_lengths: dict[str, int], device: str) -> list[str]:  # fmt: skip
    """Predictions of one mixed batch (greedy generation; the arg-max class for classifiers)."""
    inputs = {k: v.to(device) for k, v in collator([r.features for r in batch]).items()}
    names = [adapter_name(r.task.name) for r in batch]
    if not family.generates:
        logits = model(**inputs, adapter_names=names).logits
        return [stsb_target(float(row[0])) if r.task.is_regression else str(int(row.argmax()))
                for r, row in zip(batch, logits, strict=True)]  # fmt: skip
    new = [target_lengths[r.task.name] for r in batch]
    out = model.generate(**inputs, adapter_names=names, max_new_tokens=max(new), do_sample=False)
    generated = new_tokens(out, inputs["input_ids"], family)
    tokens = [row[:k].tolist() for row, k in zip(generated, new, strict=True)]
    return [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def correctness(request: Request) -> bool | None:
    """Whether the prediction is right, when the request had a label (None for STS-B and unlabelled)."""
    if request.task.is_qa:
        gold = request.answers or ([request.target] if request.target else [])
        return any(squad_em_f1(request.prediction, g)[0] == 100.0 for g in gold) if gold else None
    if request.target == "" or request.task.is_regression:
        return None
    return request.prediction == request.target


def output_row(request: Request) -> dict[str, Any]:
    """The output line of a request: id, task, prediction, and target / correct when it had a label."""
    row = {"id": request.id, "task": request.task.name, "prediction": request.prediction}
    if request.target != "":
        row["target"] = request.target
        correct = correctness(request)
        if correct is not None:
            row["correct"] = correct
    return row


def summary_lines(requests: list[Request], bad: list[tuple[int, str]], tasks: list[str]) -> list[str]:
    """A per-task table: rows, labelled rows, the task's metrics on the labelled rows."""
    lines = [f"{'task':<22} {'rows':>6} {'labelled':>9}  metrics"]
    for task in tasks:
        rows = [r for r in requests if r.task.name == task]
        labelled = [r for r in rows if r.target != ""]
        scores = ""
        if labelled:
            answers = [r.answers for r in labelled] if TASKS[task].is_qa else None
            metrics = compute_task_metrics(task, [r.prediction for r in labelled], [r.target for r in labelled],
                                           answers=answers)  # fmt: skip
            scores = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "invalid_predictions")
        lines.append(f"{task:<22} {len(rows):>6} {len(labelled):>9}  {scores}")
    lines.append(f"skipped lines: {len(bad)}")
    return lines


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors as one line with exit status 2 (``fail``)."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name_or_path", required=True, help="the frozen backbone (folder or hub id)")
    parser.add_argument("--adapter", action="append", required=True, metavar="TASK=DIR",
                        help="a task and its saved adapter folder; repeat for every task")  # fmt: skip
    parser.add_argument("--input", required=True, type=Path, help="requests, one JSON object per line")
    parser.add_argument("--output", required=True, type=Path, help="predictions, one JSON object per line")
    parser.add_argument("--batch_size", type=int, default=32, help="the most requests in one call")
    parser.add_argument("--max_seq_length", type=int, default=DEFAULT_MAX_SEQ_LENGTH,
                        help="input length for adapters without an added update (PT); others use their L")  # fmt: skip
    parser.add_argument("--tokenizer_name_or_path", default=None, help="default: --model_name_or_path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, checked by the flag schema train.py uses (numbers, paths) before anything loads."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_values(vars(args).items())
        check_device(args.device)
    except ConfigError as exc:
        fail(str(exc))
    args.adapters = parse_adapters(args.adapter, parser)
    if args.output.resolve() == args.input.resolve():
        fail("--output must differ from --input")
    return args


def fail(message: str) -> NoReturn:
    """End with one error line and exit status 2, as for any bad argument."""
    print(f"predict.py: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


def check_adapters(model_path: str, adapters: dict[str, Path]) -> Family:
    """The backbone's family, after every adapter folder passed train.py's saved-adapter checks (width,
    family, every tensor present and finite, nothing foreign), before any weights load."""
    config = load_model_config(model_path)
    family = detect_family(config)
    for task, folder in adapters.items():
        check_saved_adapter(folder, hidden_size(config), family, f"--adapter {task}={folder}", model_path)
    return family


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        requests, bad = read_requests(args.input, args.adapters)
    except UnicodeDecodeError as exc:
        fail(f"--input {args.input} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    for number, reason in bad:
        logger.warning("%s:%d: %s; skipped", args.input, number, reason)
    if not requests:
        fail(f"--input {args.input}: no valid request lines ({len(bad)} skipped)")
    datasets.disable_progress_bars()  # one progress bar: the prediction loop's
    transformers.logging.disable_progress_bar()
    try:  # no such model folder, an unreadable or broken adapter, an adapter of another model width
        family = check_adapters(args.model_name_or_path, args.adapters)
        tokenizer = load_tokenizer(args.tokenizer_name_or_path or args.model_name_or_path, family)
        model = load_model(args.model_name_or_path, args.adapters, family, args.device)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    configs = {task: model.peft_config[adapter_name(task)] for task in args.adapters}
    lengths = {task: c.max_length if c.update_needs_length else args.max_seq_length for task, c in configs.items()}
    target_lengths = {task: max_target_length(task, tokenizer) for task in args.adapters}
    tokenize_requests(requests, tokenizer, family, lengths, target_lengths)
    lengths_of = request_lengths(model, [len(r.features["input_ids"]) for r in requests],
                                 [adapter_name(r.task.name) for r in requests])  # fmt: skip
    batches = [[requests[i] for i in rows] for rows in form_batches(lengths_of, max_batch_size=args.batch_size)]
    with torch.no_grad(), model.materialized():
        for batch in tqdm(batches, desc="predicting", unit="batch"):
            # left-padded (decoder-only) rows fill L exactly; a shorter adapter drops the extra padding
            fixed = max(lengths[r.task.name] for r in batch) if family.padding_side == "left" else None
            collator = PaddingCollator(tokenizer, family, max_seq_length=fixed)
            predictions = predict_batch(model, batch, collator, tokenizer, family, target_lengths, args.device)
            for request, prediction in zip(batch, predictions, strict=True):
                request.prediction = prediction
    atomic_write_text(args.output, "".join(json.dumps(output_row(r), ensure_ascii=False) + "\n" for r in requests))
    print("\n".join(summary_lines(requests, bad, list(args.adapters))))
    per_task = Counter(r.task.name for r in requests)
    return {"predicted": len(requests), "skipped": [n for n, _ in bad], "per_task": per_task}


if __name__ == "__main__":
    main()
