"""Write the demo's own small sentiment task in the GLUE SST-2 schema (``sentence``, ``label``, ``idx``).

The sentences are generated from templates and word lists written for this project (no data copied
from elsewhere). Training rows and the held-out rows use *different* templates, so the held-out
accuracy measures generalisation beyond surface patterns. Some templates negate the adjective or
contrast two clauses, so the label is not a bag-of-words function of the sentence.

Layout written: ``OUT/sst2/train.jsonl`` and ``OUT/sst2/validation.jsonl``; with DePT's split rule for
sst2 the first 1000 shuffled training rows become the logical validation split and ``validation.jsonl``
(the held-out templates) becomes the logical test split.

Usage: ``python scripts/make_demo_data.py --out_dir outputs/demo_data [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

POSITIVE = (
    "wonderful delightful brilliant charming superb excellent moving gripping hilarious beautiful clever "
    "heartfelt stunning enjoyable fresh warm"
).split()
NEGATIVE = (
    "dull tedious clumsy awful boring lifeless messy shallow predictable painful bland forgettable "
    "irritating sloppy weak stale"
).split()
SUBJECTS = [
    "the film", "this movie", "the plot", "the acting", "the script", "the soundtrack",
    "the ending", "the director's new work", "the lead performance", "the dialogue", "the cinematography",
    "the story",
]
INTENSIFIERS = ["", "really ", "truly ", "remarkably ", "rather ", "quite "]

# Each template is (text, polarity): polarity +1 keeps the adjective's sentiment, -1 flips it
# (negation). Templates with two slots take a contrasting second adjective; the label follows the
# clause after "but"/"yet".
TRAIN_TEMPLATES = [
    ("{subj} is {int}{adj} .", 1),
    ("i found {subj} {int}{adj} .", 1),
    ("{subj} was {int}{adj} from start to finish .", 1),
    ("{subj} is not {adj} at all .", -1),
    ("nobody would call {subj} {adj} .", -1),
    ("{subj} starts {other} , but it ends up {int}{adj} .", 1),
]
HELDOUT_TEMPLATES = [
    ("what a {int}{adj} experience {subj} turned out to be .", 1),
    ("honestly , {subj} felt {int}{adj} .", 1),
    ("{subj} is hardly {adj} .", -1),
    ("{subj} never manages to be {adj} .", -1),
    ("at first {subj} seems {other} , yet in the end it is {int}{adj} .", 1),
]


def make_sentence(rng: random.Random, templates: list[tuple[str, int]]) -> tuple[str, int]:
    """One (sentence, label) pair: label 1 = positive, 0 = negative."""
    template, polarity = rng.choice(templates)
    positive = rng.random() < 0.5
    adj = rng.choice(POSITIVE if positive else NEGATIVE)
    other = rng.choice(NEGATIVE if positive else POSITIVE)
    text = template.format(subj=rng.choice(SUBJECTS), int=rng.choice(INTENSIFIERS), adj=adj, other=other)
    label = int(positive) if polarity > 0 else int(not positive)
    return text[0].upper() + text[1:] if text[0].isalpha() else text, label


def write_split(path: Path, rows: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for idx, (sentence, label) in enumerate(rows):
            f.write(json.dumps({"sentence": sentence, "label": label, "idx": idx}) + "\n")
    tmp.replace(path)


def generate(out_dir: Path, seed: int = 0, n_train: int = 2000, n_heldout: int = 400) -> Path:
    """Write the task under ``out_dir/sst2``; returns that folder."""
    rng = random.Random(seed)
    task_dir = out_dir / "sst2"
    write_split(task_dir / "train.jsonl", [make_sentence(rng, TRAIN_TEMPLATES) for _ in range(n_train)])
    write_split(task_dir / "validation.jsonl", [make_sentence(rng, HELDOUT_TEMPLATES) for _ in range(n_heldout)])
    return task_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_train", type=int, default=2000, help="rows in train.jsonl (1000 become validation)")
    parser.add_argument("--n_heldout", type=int, default=400, help="rows with held-out templates (the test split)")
    args = parser.parse_args()
    generate(args.out_dir, args.seed, args.n_train, args.n_heldout)


if __name__ == "__main__":
    main()
