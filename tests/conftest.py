"""Shared fixtures: tiny random models built from configs, tokenizers, and the ../shared reference folder.

Everything here works offline. Tests that need ../shared (real tokenizer, golden outputs, real data,
released checkpoints) use the ``shared_dir`` fixture, which skips with a reason when it is absent.
"""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# ACCEPT_SHARED_DIR points elsewhere (CI sets a missing path to check that the suite passes on a
# user's fresh clone, where ../shared does not exist).
SHARED_DIR = Path(os.environ.get("ACCEPT_SHARED_DIR", REPO_ROOT.parent / "shared"))

# T5's model vocabulary (32128) is larger than its tokenizer (32100); tiny models keep the real size
# so that the real tokenizer's ids fit.
T5_VOCAB_SIZE = 32128


def build_offline_t5_tokenizer():
    """A small T5 (SentencePiece-unigram) tokenizer built in memory: letters, digits, punctuation."""
    from transformers import T5Tokenizer

    words = "sentence sentence1 sentence2 question premise hypothesis passage context answer text word".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    vocab += [("\u2581" + w, -1.0) for w in words]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder; skips the test when it is not there (a user's fresh clone)."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared is not present (reference data for parity/integration tests)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def t5_tokenizer():
    """The real T5 tokenizer from ../shared when present, else the small offline one."""
    from transformers import AutoTokenizer

    real = SHARED_DIR / "t5-tokenizer"
    if real.is_dir():
        return AutoTokenizer.from_pretrained(str(real))
    return build_offline_t5_tokenizer()


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(str(path))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory, t5_tokenizer) -> Path:
    """A tiny random T5 (d=32, 2+2 layers) with the T5 tokenizer, saved as a local model folder."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=max(T5_VOCAB_SIZE, len(t5_tokenizer)),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = T5ForConditionalGeneration(config)
    return _save(model, t5_tokenizer, tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, t5_tokenizer) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) sharing the T5 tokenizer's vocabulary.

    The tokenizer is the T5 one (no Llama tokenizer exists offline); decoder-only code must not
    rely on BOS tokens or a particular tokenizer class.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=max(T5_VOCAB_SIZE, len(t5_tokenizer)),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(config)
    return _save(model, t5_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, t5_tokenizer) -> Path:
    """A tiny random BERT sequence classifier (hidden 32, 2 layers, 2 labels)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=max(T5_VOCAB_SIZE, len(t5_tokenizer)),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForSequenceClassification(config)
    return _save(model, t5_tokenizer, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def t5_backbone(tiny_t5_dir):
    """The tiny T5 loaded once per test module, shared by the wrappers built on it (wrapping freezes it
    but does not change its weights)."""
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration.from_pretrained(tiny_t5_dir)


RTE_TRAIN, RTE_VALIDATION = 16, 8  # rte is "small": HF validation is halved into validation (4) / test (4)


def write_rte(root: Path, n_train: int = RTE_TRAIN, n_validation: int = RTE_VALIDATION) -> Path:
    """RTE rows in the HF GLUE schema under ``root/rte/{train,validation}.jsonl``; returns ``root``."""
    folder = root / "rte"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("validation", n_validation)):
        rows = [
            {
                "sentence1": f"cat {i} sat",
                "sentence2": "a cat" if i % 2 else "dogs fly",
                "label": i % 2,
                "idx": i,
            }
            for i in range(n)
        ]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def save_small_t5(path: Path, dropout: float = 0.1) -> Path:
    """A T5 with d=16, one encoder and one decoder layer, the offline tokenizer's vocabulary (about 100 ids
    instead of T5's 32k, so that each ``train.main`` run takes seconds); dropout makes a resumed run match
    only when the RNG state is restored too."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = build_offline_t5_tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1,
        num_heads=4, dropout_rate=dropout, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def save_small_llama(path: Path) -> Path:
    """A Llama with hidden 16, one layer, the offline tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_offline_t5_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0,
        bos_token_id=None, eos_token_id=1,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def small_t5_dir(tmp_path_factory) -> Path:
    return save_small_t5(tmp_path_factory.mktemp("small-t5"))


@pytest.fixture(scope="session")
def small_llama_dir(tmp_path_factory) -> Path:
    return save_small_llama(tmp_path_factory.mktemp("small-llama"))


@pytest.fixture(scope="session")
def rte_data(tmp_path_factory) -> Path:
    return write_rte(tmp_path_factory.mktemp("rte-data"))
