"""Dynamic padding (each batch padded to its longest row, the added update sliced to that length) gives the
same loss, logits and greedy generations as the original padding to max_seq_length L, for PT, DePT and
the three ACCEPT variants, in every family.

T5 and encoder classifiers pad on the right and meet the update's first n rows. Decoder-only batches are
left-padded to their longest row n <= L: they meet the update's last n rows and get the positions of the
original's L-column layout. Rows go through the project's real pipeline: ``tokenize_splits`` (padded to
L, or unpadded) and ``PaddingCollator`` (to L, or to the batch's longest row, optionally a multiple of 8).
"""

from __future__ import annotations

import functools

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaForCausalLM

from data.preprocess import CAUSAL_MARKER, PaddingCollator, tokenize_splits
from peft import PromptTuningConfig, get_peft_model, inputs
from peft.encoders import PromptAdapter
from peft.family import CAUSAL, CLASSIFIER, SEQ2SEQ, Family, new_tokens

L = 64
M = 4
SOURCES = [
    "premise: a cat sat on the mat. hypothesis: a cat sat",
    "premise: dogs",
    "premise: the quick fox jumps. hypothesis: foxes jump",
    "hypothesis: rain",
]
TARGETS = ["0", "1", "0", "1"]
LONG_SOURCE = "premise: " + " ".join(["the cat sat on the mat"] * 30)  # far more than L tokens
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


def _splits(sources: list[str], targets: list[str]) -> datasets.DatasetDict:
    rows = {"source": sources, "target": targets, "label": [int(t) for t in targets]}
    return datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    )


@functools.cache
def _batches(tokenizer, family: Family, split: str = "train", multiple: int | None = None,
             sources: tuple = tuple(SOURCES)) -> tuple[dict, dict]:  # fmt: skip
    """(batch padded to L, batch padded to its longest row [rounded up to ``multiple``])."""
    splits = _splits(list(sources), TARGETS[: len(sources)])
    fixed_rows = tokenize_splits(splits, tokenizer, family, L, 3, pad_to_max_length=True)[split]
    raw_rows = tokenize_splits(splits, tokenizer, family, L, 3, pad_to_max_length=False)[split]
    fixed = PaddingCollator(tokenizer, family, max_seq_length=L)(list(fixed_rows))
    dynamic = PaddingCollator(tokenizer, family, pad_to_multiple_of=multiple)(list(raw_rows))
    return fixed, dynamic


@pytest.fixture(scope="module")
def tokenizer(tiny_t5_dir):
    return AutoTokenizer.from_pretrained(tiny_t5_dir)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    """One frozen backbone shared by the wrappers (wrapping does not change its weights).

    Queries and keys are scaled up: at the random init (std 0.02) every attention row is nearly uniform,
    so positions would hardly matter and a wrong position layout could pass unnoticed.
    """
    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(20.0)
            layer.self_attn.k_proj.weight.mul_(20.0)
    return model


def _model(base, flags: dict):
    """Adapter with every tensor random (DePT's B = 0 init would hide a wrong row mapping)."""
    torch.manual_seed(0)
    model = get_peft_model(base, PromptTuningConfig(num_virtual_tokens=M, max_length=L, r=3, **flags))
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.adapter.parameters():
            param.copy_(torch.randn_like(param))
    return model.eval()


def _same_columns(fixed_logits: torch.Tensor, n: int) -> torch.Tensor:
    """The prompt's and the last n input columns of a decoder-only fixed-length output: the dynamic batch's."""
    return torch.cat([fixed_logits[:, :M], fixed_logits[:, M + L - n :]], dim=1)


def _generate(model, batch: dict) -> torch.Tensor:
    """The new tokens only (what the Trainer scores)."""
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         max_new_tokens=4, do_sample=False)  # fmt: skip
    return new_tokens(out, batch["input_ids"], model.family)


@pytest.mark.parametrize(
    ("family", "method", "split", "multiple"),
    [(SEQ2SEQ, m, "train", None) for m in METHODS] + [(SEQ2SEQ, "ACCEPT", "train", 8)]
    + [(CAUSAL, m, s, None) for m in METHODS for s in ("train", "validation")] + [(CAUSAL, "ACCEPT", "train", 8)],
    ids=str,
)  # fmt: skip
def test_dynamic_equals_fixed_padding(family, method, split, multiple, t5_backbone, llama, tokenizer):
    """Training rows and (decoder-only) evaluation rows, whose labels are the target so that the loss is the
    original's evaluation loss: loss, logits and generations agree, also materialised; the update's rows
    matter (in another order they give a clearly different loss)."""
    model = _model(t5_backbone if family is SEQ2SEQ else llama, METHODS[method])
    fixed, dynamic = _batches(tokenizer, family, split, multiple)
    n = dynamic["input_ids"].shape[1]
    assert fixed["input_ids"].shape[1] == L and n < L  # the test really shortens the batch (any tokenizer)
    assert n % (multiple or 1) == 0
    with torch.no_grad():
        out_fixed, out_dynamic = model(**fixed), model(**dynamic)
        gen_fixed, gen_dynamic = _generate(model, fixed), _generate(model, dynamic)
        with model.materialized():
            gen_materialized = _generate(model, dynamic)
            loss_materialized = model(**dynamic).loss
        misaligned = None  # a tokenwise update has no rows: removing it must change the loss
        if model.adapter.position_wise:
            for param in model.adapter.added.parameters():
                if param.shape[0] == L:  # A (L, r) or the SCAP weights (L, K, C): one row per position
                    param.copy_(param.flip(0))
            misaligned = model(**dynamic).loss
        elif model.adapter.added is not None:
            model.adapter.added.lora_B.zero_()
            model.adapter.added.lora_b.zero_()
            misaligned = model(**dynamic).loss
    if family is CAUSAL:
        fixed_logits, dynamic_logits = _same_columns(out_fixed.logits, n), out_dynamic.logits
    else:  # the decoder positions both batches have (labels padded to a multiple add masked ones)
        width = min(out_fixed.logits.shape[1], out_dynamic.logits.shape[1])
        fixed_logits, dynamic_logits = out_fixed.logits[:, :width], out_dynamic.logits[:, :width]
    torch.testing.assert_close(out_dynamic.loss, out_fixed.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_materialized, out_fixed.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(dynamic_logits, fixed_logits, rtol=0, atol=1e-5)
    assert torch.equal(gen_dynamic, gen_fixed) and torch.equal(gen_materialized, gen_fixed)
    if misaligned is not None:
        assert abs(misaligned / out_fixed.loss - 1) > 1e-4


def test_update_rows_beyond_the_batch_do_not_matter(t5_backbone, tokenizer):
    """Rows >= the batch length only ever meet padded positions: changing them changes nothing."""
    model = _model(t5_backbone, METHODS["DePT"])
    fixed, dynamic = _batches(tokenizer, SEQ2SEQ)
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
    model = _model(base, METHODS[method])
    fixed, dynamic = _batches(tokenizer, CLASSIFIER)
    assert dynamic["input_ids"].shape[1] < L
    with torch.no_grad():
        out_fixed, out_dynamic = model(**fixed), model(**dynamic)
    torch.testing.assert_close(out_dynamic.loss, out_fixed.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(out_dynamic.logits, out_fixed.logits, rtol=1e-5, atol=1e-6)


def test_update_rows_and_positions_both_matter(llama, tokenizer, monkeypatch):
    """Each ingredient is needed: the first n rows instead of the last n, or the batch's own positions
    0..m+n-1 instead of the layout's, move the logits by 100x the tolerance above or more."""
    model = _model(llama, METHODS["DePT"])
    fixed, dynamic = _batches(tokenizer, CAUSAL)
    n = dynamic["input_ids"].shape[1]
    with torch.no_grad():
        reference = _same_columns(model(**fixed).logits, n)
        with monkeypatch.context() as patch:
            add_update = PromptAdapter.add_update
            patch.setattr(
                PromptAdapter, "add_update", lambda self, embeds, from_end: add_update(self, embeds, False)
            )
            first_rows = model(**dynamic).logits
        with monkeypatch.context() as patch:
            patch.setattr(inputs, "layout_position_ids", lambda *args: None)
            own_positions = model(**dynamic).logits
    assert (first_rows - reference).abs().max() > 1e-3
    assert (own_positions - reference).abs().max() > 1e-3


def test_update_rows_before_the_batch_do_not_matter(llama, tokenizer):
    """Rows < L - n only ever meet left padding: changing them changes neither loss."""
    model = _model(llama, METHODS["DePT"])
    fixed, dynamic = _batches(tokenizer, CAUSAL)
    n = dynamic["input_ids"].shape[1]
    with torch.no_grad():
        before = model(**fixed).loss
        model.adapter.added.lora_A[: L - n] += 10.0
        after_fixed, after_dynamic = model(**fixed).loss, model(**dynamic).loss
    torch.testing.assert_close(after_fixed, before, rtol=1e-5, atol=0)
    torch.testing.assert_close(after_dynamic, before, rtol=1e-5, atol=0)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_over_long_example_is_cut_to_l_the_same_way(split, llama, tokenizer):
    """An example longer than L is cut to exactly L tokens at tokenisation, before any padding: the source
    is shortened, the marker and the answer are kept (the fixed-length rule, see data/preprocess.py), so
    the unpadded row is the padded row and a batch holding it has L columns either way."""
    sources = (LONG_SOURCE, SOURCES[1])
    splits = _splits(list(sources), TARGETS[:2])
    padded = tokenize_splits(splits, tokenizer, CAUSAL, L, 3, pad_to_max_length=True)[split][0]
    raw = tokenize_splits(splits, tokenizer, CAUSAL, L, 3, pad_to_max_length=False)[split][0]
    marker = tokenizer(CAUSAL_MARKER, add_special_tokens=False).input_ids
    answer = tokenizer(TARGETS[0], add_special_tokens=False).input_ids
    source = tokenizer(LONG_SOURCE, add_special_tokens=False).input_ids
    tail = marker + answer + [tokenizer.eos_token_id] if split == "train" else marker
    assert raw["input_ids"] == padded["input_ids"] and len(raw["input_ids"]) == L
    assert raw["input_ids"] == source[: L - len(tail)] + tail
    model = _model(llama, METHODS["ACCEPT"])
    fixed, dynamic = _batches(tokenizer, CAUSAL, split, sources=sources)
    assert dynamic["input_ids"].shape[1] == L and torch.equal(dynamic["input_ids"], fixed["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**dynamic).loss, model(**fixed).loss, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match=f"exceeds max_length L={L}"):
        model(input_ids=torch.ones(1, L + 1, dtype=torch.long))
