"""Task registry, templates and label rules (docs/fidelity.md#f-template, #f-labels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data.loading import build_source, build_target
from data.tasks import PAPER_TASKS, TASKS, get_task
from metrics.postprocess import mark_wsc_spans, pad_punctuation, remove_markup, stsb_target

FIXTURES = Path(__file__).parent / "fixtures" / "data"


def first_row(root: Path, task: str, split: str) -> dict:
    with open(root / task / f"{split}.jsonl", encoding="utf-8") as f:
        return json.loads(f.readline())


def test_registry_names_and_metadata():
    assert PAPER_TASKS == (
        "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "superglue-boolq", "superglue-cb",
        "superglue-multirc", "superglue-wic", "superglue-wsc.fixed", "nq", "hotpotqa", "searchqa", "newsqa",
    )  # fmt: skip
    assert set(TASKS) == set(PAPER_TASKS) | {"winogrande", "yelp_polarity", "scitail", "paws"}
    best = {t.name: t.metric_for_best_model for t in TASKS.values()}
    assert best["cola"] == "matthews_correlation"
    assert best["mrpc"] == best["qqp"] == "accuracy"
    assert best["stsb"] == "pearson" and best["superglue-cb"] == "f1_multiclass"
    assert best["superglue-multirc"] == "f1" and best["nq"] == "em"
    for task in TASKS.values():
        assert task.metric_for_best_model in task.metric_names
    assert get_task("mrpc").metric_names == ("f1", "accuracy")
    assert get_task("stsb").metric_names == ("pearson", "spearmanr")
    assert get_task("stsb").num_labels == 1 and get_task("mnli").num_labels == 3
    assert get_task("superglue-cb").num_labels == 3 and get_task("rte").num_labels == 2
    assert get_task("nq").num_labels is None and get_task("nq").is_qa and not get_task("rte").is_qa
    assert len(get_task("stsb").labels_list) == 26 and get_task("stsb").labels_list[:3] == (
        "0.0",
        "0.2",
        "0.4",
    )


def test_split_rules_and_maps():
    small = {t.name for t in TASKS.values() if t.split_rule == "small"}
    large = {t.name for t in TASKS.values() if t.split_rule == "large"}
    assert small == {"cola", "rte", "mrpc", "stsb", "superglue-boolq", "superglue-cb", "superglue-multirc",
                     "superglue-wic", "superglue-wsc.fixed", "scitail"}  # fmt: skip
    assert large == {
        "qqp",
        "qnli",
        "sst2",
        "yelp_polarity",
        "winogrande",
        "newsqa",
        "searchqa",
        "nq",
        "hotpotqa",
    }
    assert get_task("mnli").split_rule == get_task("paws").split_rule == "neither"
    assert get_task("mnli").split_map == {
        "train": "train", "validation": "validation_mismatched", "test": "validation_matched"
    }  # fmt: skip
    assert (
        get_task("yelp_polarity").split_map["test"] == "test"
        and get_task("sst2").split_map["test"] == "validation"
    )
    assert get_task("yelp_polarity").max_train_rows == 100_000


def test_hub_ids_are_namespaced():
    ids = {t.name: (t.hub_id, t.hub_config) for t in TASKS.values()}
    assert ids["rte"] == ("nyu-mll/glue", "rte") and ids["superglue-wsc.fixed"] == (
        "aps/super_glue",
        "wsc.fixed",
    )
    assert ids["nq"] == ("lucadiliello/naturalquestionsshortqa", None)
    assert ids["winogrande"] == ("allenai/winogrande", "winogrande_xl")
    assert (
        ids["scitail"] == ("allenai/scitail", "snli_format")
        and ids["paws"][0] == "google-research-datasets/paws"
    )
    assert ids["yelp_polarity"][0] == "fancyzhx/yelp_polarity"
    assert all("/" in hub for hub, _ in ids.values())


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown task 'sst-2'.*cola, sst2, mrpc.*paws"):
        get_task("sst-2")


# Expected sources typed from the original templates (docs/fidelity.md#f-template), not from the registry.
TEMPLATES = {
    "cola": lambda r: f"sentence: {r['sentence']}",
    "sst2": lambda r: f"sentence: {r['sentence']}",
    "mrpc": lambda r: f"sentence1: {r['sentence1']} sentence2: {r['sentence2']}",
    "qqp": lambda r: f"question1: {r['question1']} question2: {r['question2']}",
    "stsb": lambda r: f"sentence1: {r['sentence1']} sentence2: {r['sentence2']}",
    "mnli": lambda r: f"premise: {r['premise']} hypothesis: {r['hypothesis']}",
    "qnli": lambda r: f"question: {r['question']} sentence: {r['sentence']}",
    "rte": lambda r: f"sentence1: {r['sentence1']} sentence2: {r['sentence2']}",
    "superglue-boolq": lambda r: f"question: {r['question']} passage: {r['passage']}",
    "superglue-cb": lambda r: f"premise: {r['premise']} hypothesis: {r['hypothesis']}",
    "superglue-wic": lambda r: f"sentence1: {r['sentence1']} sentence2: {r['sentence2']} word: {r['word']}",
}
REAL_TRAIN_TASKS = [*TEMPLATES, "superglue-multirc", "superglue-wsc.fixed"]


@pytest.mark.parametrize("name", REAL_TRAIN_TASKS)
def test_template_and_target_on_real_example(shared_dir, name):
    root = shared_dir / "data-real"
    row = first_row(root, name, "train")
    task = get_task(name)
    source, label = build_source(task, row), build_target(task, row)
    if name in TEMPLATES:
        assert source == TEMPLATES[name](row)
    if name == "stsb":
        assert row["label"] == 5.0 and label == ("5.0", 5.0)
    else:
        assert label == (str(row["label"]), row["label"])
    assert build_source(task, row, add_prefix=True) == f"{name} {source}"


def test_real_examples_byte_exact(shared_dir):
    root = shared_dir / "data-real"
    rte = get_task("rte")
    assert build_source(rte, first_row(root, "rte", "train")) == (
        "sentence1: No Weapons of Mass Destruction Found in Iraq Yet. sentence2: Weapons of Mass Destruction Found in Iraq."
    )
    wsc = first_row(root, "superglue-wsc.fixed", "train")
    assert build_source(get_task("superglue-wsc.fixed"), wsc) == (
        "text: * Mark * told Pete many lies about himself, which Pete included in his book. "
        "# He # should have been more skeptical."
    )
    multirc = first_row(root, "superglue-multirc", "train")
    assert build_source(get_task("superglue-multirc"), multirc) == (
        f"question: {remove_markup(multirc['question'])} answer: {remove_markup(multirc['answer'])} "
        f"paragraph: {remove_markup(multirc['paragraph'])}"
    )
    mnli = first_row(root, "mnli", "validation_matched")
    assert build_source(get_task("mnli"), mnli) == (
        "premise: The new rights are nice enough hypothesis: Everyone really likes the newest benefits "
    )  # trailing space of the data survives: no normalisation
    assert build_target(get_task("mnli"), mnli) == ("1", 1)


def test_wsc_marking():
    text = "This is a test sentence ."
    assert mark_wsc_spans(text, "test", 3, "This", 0) == "# This # is a * test * sentence ."
    text = "Mark told Pete many lies about himself, which Pete included in his book."
    assert mark_wsc_spans(text, "Mark", 0, "himself", 6) == (
        "* Mark * told Pete many lies about # himself #, which Pete included in his book."
    )
    # index/text mismatch: left unmarked
    assert mark_wsc_spans("a b c", "z", 1, "c", 2) == "a b c"
    # regex metacharacters in the span are matched literally (the original inserted them unescaped)
    assert mark_wsc_spans("I met Mr. (Bob) Smith", "(Bob)", 3, "I", 0) == "# I # met Mr. * (Bob) * Smith"
    assert mark_wsc_spans("he said x.y", "x.y", 2, "he", 0) == "# he # said * x.y *"
    assert mark_wsc_spans("he said xzy", "x.y", 2, "he", 0) == "# he # said xzy"


def test_pad_punctuation_and_markup():
    assert pad_punctuation('Who wrote "Hamlet"?') == 'Who wrote " Hamlet " ? '
    assert pad_punctuation("U.S.A.") == "U . S . A . "
    assert pad_punctuation("François_x  a\tb\n") == "François_x a b "
    assert pad_punctuation("3,5") == "3 , 5"
    assert pad_punctuation(12) == "12"
    assert remove_markup("a<br>b <b>c</b>") == "a b c"


def test_stsb_target_rounding():
    # numpy.round to 1 decimal (x*10 rounded half-to-even), not T5's 0.2 grid
    cases = {
        3.8: "3.8",
        4.25: "4.2",
        4.35: "4.4",
        0.25: "0.2",
        1.6667: "1.7",
        5.0: "5.0",
        0.0: "0.0",
        2.5: "2.5",
        0.75: "0.8",
    }
    for value, expected in cases.items():
        assert stsb_target(value) == expected, value


def test_extra_task_targets_from_fixtures():
    wino = first_row(FIXTURES, "winogrande", "train")
    task = get_task("winogrande")
    # faithful to DePT: option1 appears twice and option2 never (documented bug)
    assert build_source(task, wino) == (
        "sentence: Sarah was a much better surgeon than Maria so _ always got the harder cases. "
        "option0: Sarah option1: Sarah"
    )
    assert build_target(task, wino) == ("0", 0)
    assert build_target(task, {**wino, "answer": "2"}) == ("1", 1)
    assert build_target(task, {**wino, "answer": ""}) == ("", None)
    sci = get_task("scitail")
    row = first_row(FIXTURES, "scitail", "train")
    assert (
        build_source(sci, row)
        == "premise: Pluto has a moon named Charon. hypothesis: Charon is a moon of Pluto."
    )
    assert build_target(sci, row) == ("0", 0) and build_target(sci, {**row, "gold_label": "neutral"}) == (
        "1",
        1,
    )
    assert build_target(sci, {**row, "gold_label": "-"}) == ("", None)
    yelp = first_row(FIXTURES, "yelp_polarity", "train")
    assert build_source(get_task("yelp_polarity"), yelp) == "sentence: " + yelp["text"]
    paws = first_row(FIXTURES, "paws", "train")
    assert (
        build_source(get_task("paws"), paws)
        == f"sentence1: {paws['sentence1']} sentence2: {paws['sentence2']}"
    )
    assert build_target(get_task("paws"), paws) == ("1", 1)
    qqp = first_row(FIXTURES, "qqp", "validation")
    assert build_source(get_task("qqp"), qqp) == (
        "question1: How do I learn Python quickly? question2: What is the fastest way to learn Python?"
    )


@pytest.mark.parametrize("name", ["nq", "hotpotqa", "searchqa", "newsqa"])
def test_qa_template_first_answer(name):
    row = first_row(FIXTURES, name, "train")
    task = get_task(name)
    assert (
        build_source(task, row)
        == f"question: {pad_punctuation(row['question'])} context: {pad_punctuation(row['context'])}"
    )
    assert build_target(task, row) == (pad_punctuation(row["answers"][0]), None)


def test_qa_template_literal():
    row = {
        "question": 'Who wrote "Hamlet"?',
        "context": "Shakespeare (1600).",
        "answers": ["W. Shakespeare", "x"],
    }
    task = get_task("nq")
    assert build_source(task, row) == 'question: Who wrote " Hamlet " ?  context: Shakespeare ( 1600 ) . '
    assert build_target(task, row) == ("W . Shakespeare", None)
    assert build_target(task, {**row, "answers": []}) == ("", None)


def test_unlabeled_rows_give_empty_target():
    rte = get_task("rte")
    row = {"sentence1": "a", "sentence2": "b", "label": -1}
    assert build_target(rte, row) == ("", None)
    assert build_target(rte, {**row, "label": None}) == ("", None)
    assert build_target(get_task("superglue-boolq"), {"label": True}) == ("1", 1)
