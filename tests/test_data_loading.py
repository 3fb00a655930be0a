"""Local loading, split rules, n_obs, k-shot and bad-input errors (docs/fidelity.md#f-split, #f-kshot)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch

import data.loading as loading
from data.loading import load_task_splits, sample_k_shot, split_indices, split_permutation
from data.tasks import get_task

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rte_rows(n: int, offset: int = 0, label=None) -> list[dict]:
    return [
        {"sentence1": f"s{i}", "sentence2": f"t{i}", "label": (i % 2) if label is None else label, "idx": i}
        for i in range(offset, offset + n)
    ]


@pytest.fixture
def synthetic_dir(tmp_path) -> Path:
    """rte (small rule): train 10, validation 277; sst2 (large rule): train 1200, validation 50."""
    write_jsonl(tmp_path / "rte" / "train.jsonl", rte_rows(10))
    write_jsonl(tmp_path / "rte" / "validation.jsonl", rte_rows(277, offset=1000))
    sst = [{"sentence": f"w{i}", "label": i % 2, "idx": i} for i in range(1200)]
    write_jsonl(tmp_path / "sst2" / "train.jsonl", sst)
    write_jsonl(tmp_path / "sst2" / "validation.jsonl", sst[:50])
    return tmp_path


def ids(split) -> list[int]:
    return [int(s.split()[1][1:]) for s in split["source"]]


def test_permutation_is_torch_randperm_seed_42():
    expected = torch.randperm(277, generator=torch.Generator().manual_seed(42)).tolist()
    assert split_permutation(277) == expected
    assert split_permutation(277) == split_permutation(277)
    assert sorted(split_permutation(277)) == list(range(277))


def test_split_index_rules():
    perm = split_permutation(277)
    assert split_indices("small", "train", 277, None) is None
    assert split_indices("small", "validation", 277, None) == perm[:138]
    assert split_indices("small", "test", 277, None) == perm[138:]
    assert split_indices("small", "test", 277, 5) == perm[138:143]
    assert split_indices("small", "train", 277, 5) == perm[:5]  # "else" branch: randperm[:n_obs]
    perm = split_permutation(1500)
    assert split_indices("large", "train", 1500, None) == perm[1000:]
    assert split_indices("large", "validation", 1500, None) == perm[:1000]
    assert split_indices("large", "validation", 1500, 7) == perm[:7]
    assert split_indices("large", "test", 1500, None) is None
    assert split_indices("neither", "validation", 1500, None) is None
    assert split_indices("neither", "validation", 1500, 3) == perm[:3]
    # split_validation_test=False: HF splits as they are
    assert split_indices("small", "test", 277, None, split_validation_test=False) is None


def test_small_rule_sizes_and_order(synthetic_dir):
    splits = load_task_splits("rte", data_dir=synthetic_dir)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [10, 138, 139]
    perm = split_permutation(277)
    assert ids(splits["validation"]) == [1000 + i for i in perm[:138]]
    assert ids(splits["test"]) == [1000 + i for i in perm[138:]]
    assert ids(splits["train"]) == list(range(10))  # original order
    assert set(splits["train"].column_names) == {"source", "target", "task", "label"}
    assert splits["test"][0]["task"] == "rte"


def test_large_rule_sizes_and_order(synthetic_dir):
    splits = load_task_splits("sst2", data_dir=synthetic_dir)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [200, 1000, 50]
    perm = split_permutation(1200)
    assert ids(splits["validation"]) == perm[:1000]
    assert ids(splits["train"]) == perm[1000:]
    assert ids(splits["test"]) == list(range(50))


def test_n_obs_and_clipping(synthetic_dir, caplog):
    splits = load_task_splits("sst2", data_dir=synthetic_dir, max_train_samples=20, max_eval_samples=30,
                              max_predict_samples=5)  # fmt: skip
    perm = split_permutation(1200)
    assert ids(splits["train"]) == perm[1000:1020]
    assert ids(splits["validation"]) == perm[:30]
    assert ids(splits["test"]) == split_permutation(50)[:5]
    with caplog.at_level(logging.WARNING):
        clipped = load_task_splits(
            "rte", data_dir=synthetic_dir, max_eval_samples=500, splits=("validation",)
        )
    assert len(clipped["validation"]) == 138 and "only 138 exist" in caplog.text


def test_split_validation_test_false(synthetic_dir):
    splits = load_task_splits("rte", data_dir=synthetic_dir, split_validation_test=False)
    assert len(splits["validation"]) == len(splits["test"]) == 277
    assert splits["validation"]["source"] == splits["test"]["source"]


def test_requested_splits_only_read_their_files(tmp_path):
    write_jsonl(tmp_path / "qqp" / "train.jsonl", [{"question1": "a", "question2": "b", "label": 0}] * 1002)
    splits = load_task_splits("qqp", data_dir=tmp_path, splits=("train", "validation"))
    assert set(splits) == {"train", "validation"} and len(splits["train"]) == 2
    with pytest.raises(FileNotFoundError) as err:
        load_task_splits("qqp", data_dir=tmp_path)
    assert str(tmp_path / "qqp" / "validation.jsonl") in str(err.value)


def test_mnli_uses_mismatched_for_validation_and_matched_for_test(tmp_path):
    row = {"premise": "p", "hypothesis": "h", "label": 2}
    write_jsonl(tmp_path / "mnli" / "train.jsonl", [row] * 3)
    write_jsonl(tmp_path / "mnli" / "validation_mismatched.jsonl", [{**row, "premise": "mm"}] * 4)
    write_jsonl(tmp_path / "mnli" / "validation_matched.jsonl", [{**row, "premise": "m"}] * 5)
    splits = load_task_splits("mnli", data_dir=tmp_path)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [3, 4, 5]
    assert splits["validation"][0]["source"] == "premise: mm hypothesis: h"
    assert splits["test"][0]["source"] == "premise: m hypothesis: h" and splits["test"][0]["target"] == "2"


def test_real_data_split_sizes_match_released_logs(shared_dir):
    root = shared_dir / "data-real"
    # (task, expected validation, expected test) from the released DePT runs (docs/fidelity.md#f-split)
    for task, val, test in [("rte", 138, 139), ("cola", 521, 522), ("mrpc", 204, 204), ("stsb", 750, 750),
                            ("superglue-cb", 28, 28), ("superglue-wic", 319, 319), ("superglue-wsc.fixed", 52, 52),
                            ("superglue-boolq", 1635, 1635)]:  # fmt: skip
        splits = load_task_splits(task, data_dir=root, splits=("validation", "test"))
        assert (len(splits["validation"]), len(splits["test"])) == (val, test), task
    sst2 = load_task_splits("sst2", data_dir=root, splits=("validation", "test"))
    assert (len(sst2["validation"]), len(sst2["test"])) == (1000, 872)


def test_real_split_determinism(shared_dir):
    root = shared_dir / "data-real"
    a = load_task_splits("rte", data_dir=root, splits=("validation", "test"))
    b = load_task_splits("rte", data_dir=root, splits=("validation", "test"), seed=7)  # seed: k-shot only
    assert (
        a["validation"]["source"] == b["validation"]["source"] and a["test"]["source"] == b["test"]["source"]
    )
    assert not set(a["validation"]["source"]) & set(a["test"]["source"])


def test_other_file_formats(tmp_path):
    import pandas as pd

    rows = rte_rows(4)
    (tmp_path / "rte").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "rte" / "train.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "rte" / "validation.parquet")
    splits = load_task_splits("rte", data_dir=tmp_path)
    assert splits["train"]["source"] == [f"sentence1: s{i} sentence2: t{i}" for i in range(4)]
    assert sorted([*splits["validation"]["source"], *splits["test"]["source"]]) == sorted(
        splits["train"]["source"]
    )


def test_missing_file_names_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"rte/train\.jsonl"):
        load_task_splits("rte", data_dir=tmp_path)


def test_missing_field_names_field_and_file(tmp_path):
    path = write_jsonl(tmp_path / "rte" / "train.jsonl", [{"sentence1": "a", "label": 0}])
    with pytest.raises(ValueError, match="field 'sentence2' is missing in " + str(path)):
        load_task_splits("rte", data_dir=tmp_path, splits=("train",))


def test_bad_task_and_split_names(tmp_path):
    with pytest.raises(ValueError, match="Valid task names: cola"):
        load_task_splits("glue-rte", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown split"):
        load_task_splits("rte", data_dir=tmp_path, splits=("dev",))


def test_unlabeled_rows_are_kept(tmp_path, caplog):
    write_jsonl(tmp_path / "rte" / "validation.jsonl", rte_rows(6, label=-1))
    with caplog.at_level(logging.WARNING):
        splits = load_task_splits("rte", data_dir=tmp_path, splits=("test",))
    assert len(splits["test"]) == 3 and set(splits["test"]["target"]) == {""}
    assert set(splits["test"]["label"]) == {-1} and "unlabeled" in caplog.text
    write_jsonl(tmp_path / "paws" / "test.jsonl", [{"sentence1": "a", "sentence2": "b"}])
    with caplog.at_level(logging.WARNING):
        paws = load_task_splits("paws", data_dir=tmp_path, splits=("test",))
    assert paws["test"][0]["target"] == "" and "no 'label' column" in caplog.text


def test_train_file_without_a_label_column_is_refused(tmp_path):
    """Without the column every row was trained as an empty target (exit 0), as with -1 labels."""
    rows = [{k: v for k, v in row.items() if k != "label"} for row in rte_rows(4)]
    path = write_jsonl(tmp_path / "rte" / "train.jsonl", rows)
    with pytest.raises(ValueError, match=f"{path}: no 'label' column; training rows need a label"):
        load_task_splits("rte", data_dir=tmp_path, splits=("train",))


def test_fixture_tasks_load(caplog):
    wino = load_task_splits("winogrande", data_dir=FIXTURES, splits=("validation", "test"))
    assert len(wino["validation"]) == 3 and wino["test"]["target"] == ["1", "0"]  # large: val from train
    sci = load_task_splits("scitail", data_dir=FIXTURES)
    assert [len(sci[s]) for s in ("train", "validation", "test")] == [2, 2, 3]
    paws = load_task_splits("paws", data_dir=FIXTURES)
    assert [len(paws[s]) for s in ("train", "validation", "test")] == [3, 2, 2]
    with caplog.at_level(logging.WARNING):
        nq = load_task_splits("nq", data_dir=FIXTURES, splits=("validation", "test"))
    assert [len(nq[s]) for s in ("validation", "test")] == [3, 3] and "held out" in caplog.text
    with pytest.raises(ValueError, match="train split is empty .*--split_validation_test False"):
        load_task_splits("nq", data_dir=FIXTURES)  # all 3 train rows are held out for validation
    row = nq["test"][0]
    assert row["answers"] == ["William Shakespeare", "Shakespeare"] and row["target"] == "William Shakespeare"
    assert set(nq["test"].column_names) == {"source", "target", "task", "answers"}


def test_multirc_group_ids_and_markup(tmp_path):
    rows = [
        {"paragraph": "P<br>one <b>x</b>", "question": "Q?", "answer": f"a{i}", "label": i % 2,
         "idx": {"paragraph": 0, "question": 7 + (i > 1) * 2, "answer": i}}
        for i in range(4)
    ]  # fmt: skip
    write_jsonl(tmp_path / "superglue-multirc" / "validation.jsonl", rows)
    splits = load_task_splits(
        "superglue-multirc", data_dir=tmp_path, split_validation_test=False, splits=("test",)
    )
    assert splits["test"]["group_id"] == [7, 7, 9, 9]
    assert splits["test"][0]["source"] == "question: Q? answer: a0 paragraph: P one x"
    write_jsonl(
        tmp_path / "superglue-multirc" / "train.jsonl", [{k: v for k, v in rows[0].items() if k != "idx"}]
    )
    with pytest.raises(ValueError, match="field 'idx' is missing"):
        load_task_splits("superglue-multirc", data_dir=tmp_path, splits=("train",))


def test_yelp_train_cap(tmp_path, monkeypatch):
    capped = dataclasses.replace(get_task("yelp_polarity"), max_train_rows=3)
    monkeypatch.setattr(loading, "get_task", lambda name: capped)
    write_jsonl(
        tmp_path / "yelp_polarity" / "train.jsonl", [{"text": f"r{i}", "label": i % 2} for i in range(1010)]
    )
    splits = load_task_splits("yelp_polarity", data_dir=tmp_path, splits=("train",))
    perm = split_permutation(1010)
    assert splits["train"]["source"] == [f"sentence: r{i}" for i in perm[1000:1003]]


# ---------------------------------------------------------------------------------------------- k-shot


def _train(task_name: str, targets: list[str]):
    import datasets

    return datasets.Dataset.from_dict(
        {
            "source": [f"x{i}" for i in range(len(targets))],
            "target": targets,
            "task": [task_name] * len(targets),
        }
    )


def test_k_shot_balanced_and_deterministic():
    task = get_task("rte")
    train = _train("rte", ["0"] * 50 + ["1"] * 10)
    a = sample_k_shot(task, train, 8, seed=3)
    b = sample_k_shot(task, train, 8, seed=3)  # fresh counters: same sample again
    assert a["source"] == b["source"] and len(a) == 8
    # 4 per class, except that the 8th (last) slot goes to whichever class comes next
    assert sorted([a["target"].count("0"), a["target"].count("1")]) in ([4, 4], [3, 5])
    assert a["target"][:7].count("0") <= 4 and a["target"][:7].count("1") <= 4
    shuffled = train.shuffle(seed=3)["source"]
    positions = [shuffled.index(s) for s in a["source"]]
    assert positions == sorted(positions)  # kept in shuffled order
    assert sample_k_shot(task, train, 8, seed=4)["source"] != a["source"]


def test_k_shot_last_slot_goes_to_any_class():
    task = get_task("superglue-cb")
    train = _train("superglue-cb", ["0"] * 20 + ["1"] * 20)  # class "2" absent
    sample = sample_k_shot(task, train, 7, seed=0)  # per_class = 2, 7th slot free
    assert len(sample) == 4  # 2 + 2; the any-class slot opens only once 6 are accepted
    sample = sample_k_shot(task, _train("superglue-cb", ["0"] * 20 + ["1"] * 20 + ["2"] * 2), 7, seed=0)
    assert len(sample) == 7 and sample["target"].count("2") == 2
    assert sorted(sample["target"].count(c) for c in "01") in ([2, 3], [3, 2])


def test_k_shot_stsb_classes_by_threshold():
    task = get_task("stsb")
    sample = sample_k_shot(task, _train("stsb", ["1.0", "2.5", "2.6", "4.0"] * 5), 4, seed=1)
    low = sum(float(t) <= 2.5 for t in sample["target"])
    assert len(sample) == 4 and low == 2


def test_k_shot_errors_and_pipeline(synthetic_dir):
    with pytest.raises(ValueError, match="not defined for task 'nq'"):
        sample_k_shot(get_task("nq"), _train("nq", ["a"]), 4, seed=0)
    splits = load_task_splits("sst2", data_dir=synthetic_dir, k_shot_example=6, seed=11)
    again = load_task_splits("sst2", data_dir=synthetic_dir, k_shot_example=6, seed=11)
    assert len(splits["train"]) == 6 and splits["train"]["source"] == again["train"]["source"]
    assert len(splits["validation"]) == 1000  # untouched
    full_train = load_task_splits("sst2", data_dir=synthetic_dir, splits=("train",))["train"]
    assert splits["train"]["source"] == sample_k_shot(get_task("sst2"), full_train, 6, 11)["source"]
