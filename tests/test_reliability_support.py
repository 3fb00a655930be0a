"""Shared helpers of the reliability tests (resume, safe loading, failures, DDP, precision).

The models here are smaller than ``conftest``'s (vocabulary of the offline tokenizer, ~100 ids, instead
of T5's 32k) so that each ``train.main`` run takes seconds on two shared cores; the T5 one has
dropout so that a resumed run only matches when the RNG state is restored too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import build_offline_t5_tokenizer

N_TRAIN, N_VALIDATION = 16, 8  # rte is "small": HF validation is halved into validation (4) / test (4)
L = 16  # --max_seq_length


def write_rte(root: Path, n_train: int = N_TRAIN, n_validation: int = N_VALIDATION) -> Path:
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
    """A T5 with d=16, one encoder and one decoder layer, the offline tokenizer's vocabulary."""
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


def train_argv(model_dir: Path, data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """A DePT run of a few steps: batch 4, no evaluation unless ``extra`` asks for it."""
    return [
        "--model_name_or_path", str(model_dir), "--task_name", "rte", "--data_dir", str(data_dir),
        "--output_dir", str(output_dir), "--max_seq_length", str(L), "--prefix_length", "4", "--r", "2",
        "--learning_rate", "0.3", "--added_embedding_lr", "1e-2", "--weight_decay", "0",
        "--warmup_steps", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4",
        "--logging_steps", "1", "--do_train", "--disable_tqdm", "True", "--report_to", "none",
        "--dataloader_pin_memory", "False", *extra,
    ]  # fmt: skip


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def small_t5_dir(tmp_path_factory) -> Path:
    return save_small_t5(tmp_path_factory.mktemp("small-t5"))


@pytest.fixture(scope="session")
def small_llama_dir(tmp_path_factory) -> Path:
    return save_small_llama(tmp_path_factory.mktemp("small-llama"))


@pytest.fixture(scope="session")
def rte_data(tmp_path_factory) -> Path:
    return write_rte(tmp_path_factory.mktemp("rte-data"))


def test_helpers_write_what_the_loader_reads(rte_data, small_t5_dir):
    """The data rows and the small model's vocabulary fit train.py's loader and tokenizer."""
    from transformers import AutoConfig, AutoTokenizer

    from data.loading import load_task_splits

    splits = load_task_splits("rte", data_dir=rte_data, splits=("train", "validation", "test"))
    assert {name: len(split) for name, split in splits.items()} == {"train": 16, "validation": 4, "test": 4}
    tokenizer = AutoTokenizer.from_pretrained(small_t5_dir)
    ids = tokenizer(splits["train"][0]["source"])["input_ids"]
    assert max(ids) < AutoConfig.from_pretrained(small_t5_dir).vocab_size
