"""Dynamic padding for decoder-only models: each batch left-padded to its longest row n <= L, the update's
last n rows and the positions of the original's L-column layout give the same loss, logits and greedy
generations as left-padding every row to L, for PT, DePT and the three ACCEPT variants.

Rows go through the project's real pipeline: ``tokenize_splits`` (padded to L, or unpadded) and
``PaddingCollator`` (to L, or to the batch's longest row, optionally a multiple of 8).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

import train
from data.preprocess import CAUSAL_MARKER, PaddingCollator, max_target_length, tokenize_splits
from peft import PromptTuningConfig, get_peft_model
from train import TrainingArguments
from training.trainer import PromptTrainer

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
    rows = {"source": sources, "target": targets}
    return datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
    )


@functools.cache
def _batches(tokenizer, split: str, multiple: int | None = None, sources: tuple = tuple(SOURCES)):
    """(batch left-padded to L, batch left-padded to its longest row [rounded up to ``multiple``])."""
    splits = _splits(list(sources), TARGETS[: len(sources)])
    fixed_rows = tokenize_splits(splits, tokenizer, "causal", L, 3, pad_to_max_length=True)[split]
    raw_rows = tokenize_splits(splits, tokenizer, "causal", L, 3, pad_to_max_length=False)[split]
    fixed = PaddingCollator(tokenizer, "causal", max_seq_length=L)(list(fixed_rows))
    dynamic = PaddingCollator(tokenizer, "causal", pad_to_multiple_of=multiple)(list(raw_rows))
    return fixed, dynamic


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


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
    """The prompt's and the last n input columns of a fixed-length output: the dynamic batch's columns."""
    return torch.cat([fixed_logits[:, :M], fixed_logits[:, M + L - n :]], dim=1)


def _generate(model, batch: dict) -> torch.Tensor:
    """The new tokens only (what the Trainer scores)."""
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         max_new_tokens=4, do_sample=False)  # fmt: skip
    return out[:, batch["input_ids"].shape[1] :]


@pytest.mark.parametrize(
    ("method", "split", "multiple"),
    [(m, s, None) for m in METHODS for s in ("train", "validation")] + [("ACCEPT", "train", 8)],
)
def test_causal_dynamic_equals_fixed_padding(method, split, multiple, llama, tokenizer):
    """Training rows (prompt + answer, labels on the answer) and evaluation rows (prompt only; labels = the
    target, so the loss is the original's evaluation loss): loss, logits and generations agree."""
    model = _model(llama, METHODS[method])
    fixed, dynamic = _batches(tokenizer, split, multiple)
    n = dynamic["input_ids"].shape[1]
    assert fixed["input_ids"].shape[1] == L and n < L  # the test really shortens the batch (any tokenizer)
    assert n % (multiple or 1) == 0
    with torch.no_grad():
        out_fixed, out_dynamic = model(**fixed), model(**dynamic)
        gen_fixed = _generate(model, fixed)
        gen_dynamic = _generate(model, dynamic)
        with model.materialized():
            gen_materialized = _generate(model, dynamic)
            loss_materialized = model(**dynamic).loss
    torch.testing.assert_close(out_dynamic.loss, out_fixed.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(loss_materialized, out_fixed.loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(out_dynamic.logits, _same_columns(out_fixed.logits, n), rtol=0, atol=1e-5)
    assert torch.equal(gen_dynamic, gen_fixed) and torch.equal(gen_materialized, gen_fixed)


def test_update_rows_and_positions_both_matter(llama, tokenizer, monkeypatch):
    """Each ingredient is needed: the first n rows instead of the last n, or the batch's own positions
    0..m+n-1 instead of the layout's, move the logits by 100x the tolerance above or more."""
    model = _model(llama, METHODS["DePT"])
    fixed, dynamic = _batches(tokenizer, "train")
    n = dynamic["input_ids"].shape[1]
    with torch.no_grad():
        reference = _same_columns(model(**fixed).logits, n)
        with monkeypatch.context() as patch:
            patch.setattr(type(model), "pads_left", property(lambda self: False))  # the update's rows [:n]
            first_rows = model(**dynamic).logits
        with monkeypatch.context() as patch:
            patch.setattr(type(model), "_layout_position_ids", lambda self, *args: None)
            own_positions = model(**dynamic).logits
    assert (first_rows - reference).abs().max() > 1e-3
    assert (own_positions - reference).abs().max() > 1e-3


def test_update_rows_before_the_batch_do_not_matter(llama, tokenizer):
    """Rows < L - n only ever meet left padding: changing them changes neither loss."""
    model = _model(llama, METHODS["DePT"])
    fixed, dynamic = _batches(tokenizer, "train")
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
    padded = tokenize_splits(splits, tokenizer, "causal", L, 3, pad_to_max_length=True)[split][0]
    raw = tokenize_splits(splits, tokenizer, "causal", L, 3, pad_to_max_length=False)[split][0]
    marker = tokenizer(CAUSAL_MARKER, add_special_tokens=False).input_ids
    answer = tokenizer(TARGETS[0], add_special_tokens=False).input_ids
    source = tokenizer(LONG_SOURCE, add_special_tokens=False).input_ids
    tail = marker + answer + [tokenizer.eos_token_id] if split == "train" else marker
    assert raw["input_ids"] == padded["input_ids"] and len(raw["input_ids"]) == L
    assert raw["input_ids"] == source[: L - len(tail)] + tail
    model = _model(llama, METHODS["ACCEPT"])
    fixed, dynamic = _batches(tokenizer, split, sources=sources)
    assert dynamic["input_ids"].shape[1] == L and torch.equal(dynamic["input_ids"], fixed["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**dynamic).loss, model(**fixed).loss, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match=f"exceeds max_length L={L}"):
        model(input_ids=torch.ones(1, L + 1, dtype=torch.long))


def _eval_rows(tokenizer) -> datasets.Dataset:
    return tokenize_splits(_splits(SOURCES + SOURCES[:2], TARGETS + TARGETS[:2]), tokenizer, "causal", L, 3,
                           pad_to_max_length=False)["validation"].remove_columns("labels")  # fmt: skip


@pytest.mark.parametrize(("eos_logit", "steps_per_batch"), [(1e4, 1), (-1e4, 3)])
def test_causal_generation_stops_at_target_length_or_when_all_finished(
    eos_logit, steps_per_batch, llama, tokenizer, tmp_path
):
    """Forward calls per batch: 1 when every row emits EOS at once, the task's target length when none does."""
    model = _model(llama, METHODS["ACCEPT"])
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, predict_with_generate=True,
                             report_to="none")  # fmt: skip
    trainer = PromptTrainer(model=model, args=args, processing_class=tokenizer, family="causal",
                            data_collator=PaddingCollator(tokenizer, "causal"),
                            max_new_tokens=max_target_length("rte", tokenizer))  # fmt: skip
    eos = llama.generation_config.eos_token_id

    def force(module, inputs, output):
        output = output.clone()
        output[..., eos] = eos_logit
        return output

    calls = [0]
    hooks = [llama.lm_head.register_forward_hook(force),
             llama.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))]  # fmt: skip
    try:
        output = trainer.predict(_eval_rows(tokenizer))  # no labels: no loss forward
    finally:
        for hook in hooks:
            hook.remove()
    assert trainer.max_new_tokens == 3
    assert calls[0] == 3 * steps_per_batch  # 3 batches of 2
    assert output.predictions.shape == (6, 3)
    first = output.predictions[:, 0]
    assert (first == eos).all() if eos_logit > 0 else (first != eos).all()


WORDS = "the cat sat on a mat while dogs ran far away from every noisy town".split()


@pytest.fixture(scope="module")
def rte_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "rte").mkdir()
    for split, n, offset in (("train", 8, 0), ("validation", 12, 100)):
        rows = [
            {"sentence1": " ".join(WORDS[: 1 + (i * 7) % 8]), "sentence2": WORDS[i % len(WORDS)],
             "label": i % 2, "idx": i}
            for i in range(offset, offset + n)
        ]  # fmt: skip
        (root / "rte" / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


@pytest.mark.slow
def test_train_py_dynamic_grouped_llama_matches_fixed_padding(tiny_llama_dir, rte_dir, tmp_path, monkeypatch):
    """One batch = the whole training set, so length grouping only reorders rows within it: the ACCEPT run
    with --pad_to_max_length False --group_by_length must reproduce the fixed-padding run's numbers."""
    lengths: list[int] = []

    class Recording(PaddingCollator):
        def __call__(self, features):
            batch = super().__call__(features)
            lengths.append(batch["input_ids"].shape[1])
            return batch

    monkeypatch.setattr(train, "PaddingCollator", Recording)
    argv = [
        "--model_name_or_path", str(tiny_llama_dir), "--task_name", "rte", "--data_dir", str(rte_dir),
        "--max_seq_length", "56", "--prefix_length", "4", "--scpp", "True", "--sub_dim_scpp", "8",
        "--codebook_size_scpp", "2", "--scap", "True", "--sub_dim_scap", "8", "--codebook_size_scap", "2",
        "--learning_rate", "0.3", "--added_embedding_lr", "1e-2", "--weight_decay", "0", "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4", "--eval_strategy", "no",
        "--save_strategy", "no", "--do_train", "--do_eval", "--do_predict", "--disable_tqdm", "True",
        "--report_to", "none", "--seed", "7",
    ]  # fmt: skip
    fixed, dynamic = tmp_path / "fixed", tmp_path / "dynamic"
    assert train.main([*argv, "--output_dir", str(fixed)]) == 0
    assert set(lengths) == {56}
    lengths.clear()
    assert (
        train.main([*argv, "--output_dir", str(dynamic), "--pad_to_max_length", "False", "--group_by_length"])
        == 0
    )
    assert max(lengths) < 56  # shorter than L with the real T5 tokenizer and the letter-level offline one
    a = json.loads((fixed / "all_results.json").read_text())
    b = json.loads((dynamic / "all_results.json").read_text())
    for key in ("train_loss", "eval_loss", "test_loss"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert b["eval_accuracy"] == a["eval_accuracy"]
    for name in ("predictions_eval.jsonl", "predictions_test.jsonl"):
        assert (dynamic / name).read_text() == (fixed / name).read_text()
