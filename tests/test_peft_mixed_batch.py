"""Per-row adapters: every row of a mixed batch equals the same row run alone with its adapter active.

One model per family holds all eight methods and a mixed pair (ULPT prompt + SCAP update) with different
prompt lengths m (and, where the family
pads dynamically, different L), plus ``__base__`` rows; loss, logits and greedy tokens are compared.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from peft import PromptTuningConfig, get_peft_model

TOL = 1e-5
N = 9  # input length of the seq2seq / classifier batches (dynamic padding: below every L)
CAUSAL_L = 10  # one L for the causal adapters: rows are left-padded to L, or dynamically to n < L
METHODS = {  # name -> (config fields, m, L)
    "default": (dict(peft_type="PROMPT_TUNING"), 3, 12),
    "dept": (dict(r=2), 4, 14),
    "scpp": (dict(scpp=True), 5, 11),
    "scap": (dict(scap=True), 2, 16),
    "accept": (dict(scpp=True, scap=True), 6, 13),
    "dpt": (dict(peft_type="PROMPT_TUNING_DPT"), 3, 12),
    "ulpt": (dict(peft_type="PROMPT_TUNING_LODIM", num_random_proj=2), 4, 15),
    "adept": (dict(peft_type="PROMPT_TUNING_LORAX"), 5, 10),
    "ulpt_scap": (dict(prompt_kind="random_projection", update_kind="codebook"), 2, 13),
}
ROWS = [
    "default", "dept", "__base__", "scpp", "scap", "accept", "dept", "default", "dpt", "ulpt", "adept", "ulpt_scap",
]  # fmt: skip


def _cfg(fields, m, length) -> PromptTuningConfig:
    base = dict(
        num_virtual_tokens=m, max_length=length, r=3, sub_dim_scpp=8, codebook_size_scpp=2, sub_dim_scap=16,
        lodim_r=3,
    )  # fmt: skip
    return PromptTuningConfig(**{**base, **fields})


def _build(base, fixed_length=None):
    model = None
    for name, (fields, m, length) in METHODS.items():
        config = _cfg(fields, m, fixed_length or length)
        if model is None:
            model = get_peft_model(base, config)
        else:
            model.add_adapter(name, config)
        with torch.no_grad():
            for p in model.named_adapter_tensors(name).values():
                p.normal_(0, 0.5)
    return model.eval()


def _alone(model, name, fn):
    """Run ``fn`` with ``name`` active (``__base__``: adapters disabled)."""
    if name == "__base__":
        with model.disable_adapter():
            return fn()
    model.set_adapter(name)
    try:
        return fn()
    finally:
        model.set_adapter("default")


def _right_padded_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 100, (len(ROWS), N), generator=g)
    mask = torch.ones_like(ids)
    for row in range(len(ROWS)):
        cut = row % 4
        if cut:
            mask[row, -cut:] = 0
            ids[row, -cut:] = 0
    return ids, mask


def _check_tokens(mixed, alone, pad_id):
    assert torch.equal(mixed[: alone.shape[0]], alone)
    assert bool((mixed[alone.shape[0] :] == pad_id).all())


def _compare_with_rows_alone(model, ids, mask, labels, new_tokens: int, shifted_labels: bool):
    """Runs the mixed batch and every row alone with its adapter: checks each row's greedy tokens and returns
    (mixed output, largest logit difference, token-weighted mean of the rows' own losses).

    Rows end together (decoder-only rows are padded in front), so each row's logits are compared over the
    last positions it has alone; ``shifted_labels``: the first label is never scored (next-token loss).
    """
    mixed = model(input_ids=ids, attention_mask=mask, labels=labels, adapter_names=ROWS)
    gen = model.generate(
        input_ids=ids, attention_mask=mask, adapter_names=ROWS, max_new_tokens=new_tokens, do_sample=False
    )
    weighted, tokens, worst = 0.0, 0, 0.0
    for row, name in enumerate(ROWS):
        sl = slice(row, row + 1)
        alone = _alone(
            model, name, lambda sl=sl: model(input_ids=ids[sl], attention_mask=mask[sl], labels=labels[sl])
        )
        length = alone.logits.shape[1]
        worst = max(worst, (mixed.logits[row, -length:] - alone.logits[0]).abs().max().item())
        count = int((labels[row, 1:] != -100).sum()) if shifted_labels else int((labels[row] != -100).sum())
        weighted, tokens = weighted + alone.loss.item() * count, tokens + count
        alone_gen = _alone(
            model,
            name,
            lambda sl=sl: model.generate(
                input_ids=ids[sl], attention_mask=mask[sl], max_new_tokens=new_tokens, do_sample=False
            ),
        )
        _check_tokens(gen[row], alone_gen[0], model.base_model.config.pad_token_id)
    return mixed, worst, weighted / tokens


def test_seq2seq_mixed_batch_matches_rows_alone(tiny_t5_dir):
    torch.manual_seed(0)
    model = _build(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval())
    ids, mask = _right_padded_batch()
    labels = torch.randint(2, 100, (len(ROWS), 3))
    labels[1, -1] = -100
    with torch.no_grad():
        mixed, worst, mean_loss = _compare_with_rows_alone(model, ids, mask, labels, 5, shifted_labels=False)
        with model.materialized():
            again = model(input_ids=ids, attention_mask=mask, labels=labels, adapter_names=ROWS)
    assert worst <= TOL
    assert abs(mixed.loss.item() - mean_loss) <= TOL
    assert torch.equal(again.logits, mixed.logits)


@pytest.mark.parametrize("n", [CAUSAL_L, CAUSAL_L - 3], ids=["padded-to-L", "dynamic"])
def test_causal_mixed_batch_matches_rows_alone(tiny_llama_dir, n):
    torch.manual_seed(0)
    model = _build(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), fixed_length=CAUSAL_L)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 100, (len(ROWS), n), generator=g)
    mask = torch.ones_like(ids)
    for row in range(len(ROWS)):  # left padding, 1..4 positions
        pad = 1 + row % 4
        mask[row, :pad] = 0
        ids[row, :pad] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : n // 2] = -100  # score only the second half, as for a source/target row
    longest = max(m for _, m, _ in METHODS.values())
    with torch.no_grad():
        mixed, worst, mean_loss = _compare_with_rows_alone(model, ids, mask, labels, 4, shifted_labels=True)
    assert mixed.logits.shape[1] == longest + n
    assert worst <= TOL
    assert abs(mixed.loss.item() - mean_loss) <= TOL


def test_classifier_mixed_batch_matches_rows_alone(tiny_bert_dir):
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    model = _build(base)
    ids, mask = _right_padded_batch(seed=2)
    token_types = torch.zeros_like(ids)
    token_types[:, 4:] = 1
    labels = torch.tensor([0, 1, 1, 0, -100, 1, 0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        mixed = model(
            input_ids=ids, attention_mask=mask, token_type_ids=token_types, labels=labels, adapter_names=ROWS
        )
        weighted, counted, worst = 0.0, 0, 0.0
        for row, name in enumerate(ROWS):
            sl = slice(row, row + 1)
            alone = _alone(
                model,
                name,
                lambda sl=sl: model(
                    input_ids=ids[sl],
                    attention_mask=mask[sl],
                    token_type_ids=token_types[sl],
                    labels=labels[sl],
                ),
            )
            worst = max(worst, (mixed.logits[row] - alone.logits[0]).abs().max().item())
            if labels[row] != -100:
                weighted, counted = weighted + alone.loss.item(), counted + 1
    assert worst <= TOL
    assert abs(mixed.loss.item() - weighted / counted) <= TOL
    # heads differ per adapter: the same row gives different logits under different adapters
    assert not torch.allclose(mixed.logits[0], mixed.logits[1])


def test_materialized_composes_each_adapter_once(tiny_t5_dir):
    """Prompts and position-wise updates are composed on entry only (a tokenwise update runs per call: it
    is a function of the input)."""
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    model = _build(base)
    calls: list[str] = []
    for name in METHODS:
        module = model.adapter_module(name)
        for part in (module.prompt, module.added if module.position_wise else None):
            if part is not None:
                part.register_forward_hook(lambda *a, name=name: calls.append(name))
    ids, mask = _right_padded_batch()
    with torch.no_grad(), model.materialized():
        composed = sorted(calls)
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2], adapter_names=ROWS)
        model.generate(input_ids=ids, attention_mask=mask, adapter_names=ROWS, max_new_tokens=3)
    assert sorted(calls) == composed  # nothing composed while running
    expected = ["default", "dept", "dept", "scpp", "scpp", "scap", "scap", "accept", "accept", "dpt", "ulpt", "adept"]
    assert composed == sorted([*expected, "ulpt_scap", "ulpt_scap"])
    calls.clear()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2], adapter_names=ROWS)
    assert sorted(calls) == composed  # without materialisation: once per adapter per call


@pytest.mark.parametrize("bad", [["dept"] * 7 + ["x"], ["dept"] * 3])
def test_bad_adapter_names_fail_before_running(tiny_t5_dir, bad):
    model = _build(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir))
    ids, mask = _right_padded_batch()
    with pytest.raises(ValueError, match="adapter_names"):
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2], adapter_names=bad)


@pytest.mark.parametrize("family", ["seq2seq", "causal", "classifier"])
def test_rows_of_a_shorter_adapter_fit_a_longer_batch(family, tiny_t5_dir, tiny_llama_dir, tiny_bert_dir):
    """A batch padded to 9 holds rows of an L = 6 adapter whose extra columns are padding."""
    auto, path = {
        "seq2seq": (AutoModelForSeq2SeqLM, tiny_t5_dir),
        "causal": (AutoModelForCausalLM, tiny_llama_dir),
        "classifier": (AutoModelForSequenceClassification, tiny_bert_dir),
    }[family]
    torch.manual_seed(0)
    base = auto.from_pretrained(path).eval()
    model = get_peft_model(base, _cfg(dict(scap=True), 3, 9))
    model.add_adapter("short", _cfg(dict(r=2), 5, 6))
    with torch.no_grad():
        for name in ("default", "short"):
            for p in model.named_adapter_tensors(name).values():
                p.normal_(0, 0.5)
    ids = torch.randint(2, 100, (3, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    short_cols = slice(3, None) if family == "causal" else slice(0, 6)
    pad_cols = slice(0, 3) if family == "causal" else slice(6, None)
    mask[1:, pad_cols] = 0
    ids[1:, pad_cols] = 0
    names = ["default", "short", "short"]
    extra = {"decoder_input_ids": ids[:, :2]} if family == "seq2seq" else {}
    with torch.no_grad():
        mixed = model(input_ids=ids, attention_mask=mask, adapter_names=names, **extra).logits
        model.set_adapter("short")
        alone = model(
            input_ids=ids[1:, short_cols],
            attention_mask=mask[1:, short_cols],
            **{k: v[1:] for k, v in extra.items()},
        ).logits
    got = mixed[1:, -alone.shape[1] :] if family == "causal" else mixed[1:]
    torch.testing.assert_close(got, alone, rtol=0, atol=TOL)
    mask[1, pad_cols] = 1  # a real token beyond L = 6: refused with the length message
    model.set_adapter("default")
    with pytest.raises(ValueError, match="L=6"):
        model(input_ids=ids, attention_mask=mask, adapter_names=names, **extra)


def _generating_model(family, tiny_t5_dir, tiny_llama_dir):
    auto, path = {
        "seq2seq": (AutoModelForSeq2SeqLM, tiny_t5_dir),
        "causal": (AutoModelForCausalLM, tiny_llama_dir),
    }[family]
    return _build(auto.from_pretrained(path).eval(), fixed_length=CAUSAL_L)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mixed_generation_without_input_ids_names_them(family, tiny_t5_dir, tiny_llama_dir):
    model = _generating_model(family, tiny_t5_dir, tiny_llama_dir)
    ids, mask = _right_padded_batch()
    with torch.no_grad(), pytest.raises(ValueError, match="Pass input_ids"):
        model.generate(input_ids=None, attention_mask=mask, adapter_names=ROWS, max_new_tokens=2)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
@pytest.mark.parametrize("setting", [{}, {"do_sample": True}, {"num_beams": 2, "num_return_sequences": 2}])
def test_mixed_generation_is_one_call(family, setting, tiny_t5_dir, tiny_llama_dir):
    """Whatever the settings, a mixed batch reaches the backbone's ``generate`` once, with every row."""
    model = _generating_model(family, tiny_t5_dir, tiny_llama_dir)
    ids, mask = _right_padded_batch()
    calls = []
    base_generate = model.base_model.generate
    model.base_model.generate = lambda *args, **kwargs: calls.append(1) or base_generate(*args, **kwargs)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, adapter_names=ROWS, max_new_tokens=3, **setting
        )
    assert len(calls) == 1
    assert out.shape[0] == len(ROWS) * setting.get("num_return_sequences", 1)


@pytest.mark.parametrize("setting", [{"num_beams": 3}, {"num_beams": 2, "num_return_sequences": 2}])
def test_causal_beam_search_gets_the_prompt_on_every_beam(tiny_llama_dir, setting):
    """Beams repeat each row before the first step: every copy gets the row's prompt and update, as when
    transformers is given the same input embeddings itself."""
    torch.manual_seed(0)
    model = _build(AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval(), fixed_length=CAUSAL_L)
    model.set_adapter("accept")
    ids = torch.randint(2, 100, (2, CAUSAL_L), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :3], ids[1, :3] = 0, 0
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False, **setting)
        embeds, full_mask, _ = model._decoder_inputs(ids, mask, None, None)
        reference = model.base_model.generate(
            inputs_embeds=embeds, attention_mask=full_mask, max_new_tokens=4, do_sample=False, **setting
        )
    assert out.shape[0] == 2 * setting.get("num_return_sequences", 1)
    assert torch.equal(out[:, CAUSAL_L:], reference)
