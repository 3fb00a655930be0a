"""Build a tiny random T5 (d=32, 2+2 layers) with a tokenizer, and optionally tiny RTE-schema data, offline.

The tokenizer is ``--tokenizer`` when given (e.g. ../shared/t5-tokenizer), else a small SentencePiece
unigram T5 tokenizer built in memory from letters, digits and punctuation. Used by examples/run_tiny.sh.

Usage: ``python scripts/make_tiny_model.py --out_dir outputs/tiny/model [--tokenizer DIR] [--data_dir DIR]``
"""

from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration, T5Tokenizer

T5_VOCAB_SIZE = 32128  # T5's embedding rows (its tokenizer has 32,100 entries)


def offline_tokenizer() -> T5Tokenizer:
    """Character-level T5 tokenizer (unigram scores) with a few whole words; no download."""
    words = "sentence1 sentence2 the a cat dog sat on mat fly can number".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("\u2581" + w, -1.0) for w in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_model(out_dir: Path, tokenizer_dir: str | None, seed: int = 0) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else offline_tokenizer()
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=max(T5_VOCAB_SIZE, len(tokenizer)) if tokenizer_dir else len(tokenizer),
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def write_rte(data_dir: Path, n_train: int = 64, n_validation: int = 32, seed: int = 0) -> None:
    """Synthetic entailment rows in the GLUE RTE schema: label 0 = entailment when sentence2 is in sentence1."""
    rng = random.Random(seed)
    animals, places = ["cat", "dog", "bird", "fish"], ["mat", "sofa", "roof", "box"]
    folder = data_dir / "rte"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_validation)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(n):
                animal, place = rng.choice(animals), rng.choice(places)
                entailed = rng.random() < 0.5
                other = place if entailed else rng.choice([p for p in places if p != place])
                row = {"sentence1": f"the {animal} sat on the {place}", "sentence2": f"a {animal} is on a {other}",
                       "label": 0 if entailed else 1, "idx": i}  # fmt: skip
                handle.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True, type=Path, help="folder for the model and tokenizer")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder to use (default: offline one)")
    parser.add_argument("--data_dir", default=None, type=Path, help="also write <data_dir>/rte/*.jsonl")
    parser.add_argument("--seed", default=0, type=int)
    args = parser.parse_args()
    build_model(args.out_dir, args.tokenizer, args.seed)
    if args.data_dir is not None:
        write_rte(args.data_dir, seed=args.seed)


if __name__ == "__main__":
    main()
