"""Dynamic padding and length-grouped batches through ``train.py`` and the Trainer's samplers."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer

import train
from data.preprocess import PaddingCollator
from peft.family import SEQ2SEQ
from train import TrainingArguments, main
from training.trainer import PromptTrainer

L = 56
WORDS = "the cat sat on a mat while dogs ran far away from every noisy town".split()


def _rte_row(i: int) -> dict:
    length = 1 + (i * 7) % 8  # source lengths vary a lot between rows
    return {
        "sentence1": " ".join(WORDS[:length]),
        "sentence2": WORDS[i % len(WORDS)],
        "label": i % 2,
        "idx": i,
    }


@pytest.fixture(scope="module")
def rte_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "rte").mkdir()
    for split, n in (("train", 8), ("validation", 12)):
        rows = [json.dumps(_rte_row(i + (100 if split == "validation" else 0))) for i in range(n)]
        (root / "rte" / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return root


def _argv(model_dir: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(out), "--max_seq_length", str(L), "--prefix_length", "4", "--r", "2",
        "--learning_rate", "0.3", "--added_embedding_lr", "1e-2", "--weight_decay", "0", "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4", "--eval_strategy", "no",
        "--save_strategy", "no", "--do_train", "--do_eval", "--do_predict", "--disable_tqdm", "True",
        "--report_to", "none", "--seed", "7", *extra,
    ]  # fmt: skip


def _read(path: Path):
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text().splitlines()


PARITY_RUNS = {  # family -> (backbone fixture, method flags, dynamic padding flags)
    "seq2seq": ("tiny_t5_dir", ("--scpp", "True", "--sub_dim_scpp", "8", "--codebook_size_scpp", "2"),
                ("--pad_to_multiple_of", "8")),
    "causal": ("tiny_llama_dir", ("--scpp", "True", "--sub_dim_scpp", "8", "--codebook_size_scpp", "2", "--scap",
                                  "True", "--sub_dim_scap", "8", "--codebook_size_scap", "2"), ()),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("family", list(PARITY_RUNS))
def test_dynamic_grouped_run_matches_fixed_padding(family, request, rte_dir, tmp_path, monkeypatch):
    """One batch = the whole training set, so length grouping only reorders rows within it: the run with
    --pad_to_max_length False --group_by_length must reproduce the fixed-padding run's numbers (T5:
    ACCEPT-SCPP, batches rounded up to a multiple of 8; decoder-only: ACCEPT, left-padded)."""
    fixture, method, padding = PARITY_RUNS[family]
    model_dir = request.getfixturevalue(fixture)
    lengths: list[int] = []

    class Recording(PaddingCollator):
        def __call__(self, features):
            batch = super().__call__(features)
            lengths.append(batch["input_ids"].shape[1])
            return batch

    monkeypatch.setattr(train, "PaddingCollator", Recording)
    fixed, dynamic = tmp_path / "fixed", tmp_path / "dynamic"
    assert main(_argv(model_dir, rte_dir, fixed, *method)) == 0
    assert set(lengths) == {L}
    lengths.clear()
    extra = ("--pad_to_max_length", "False", "--group_by_length", *padding)
    assert main(_argv(model_dir, rte_dir, dynamic, *method, *extra)) == 0
    assert max(lengths) < L and all(n % 8 == 0 for n in lengths if padding)
    a, b = _read(fixed / "all_results.json"), _read(dynamic / "all_results.json")
    for key in ("train_loss", "eval_loss", "test_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert b["eval_accuracy"] == a["eval_accuracy"]
    for name in ("predictions_eval.jsonl", "predictions_test.jsonl"):
        assert _read(dynamic / name) == _read(fixed / name)
    assert _read(dynamic / "run_config.json")["training_args"]["train_sampling_strategy"] == "group_by_length"


def test_length_grouped_training_batches_and_ordered_evaluation(tiny_t5_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    n = 256
    rows = {"input_ids": [[10 + i] * (2 + (i * 37) % 60) + [1] for i in range(n)]}  # row i starts with 10 + i
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    rows["labels"] = [[5, 1]] * n
    data = datasets.Dataset.from_dict(rows)

    def padded_tokens(strategy: str) -> tuple[int, list[int]]:
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                                 train_sampling_strategy=strategy, report_to="none", seed=0)  # fmt: skip
        trainer = PromptTrainer(model=torch.nn.Linear(1, 1), args=args, processing_class=tokenizer,
                                data_collator=PaddingCollator(tokenizer, SEQ2SEQ), family=SEQ2SEQ,
                                max_new_tokens=3, train_dataset=data, eval_dataset=data)  # fmt: skip
        trainer._signature_columns = ["input_ids", "attention_mask", "labels"]
        total = sum(batch["input_ids"].numel() for batch in trainer.get_train_dataloader())
        order = [int(ids[0]) - 10 for batch in trainer.get_eval_dataloader() for ids in batch["input_ids"]]
        return total, order

    random_total, random_order = padded_tokens("random")
    grouped_total, grouped_order = padded_tokens("group_by_length")
    real = sum(len(ids) for ids in rows["input_ids"])
    assert grouped_total - real < 0.25 * (random_total - real)  # grouping removes most padding
    # evaluation keeps dataset order (scores and predictions files pair rows by position)
    assert grouped_order == random_order == list(range(n))


def test_dynamic_padding_flags_are_validated(tiny_t5_dir, rte_dir, tmp_path, capsys):
    assert main(_argv(tiny_t5_dir, rte_dir, tmp_path / "b", "--pad_to_multiple_of", "5")) == 2
    assert f"--pad_to_multiple_of 5 must divide --max_seq_length {L}" in capsys.readouterr().err
