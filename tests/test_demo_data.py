"""The demo's generated sentiment task: determinism, labels, and held-out templates disjoint from training."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scripts import make_demo_data as mdd


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _template_regex(template: str) -> re.Pattern:
    """A regex matching every sentence ``template`` can produce (case-insensitive first letter)."""
    slots = {
        "subj": "(?P<subj>" + "|".join(map(re.escape, mdd.SUBJECTS)) + ")",
        "int": "(?P<int>" + "|".join(map(re.escape, mdd.INTENSIFIERS)) + ")",
        "adj": "(?P<adj>" + "|".join(map(re.escape, mdd.POSITIVE + mdd.NEGATIVE)) + ")",
        "other": "(?P<other>" + "|".join(map(re.escape, mdd.POSITIVE + mdd.NEGATIVE)) + ")",
    }
    parts = re.split(r"(\{\w+\})", template)
    pattern = "".join(slots[p[1:-1]] if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(pattern, re.IGNORECASE)


def _matching(sentence: str, templates: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [t for t in templates if _template_regex(t[0]).fullmatch(sentence)]


def test_generation_is_deterministic_per_seed(tmp_path):
    a = mdd.generate(tmp_path / "a", seed=0, n_train=50, n_heldout=20)
    b = mdd.generate(tmp_path / "b", seed=0, n_train=50, n_heldout=20)
    c = mdd.generate(tmp_path / "c", seed=1, n_train=50, n_heldout=20)
    for name in ("train.jsonl", "validation.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()
    assert len(_rows(a / "train.jsonl")) == 50 and len(_rows(a / "validation.jsonl")) == 20
    assert _rows(a / "train.jsonl")[3]["idx"] == 3


def test_heldout_templates_are_disjoint_and_labels_follow_the_template(tmp_path):
    task = mdd.generate(tmp_path, seed=0, n_train=400, n_heldout=200)
    train_t = {t for t, _ in mdd.TRAIN_TEMPLATES}
    held_t = {t for t, _ in mdd.HELDOUT_TEMPLATES}
    assert not train_t & held_t
    for split, own, other in (
        ("train.jsonl", mdd.TRAIN_TEMPLATES, mdd.HELDOUT_TEMPLATES),
        ("validation.jsonl", mdd.HELDOUT_TEMPLATES, mdd.TRAIN_TEMPLATES),
    ):
        rows = _rows(task / split)
        for row in rows:
            sentence = row["sentence"]
            matches = _matching(sentence, own)
            assert matches, f"{split}: {sentence!r} matches none of its own templates"
            assert not _matching(sentence, other), f"{split}: {sentence!r} matches the other split's template"
            template, polarity = matches[0]
            adj = _template_regex(template).fullmatch(sentence)["adj"]
            positive = adj in mdd.POSITIVE
            assert row["label"] == int(positive if polarity > 0 else not positive), sentence
        labels = [r["label"] for r in rows]
        assert 0.35 < sum(labels) / len(labels) < 0.65  # roughly balanced
        assert sentence[0].isupper()


def test_sst2_split_rule_turns_heldout_file_into_test(tmp_path):
    from data.loading import load_task_splits

    mdd.generate(tmp_path, seed=0, n_train=1100, n_heldout=30)
    splits = load_task_splits("sst2", data_dir=tmp_path, splits=("train", "validation", "test"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 100, "validation": 1000, "test": 30}
    held = {r["sentence"] for r in _rows(tmp_path / "sst2" / "validation.jsonl")}
    assert all(src.removeprefix("sentence: ") in held for src in splits["test"]["source"])
