"""Tokenisation (seq2seq / causal / classifier) and the padding collator; all 17 tasks end to end."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch

from data.loading import load_task_splits
from data.preprocess import CAUSAL_MARKER, IGNORE_INDEX, PaddingCollator, max_target_length, tokenize_splits
from data.tasks import PAPER_TASKS
from metrics.postprocess import stsb_target
from peft.family import CAUSAL, CLASSIFIER, FAMILIES, SEQ2SEQ

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def formatted(sources: list[str], targets: list[str], labels: list | None = None) -> datasets.DatasetDict:
    cols = {"source": sources, "target": targets, "task": ["rte"] * len(sources)}
    cols["label"] = labels if labels is not None else [int(t) if t else -1 for t in targets]
    split = datasets.Dataset.from_dict(cols)
    return datasets.DatasetDict({"train": split, "test": split})


def test_max_target_length(t5_tokenizer, shared_dir):
    assert max_target_length("rte", t5_tokenizer) == 3  # "0" -> ['▁', '0', '</s>']
    assert max_target_length("stsb", t5_tokenizer) == 3
    assert max_target_length("superglue-cb", t5_tokenizer) == 3
    assert max_target_length("nq", t5_tokenizer) == 20
    assert max_target_length("nq", t5_tokenizer, generation_max_length=32) == 32


def test_seq2seq_padded_layout(t5_tokenizer, shared_dir):
    splits = formatted(["sentence1: a b sentence2: c", "sentence1: word " * 40], ["0", "1"])
    out = tokenize_splits(splits, t5_tokenizer, SEQ2SEQ, max_seq_length=16, max_target_length=3)
    assert out["train"].column_names == ["input_ids", "attention_mask", "labels"]
    row0, row1 = out["train"][0], out["train"][1]
    n0 = len(t5_tokenizer(splits["train"][0]["source"]).input_ids)
    assert len(row0["input_ids"]) == 16 and row0["input_ids"][n0:] == [0] * (16 - n0)
    assert row0["input_ids"][n0 - 1] == t5_tokenizer.eos_token_id and sum(row0["attention_mask"]) == n0
    assert (
        row1["input_ids"][-1] == t5_tokenizer.eos_token_id and sum(row1["attention_mask"]) == 16
    )  # truncated
    assert row0["labels"] == t5_tokenizer("0").input_ids  # 3 ids, no padding needed
    assert row1["labels"] == t5_tokenizer("1").input_ids + [IGNORE_INDEX]


@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_unpadded_plus_collator_equals_padded(t5_tokenizer, shared_dir, family):
    """Dynamic padding is ready: unpadded ids + collator(L) == the original's fixed padding."""
    splits = load_task_splits("rte", data_dir=shared_dir / "data-real", max_train_samples=6, max_predict_samples=6,
                              splits=("train", "test"))  # fmt: skip
    padded = tokenize_splits(splits, t5_tokenizer, family, 64, 3, pad_to_max_length=True)
    raw = tokenize_splits(splits, t5_tokenizer, family, 64, 3, pad_to_max_length=False)
    for name in ("train", "test"):
        assert max(len(r) for r in raw[name]["input_ids"]) <= 64
        fixed = PaddingCollator(t5_tokenizer, family, max_seq_length=64)
        expected = {k: torch.tensor(padded[name][k]) for k in padded[name].column_names}
        got = fixed([raw[name][i] for i in range(len(raw[name]))])
        if family is SEQ2SEQ:  # labels are padded to the batch max (3 here) either way
            assert got["labels"].shape[1] <= 3
            got["labels"] = torch.nn.functional.pad(
                got["labels"], (0, 3 - got["labels"].shape[1]), value=-100
            )
        assert set(got) == set(expected)
        for key in expected:
            assert torch.equal(got[key], expected[key]), (name, key)


def test_causal_format(t5_tokenizer):
    length = 32  # L: the short example fits whole (also with the character-level offline tokenizer)
    source, target = "sentence1: a b sentence2: c", "1"
    splits = formatted([source, "sentence1: long " * 50], [target, "0"])
    out = tokenize_splits(splits, t5_tokenizer, CAUSAL, max_seq_length=length, max_target_length=3,
                          pad_to_max_length=False)  # fmt: skip
    src = t5_tokenizer(source, add_special_tokens=False).input_ids
    marker = t5_tokenizer(CAUSAL_MARKER, add_special_tokens=False).input_ids
    tgt = t5_tokenizer(target, add_special_tokens=False).input_ids
    eos = t5_tokenizer.eos_token_id
    train, test = out["train"][0], out["test"][0]
    assert train["input_ids"] == src + marker + tgt + [eos]
    assert train["labels"] == [IGNORE_INDEX] * len(src + marker) + tgt + [eos]
    assert test["input_ids"] == src + marker and test["labels"] == tgt
    assert t5_tokenizer.decode(test["input_ids"]).endswith("Label :")
    # overlong source: the source is cut, the marker and the answer stay, total = L
    long_train, long_test = out["train"][1], out["test"][1]
    zero = t5_tokenizer("0", add_special_tokens=False).input_ids
    assert len(long_train["input_ids"]) == length and long_train["input_ids"][-len(zero) - 1 :] == zero + [eos]
    assert long_train["input_ids"][-len(zero) - 1 - len(marker) : -len(zero) - 1] == marker
    assert len(long_test["input_ids"]) == length and long_test["input_ids"][-len(marker) :] == marker
    padded = tokenize_splits(splits, t5_tokenizer, CAUSAL, length, 3, pad_to_max_length=True)["train"][0]
    n = len(train["input_ids"])
    assert padded["input_ids"] == [0] * (length - n) + train["input_ids"]  # left padding
    assert padded["attention_mask"] == [0] * (length - n) + [1] * n
    assert padded["labels"] == [IGNORE_INDEX] * (length - n) + train["labels"]


class _BosTokenizer:
    """A word-level tokenizer that adds BOS (like Llama) and has no pad token."""

    bos_token_id, eos_token_id, pad_token_id = 5, 6, None

    def _ids(self, text: str) -> list[int]:
        return [10 + len(w) for w in text.split()]

    def __call__(self, text, add_special_tokens: bool = True):
        def one(t):
            return ([self.bos_token_id] if add_special_tokens else []) + self._ids(t)

        return SimpleNamespace(input_ids=[one(t) for t in text] if isinstance(text, list) else one(text))


def test_causal_bos_and_missing_pad():
    tok = _BosTokenizer()
    out = tokenize_splits(formatted(["aa b"], ["1"]), tok, CAUSAL, max_seq_length=10, max_target_length=3)
    marker = tok._ids(CAUSAL_MARKER)
    assert out["train"][0]["input_ids"] == [6] * 3 + [5, 12, 11] + marker + [11, 6]  # pad = eos (6)
    assert out["test"][0]["input_ids"] == [6] * 5 + [5, 12, 11] + marker
    assert out["test"][0]["labels"] == [IGNORE_INDEX] * 9 + [11]
    batch = PaddingCollator(tok, CAUSAL)(
        [{"input_ids": [1, 2], "attention_mask": [1, 1], "labels": [-100, 2]}]
    )
    assert batch["input_ids"].tolist() == [[1, 2]]


def test_classifier_labels(t5_tokenizer):
    out = tokenize_splits(formatted(["a", "b", "c"], ["0", "1", ""]), t5_tokenizer, CLASSIFIER, 8, 3)
    assert out["train"]["labels"] == [0, 1, IGNORE_INDEX]
    stsb = formatted(["a", "b"], ["3.8", "0.0"], labels=[3.8, 0.0])
    rows = tokenize_splits(stsb, t5_tokenizer, CLASSIFIER, 8, 3, pad_to_max_length=False)["train"]
    batch = PaddingCollator(t5_tokenizer, CLASSIFIER)([rows[0], rows[1]])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == pytest.approx([3.8, 0.0])
    qa = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"source": ["q"], "target": ["a"]})})
    with pytest.raises(ValueError, match="no 'label' column"):
        tokenize_splits(qa, t5_tokenizer, CLASSIFIER, 8, 3)


def test_collator_padding_rules(t5_tokenizer):
    rows = [
        {"input_ids": [7, 8, 1], "attention_mask": [1, 1, 1], "labels": [4, 1]},
        {"input_ids": [9, 1], "attention_mask": [1, 1], "labels": [5, 6, 7, 1]},
    ]
    batch = PaddingCollator(t5_tokenizer, SEQ2SEQ)(rows)
    assert batch["input_ids"].tolist() == [[7, 8, 1], [9, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[4, 1, -100, -100], [5, 6, 7, 1]]
    batch = PaddingCollator(t5_tokenizer, SEQ2SEQ, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 8) and batch["labels"].shape == (2, 8)
    batch = PaddingCollator(t5_tokenizer, SEQ2SEQ, max_seq_length=5)(rows)
    assert batch["input_ids"].tolist() == [[7, 8, 1, 0, 0], [9, 1, 0, 0, 0]] and batch["labels"].shape == (
        2,
        4,
    )
    batch = PaddingCollator(t5_tokenizer, CAUSAL)(rows)  # one length for all keys: the longest of any
    assert batch["input_ids"].tolist() == [[0, 7, 8, 1], [0, 0, 9, 1]]
    assert batch["labels"].tolist() == [[-100, -100, 4, 1], [5, 6, 7, 1]]
    batch = PaddingCollator(t5_tokenizer, CAUSAL, max_seq_length=6)(rows)
    assert batch["attention_mask"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]]
    assert batch["labels"].shape == (2, 6)
    scalar = PaddingCollator(t5_tokenizer, CLASSIFIER)(
        [{"input_ids": [3], "labels": 1}, {"input_ids": [3, 4], "labels": 0}]
    )
    assert scalar["labels"].dtype == torch.long and scalar["input_ids"].tolist() == [[3, 0], [3, 4]]
    with pytest.raises(ValueError, match="more than max_seq_length=2"):
        PaddingCollator(t5_tokenizer, SEQ2SEQ, max_seq_length=2)(rows)


def test_tokenisation_is_cached_and_parallel(t5_tokenizer, shared_dir):
    splits = load_task_splits(
        "mrpc", data_dir=shared_dir / "data-real", max_train_samples=40, splits=("train",)
    )
    first = tokenize_splits(splits, t5_tokenizer, SEQ2SEQ, 64, 3)
    again = tokenize_splits(splits, t5_tokenizer, SEQ2SEQ, 64, 3)
    assert first["train"].cache_files and first["train"].cache_files == again["train"].cache_files
    parallel = tokenize_splits(splits, t5_tokenizer, SEQ2SEQ, 64, 3, num_proc=2, overwrite_cache=True)
    assert parallel["train"]["input_ids"] == first["train"]["input_ids"]


@pytest.fixture(scope="module")
def all_tasks_dir(shared_dir, tmp_path_factory) -> Path:
    """Real data where it exists, the hand-written fixtures for the missing files."""
    root = tmp_path_factory.mktemp("data")
    for source in (shared_dir / "data-real", FIXTURES):
        for path in source.glob("*/*.jsonl"):
            dest = root / path.parent.name / path.name
            if not dest.exists():
                dest.parent.mkdir(exist_ok=True)
                shutil.copyfile(path, dest) if source == FIXTURES else dest.symlink_to(path)
    return root


@pytest.mark.parametrize("task_name", PAPER_TASKS)
def test_every_paper_task_loads_and_tokenises(all_tasks_dir, t5_tokenizer, task_name):
    qa = task_name in ("nq", "hotpotqa", "searchqa", "newsqa")
    # QA: the tiny train files are all held out for validation, which leaves train empty (an error)
    needed = ("validation", "test") if qa else ("train", "validation", "test")
    splits = load_task_splits(task_name, data_dir=all_tasks_dir, max_train_samples=6, max_eval_samples=6,
                              max_predict_samples=6, splits=needed)  # fmt: skip
    sizes = [len(splits[s]) for s in needed]
    assert all(sizes) and (qa or sizes[0] == 6), sizes
    length, tgt_len = 128, max_target_length(task_name, t5_tokenizer)
    assert tgt_len == (20 if qa else 3)
    out = tokenize_splits(splits, t5_tokenizer, SEQ2SEQ, length, tgt_len)
    for name in ("validation", "test"):
        for row, example in zip(out[name], splits[name], strict=True):
            assert len(row["input_ids"]) == length and len(row["labels"]) == tgt_len
            n = sum(row["attention_mask"])
            assert row["input_ids"][n - 1] == t5_tokenizer.eos_token_id and set(row["input_ids"][n:]) <= {0}
            expected = t5_tokenizer(example["target"], max_length=tgt_len, truncation=True).input_ids
            assert [t for t in row["labels"] if t != IGNORE_INDEX] == expected
            if not qa:
                assert example["target"] in t5_tokenizer.batch_decode([expected], skip_special_tokens=True)
                if task_name == "stsb":
                    assert stsb_target(example["label"]) == example["target"]
                else:
                    assert example["label"] == int(example["target"])
            else:
                assert example["answers"] and example["answers"][0] == example["target"]
