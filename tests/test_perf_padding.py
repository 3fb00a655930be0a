"""Dynamic padding (each batch padded to its longest row, the added update sliced to that length) gives the
same loss and the same greedy generations as the original padding to max_seq_length L.

Rows go through the project's real pipeline: ``tokenize_splits`` (padded to L, or unpadded) and
``PaddingCollator`` (to L, or to the batch's longest row, optionally a multiple of 8).
"""

from __future__ import annotations

import functools

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from data.preprocess import PaddingCollator, tokenize_splits
from peft import PromptTuningConfig, get_peft_model

L = 64
M = 4
SOURCES = [
    "premise: a cat sat on the mat. hypothesis: a cat sat",
    "premise: dogs",
    "premise: the quick fox jumps. hypothesis: foxes jump",
    "hypothesis: rain",
]
TARGETS = ["entailment", "not_entailment", "entailment", "not_entailment"]
METHODS = {
    "PT": {"peft_type": "PROMPT_TUNING"},
    "DePT": {},
    "ACCEPT-SCPP": {"scpp": True, "sub_dim_scpp": 8, "codebook_size_scpp": 3},
    "ACCEPT-SCAP": {"scap": True, "sub_dim_scap": 8, "codebook_size_scap": 3},
    "ACCEPT": {"scpp": True, "sub_dim_scpp": 8, "codebook_size_scpp": 3,
               "scap": True, "sub_dim_scap": 8, "codebook_size_scap": 3},
    "DPT": {"peft_type": "PROMPT_TUNING_DPT"},
    "ULPT": {"peft_type": "PROMPT_TUNING_LODIM", "num_random_proj": 2},
    "ADePT": {"peft_type": "PROMPT_TUNING_LORAX"},
}  # fmt: skip


def _splits() -> datasets.DatasetDict:
    rows = {"source": SOURCES, "target": TARGETS, "label": [0, 1, 0, 1]}
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)})


@functools.cache
def _batches(tokenizer, family: str, multiple: int | None = None) -> tuple[dict, dict]:
    """(fixed batch padded to L, dynamic batch padded to the longest row [rounded to ``multiple``])."""
    target = 4
    fixed_rows = tokenize_splits(_splits(), tokenizer, family, L, target, pad_to_max_length=True)["train"]
    raw_rows = tokenize_splits(_splits(), tokenizer, family, L, target, pad_to_max_length=False)["train"]
    fixed = PaddingCollator(tokenizer, family, max_seq_length=L)(list(fixed_rows))
    dynamic = PaddingCollator(tokenizer, family, pad_to_multiple_of=multiple)(list(raw_rows))
    return fixed, dynamic


def _randomise(model) -> None:
    """Non-zero B (DePT inits B = 0) and large enough updates that a wrong row mapping changes the loss."""
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.adapter.parameters():
            param.copy_(torch.randn_like(param))


def _t5_model(base, flags: dict):
    torch.manual_seed(0)
    model = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=M, max_length=L, r=3, **flags))
    _randomise(model)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_t5_dir):
    return AutoTokenizer.from_pretrained(tiny_t5_dir)


@pytest.mark.parametrize(("method", "multiple"), [(m, None) for m in METHODS] + [("ACCEPT", 8)])
def test_seq2seq_dynamic_equals_fixed_padding(method, multiple, t5_backbone, tokenizer):
    model = _t5_model(t5_backbone, METHODS[method])
    fixed, dynamic = _batches(tokenizer, "seq2seq", multiple)
    n = dynamic["input_ids"].shape[1]
    assert fixed["input_ids"].shape[1] == L and n < L  # the test really shortens the batch
    if multiple:
        assert n % multiple == 0
    with torch.no_grad():
        loss_fixed = model(**fixed).loss
        loss_dynamic = model(**dynamic).loss
        gen_fixed = model.generate(input_ids=fixed["input_ids"], attention_mask=fixed["attention_mask"],
                                   max_new_tokens=4, do_sample=False)  # fmt: skip
        gen_dynamic = model.generate(input_ids=dynamic["input_ids"], attention_mask=dynamic["attention_mask"],
                                     max_new_tokens=4, do_sample=False)  # fmt: skip
        # the update matters: its rows in another order (a tokenwise update: none) give a clearly different loss
        misaligned = None
        if model.adapter.position_wise:
            for param in model.adapter.added.parameters():
                if param.shape[0] == L:  # A (L, r) or the SCAP weights (L, K, C): one row per position
                    param.copy_(param.flip(0))
            misaligned = model(**dynamic).loss
        elif model.adapter.added is not None:
            model.adapter.added.lora_B.zero_()
            model.adapter.added.lora_b.zero_()
            misaligned = model(**dynamic).loss
    torch.testing.assert_close(loss_dynamic, loss_fixed, rtol=1e-5, atol=0)
    assert torch.equal(gen_dynamic, gen_fixed)
    if misaligned is not None:
        assert abs(misaligned / loss_fixed - 1) > 1e-4


def test_update_rows_beyond_the_batch_do_not_matter(t5_backbone, tokenizer):
    """Rows >= the batch length only ever meet padded positions: changing them changes nothing."""
    model = _t5_model(t5_backbone, METHODS["DePT"])
    fixed, dynamic = _batches(tokenizer, "seq2seq")
    n = dynamic["input_ids"].shape[1]
    with torch.no_grad():
        before = model(**fixed).loss
        model.adapter.added.lora_A[n:] += 10.0
        after_fixed, after_dynamic = model(**fixed).loss, model(**dynamic).loss
        model.adapter.added.lora_A[: n // 2] += 10.0
        changed = model(**dynamic).loss
    torch.testing.assert_close(after_fixed, before, rtol=1e-5, atol=0)
    torch.testing.assert_close(after_dynamic, before, rtol=1e-5, atol=0)
    assert abs(changed / before - 1) > 1e-4


@pytest.mark.parametrize("method", ["DePT", "ACCEPT"])
def test_encoder_classifier_dynamic_equals_fixed_padding(method, tiny_bert_dir, tokenizer):
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    torch.manual_seed(0)
    model = get_peft_model(
        base, PromptTuningConfig(num_virtual_tokens=M, max_length=L, r=3, **METHODS[method])
    )
    _randomise(model)
    model.eval()
    fixed, dynamic = _batches(tokenizer, "classifier")
    assert dynamic["input_ids"].shape[1] < L
    with torch.no_grad():
        out_fixed, out_dynamic = model(**fixed), model(**dynamic)
    torch.testing.assert_close(out_dynamic.loss, out_fixed.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(out_dynamic.logits, out_fixed.logits, rtol=1e-5, atol=1e-6)
