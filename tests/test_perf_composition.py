"""Cost rules of the adapter: composition once per forward (never per example), no copies of the prompt
or update across the batch, no codebook work during a materialised evaluation, and generation that
stops at the task's target length or when every sequence has finished."""

from __future__ import annotations

import contextlib

import datasets
import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import AutoModelForCausalLM, AutoTokenizer

from data.preprocess import PaddingCollator, max_target_length
from peft import PromptTuningConfig, get_peft_model
from peft.family import CAUSAL, SEQ2SEQ, Family
from train import TrainingArguments
from training.trainer import PromptTrainer

L, M, B = 16, 4, 4
ACCEPT = {"scpp": True, "sub_dim_scpp": 8, "codebook_size_scpp": 2, "scap": True, "sub_dim_scap": 8,
          "codebook_size_scap": 2}  # fmt: skip
METHODS = {"DePT": {}, "ACCEPT": ACCEPT}
COPYING_OPS = {"repeat", "repeat_interleave", "tile", "clone", "contiguous", "copy_"}


def _model(backbone, flags: dict):
    torch.manual_seed(0)
    config = PromptTuningConfig(num_virtual_tokens=M, max_length=L, r=2, **flags)
    model = get_peft_model(backbone, config)
    with torch.no_grad():
        for param in model.adapter.parameters():
            param.copy_(torch.randn_like(param))
    return model


def _batch(n: int = 10) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    ids = torch.randint(3, 200, (B, n))
    mask = torch.ones_like(ids)
    mask[1:, n - 3 :] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([[5, 1]] * B)}


@contextlib.contextmanager
def _count_composition(model):
    """Forward calls of the prompt and of the added-update modules (each call composes a matrix)."""
    calls = {"prompt": 0, "added": 0}
    hooks = [
        module.register_forward_hook(lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
        for key, module in (("prompt", model.adapter.prompt), ("added", model.adapter.added))
    ]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


class _Ops(TorchFunctionMode):
    """Records every torch function call (name, args) made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((getattr(func, "__name__", str(func)), args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", list(METHODS))
def test_composition_once_per_forward_and_generate(method, t5_backbone):
    model = _model(t5_backbone, METHODS[method])
    batch = _batch()
    model.train()
    with _count_composition(model) as calls:
        model(**batch).loss.backward()
    assert calls == {"prompt": 1, "added": 1}  # once for the batch of B, not B times
    model.eval()
    with _count_composition(model) as calls, torch.no_grad():
        model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4)
    assert calls == {"prompt": 1, "added": 1}  # the encoder input is built once, not per decoding step


@pytest.mark.parametrize("method", list(METHODS))
def test_prompt_and_update_are_broadcast_not_copied(method, t5_backbone):
    model = _model(t5_backbone, METHODS[method]).eval()
    batch = _batch()
    with model.materialized():
        prompt, added = model.adapter.compose()
        with _Ops() as ops, torch.no_grad():
            model._prepend(batch["input_ids"], batch["attention_mask"], None)
    names = [name for name, _ in ops.calls]
    assert not COPYING_OPS & set(names), names
    (cat_args,) = [
        args for name, args in ops.calls if name == "cat" and args[0][0].shape[-1] == prompt.shape[-1]
    ]
    (batch_prompt,) = [t for t in cat_args[0] if t.shape[1] == M]  # the pieces: [prompt ; words] (+ [CLS] first)
    assert batch_prompt.shape == (B, M, prompt.shape[1])
    assert batch_prompt.stride(0) == 0 and batch_prompt.data_ptr() == prompt.data_ptr()  # an expand view
    adds = [args for name, args in ops.calls if name in ("add", "__add__") and len(args) == 2]
    (operands,) = [a for a in adds if isinstance(a[1], torch.Tensor) and a[1].dim() == 2]
    assert operands[1].shape == (batch["input_ids"].shape[1], added.shape[1])  # rows [:n], broadcast over B
    assert operands[1].data_ptr() == added.data_ptr()  # a slice view of the (L, d) update


def _trainer(model, tokenizer, tmp_path, max_new_tokens: int, family: Family = SEQ2SEQ) -> PromptTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none",
                             disable_tqdm=True, predict_with_generate=True)  # fmt: skip
    return PromptTrainer(model=model, args=args, processing_class=tokenizer,
                         data_collator=PaddingCollator(tokenizer, family), family=family,
                         max_new_tokens=max_new_tokens)  # fmt: skip


def _eval_rows(with_labels: bool) -> datasets.Dataset:
    rows = {
        "input_ids": [[7 + i] * (3 + i) + [1] for i in range(6)],
        "attention_mask": [[1] * (4 + i) for i in range(6)],
    }
    if with_labels:
        rows["labels"] = [[5, 1]] * 6
    return datasets.Dataset.from_dict(rows)


def test_materialised_evaluation_composes_once(t5_backbone, tiny_t5_dir, tmp_path):
    """ACCEPT (SCPP + SCAP); the benchmark's --quick run checks the other methods' evaluation too."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    model = _model(t5_backbone, ACCEPT)
    trainer = _trainer(model, tokenizer, tmp_path, max_new_tokens=3)
    with _count_composition(model) as calls:
        output = trainer.predict(_eval_rows(with_labels=True))
    # 3 batches x (generate + loss forward) would be 6 compositions per side without materialisation
    assert calls == {"prompt": 1, "added": 1}
    assert output.predictions.shape == (6, 3)
    assert model.adapter._cache is None  # the composed copy is dropped after the evaluation
    with _count_composition(model) as calls:
        trainer.predict(_eval_rows(with_labels=True))
    assert calls == {"prompt": 1, "added": 1}  # recomposed for each evaluation (weights may have changed)


@pytest.mark.parametrize("family", [SEQ2SEQ, CAUSAL], ids=str)
@pytest.mark.parametrize(("eos_logit", "steps_per_batch"), [(1e4, 1), (-1e4, 3)])
def test_generation_stops_at_target_length_or_when_all_finished(
    family, eos_logit, steps_per_batch, t5_backbone, tiny_t5_dir, tiny_llama_dir, tmp_path
):
    """Decoder calls per batch: 1 when every sequence emits EOS at once, the task's target length when
    none does (T5's decoder; the decoder-only model's whole stack)."""
    if family is SEQ2SEQ:
        backbone, path, stack = t5_backbone, tiny_t5_dir, t5_backbone.decoder
    else:
        backbone = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
        path, stack = tiny_llama_dir, backbone.model
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = _model(backbone, METHODS["DePT"]).eval()
    trainer = _trainer(model, tokenizer, tmp_path, max_target_length("rte", tokenizer), family)
    eos = backbone.generation_config.eos_token_id

    def force(module, inputs, output):
        output = output.clone()
        output[..., eos] = eos_logit
        return output

    decoder_calls = [0]
    hooks = [backbone.lm_head.register_forward_hook(force),
             stack.register_forward_hook(lambda *_: decoder_calls.__setitem__(0, decoder_calls[0] + 1))]  # fmt: skip
    try:
        output = trainer.predict(_eval_rows(with_labels=False))  # no labels: no loss forward
    finally:
        for hook in hooks:
            hook.remove()
    assert trainer.max_new_tokens == 3 and max_target_length("newsqa", tokenizer) == 20
    assert decoder_calls[0] == 3 * steps_per_batch  # 3 batches of 2
    assert output.predictions.shape == (6, 3)
    first = output.predictions[:, 0]
    assert (first == eos).all() if eos_logit > 0 else (first != eos).all()
