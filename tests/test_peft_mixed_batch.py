"""Per-row adapters: every row of a mixed batch equals the same row run alone with its adapter active.

One model per family holds all eight methods and a mixed pair (ULPT prompt + SCAP update) with different
prompt lengths m (and, where the family
pads dynamically, different L), plus ``__base__`` rows; loss, logits and greedy tokens are compared.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    GenerationConfig,
    LogitsProcessorList,
)

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


def test_length_buckets_cut_where_a_call_costs_less_than_its_padding():
    from peft.buckets import length_buckets

    assert length_buckets([10, 100, 12, 98], call_cost=20) == [[0, 2], [1, 3]]
    assert length_buckets([10, 100, 12, 98], call_cost=1000) == [[0, 1, 2, 3]]
    assert length_buckets([7] * 5, call_cost=0) == [[0, 1, 2, 3, 4]]  # no padding to save: one call
    assert length_buckets([5, 6, 50], call_cost=0) == [[0], [1], [2]]
    # 3 rows of 10 and one of 40: one call costs C + 160, two cost 2C + 70, so the cut appears below C = 90
    assert length_buckets([10, 40, 10, 10], call_cost=89) == [[0, 2, 3], [1]]
    assert length_buckets([10, 40, 10, 10], call_cost=91) == [[0, 1, 2, 3]]
    assert length_buckets([]) == []


def _short_and_long_rows(family, tiny_t5_dir, tiny_llama_dir):
    """A model with every method and 6 rows: 3 of 3 tokens, 3 of 40 (padded on the family's side)."""
    auto, path = {
        "seq2seq": (AutoModelForSeq2SeqLM, tiny_t5_dir),
        "causal": (AutoModelForCausalLM, tiny_llama_dir),
    }[family]
    torch.manual_seed(0)
    model = _build(auto.from_pretrained(path).eval(), fixed_length=48)
    names = ["dept", "scpp", "accept", "default", "scap", "__base__"]
    ids = torch.randint(2, 100, (len(names), 40), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    pad = slice(0, 37) if family == "causal" else slice(3, None)
    for row in (0, 2, 3):
        mask[row, pad], ids[row, pad] = 0, 0
    return model, names, ids, mask


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mixed_generation_splits_short_and_long_rows_and_gives_the_same_tokens(
    family, tiny_t5_dir, tiny_llama_dir
):
    """Rows of 3 and 40 tokens run in two groups, each trimmed to its own longest row (T5: the encoder per
    group, one decoder loop; decoder-only: one generation per group), and give the tokens of one call over
    the whole batch (which equal each row alone, tested above)."""
    model, names, ids, mask = _short_and_long_rows(family, tiny_t5_dir, tiny_llama_dir)
    widths: list[int] = []  # the width of every batch the backbone's first layer saw at the first step
    first = model.base_model.get_encoder() if family == "seq2seq" else model.base_model.get_decoder()
    first.register_forward_pre_hook(
        lambda module, args, kwargs: (
            widths.append(kwargs["inputs_embeds"].shape[1])
            if kwargs.get("inputs_embeds") is not None
            else None
        ),
        with_kwargs=True,
    )
    model.generation_call_cost = 32  # one call: 32 + 6 * 46 = 308 positions; two: 64 + 3 * 9 + 3 * 45 = 226
    with torch.no_grad():
        split = model.generate(
            input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=6, do_sample=False
        )
        assert sorted(widths) == [
            3 + 6,
            40 + 5,
        ]  # each group: its inputs and its longest prompt (accept, scpp)
        model.generation_call_cost = float("inf")
        whole = model.generate(
            input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=6, do_sample=False
        )
    assert widths[2:] == [40 + 6]  # one call: everything padded to the longest prompt and input
    assert torch.equal(split, whole)
    if family == "causal":
        assert torch.equal(split[:, :40], ids)  # the input ids first, as transformers returns them


@pytest.mark.parametrize(
    "family, setting",
    [("seq2seq", {"num_return_sequences": 2, "num_beams": 2}), ("causal", {"max_length": 46}),
     ("seq2seq", {"return_dict_in_generate": True}), ("causal", {"return_dict_in_generate": True}),
     ("causal", {"repetition_penalty": 1.5}), ("causal", {"no_repeat_ngram_size": 2}),
     ("causal", {"min_length": 44}), ("causal", {"do_sample": True}), ("causal", {"bad_words_ids": [[0, 7]]}),
     ("causal", {"sequence_bias": {(0, 7): -5.0}}),
     ("causal", {"logits_processor": LogitsProcessorList([lambda tokens, scores: scores])})],
)  # fmt: skip
def test_mixed_generation_stays_one_call_where_groups_would_change_the_output(
    family, setting, tiny_t5_dir, tiny_llama_dir
):
    """Several sequences per row, a dict output, or (decoder-only) a setting that reads the input columns,
    sampling, or a per-call logits processor: one generation call with what one call returns (T5 always
    decodes in one call; its encoder may split)."""
    model, names, ids, mask = _short_and_long_rows(family, tiny_t5_dir, tiny_llama_dir)
    model.generation_call_cost = 0  # would split wherever lengths differ
    calls = []
    base_generate = model.base_model.generate
    model.base_model.generate = lambda *args, **kwargs: calls.append(1) or base_generate(*args, **kwargs)
    extra = {"max_new_tokens": 4} if "max_length" not in setting else {}
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            adapter_names=names,
            **{"do_sample": False, **setting, **extra},
        )
    assert len(calls) == 1
    rows = out.sequences.shape[0] if setting.get("return_dict_in_generate") else out.shape[0]
    assert rows == len(names) * setting.get("num_return_sequences", 1)


@pytest.mark.parametrize("passed", ["keywords", "generation_config"])
@pytest.mark.parametrize("config_pad", [0, None])
def test_groups_that_finish_early_are_padded_as_one_call_pads(
    passed, config_pad, tiny_t5_dir, tiny_llama_dir
):
    """A decoder-only group whose rows all stop at EOS before the others is padded with the pad id that
    generation resolves: the model's pad id under a ``generation_config`` that leaves it unset, and the
    passed EOS where no pad id is configured."""
    model, names, ids, mask = _short_and_long_rows("causal", tiny_t5_dir, tiny_llama_dir)
    with torch.no_grad():
        first = model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=1)
    eos = int(first[0, -1])  # row 0 (dept, 3 tokens) stops after its first token
    model.base_model.generation_config.pad_token_id = config_pad
    settings = {"eos_token_id": eos, "max_new_tokens": 5, "do_sample": False}
    if passed == "generation_config":
        settings = {"generation_config": GenerationConfig(**settings)}
    outputs = []
    with torch.no_grad():
        for cost in (0, float("inf")):  # a group per length, then one call
            model.generation_call_cost = cost
            outputs.append(
                model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, **settings)
            )
    split, whole = outputs
    assert whole[0, 41:].unique().tolist() == [eos if config_pad is None else config_pad]
    assert torch.equal(split, whole)


def test_a_passed_generation_config_keeps_the_models_settings_it_leaves_unset(tiny_t5_dir, tiny_llama_dir):
    """generate fills a passed config's unset values from the model's: a dict output asked for there stays
    one call with a dict output."""
    model, names, ids, mask = _short_and_long_rows("causal", tiny_t5_dir, tiny_llama_dir)
    model.generation_call_cost = 0
    model.base_model.generation_config.return_dict_in_generate = True
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            adapter_names=names,
            generation_config=GenerationConfig(max_new_tokens=3, do_sample=False),
        )
    assert out.sequences.shape == (len(names), ids.shape[1] + 3)


@pytest.mark.parametrize("setting", ["min_length", "prefix_allowed_tokens_fn"])
def test_decoder_only_settings_that_see_the_batch_give_the_tokens_of_one_call(
    setting, tiny_t5_dir, tiny_llama_dir
):
    """``min_length`` counts the input columns a group drops; ``prefix_allowed_tokens_fn`` gets a row's
    index in the call. Either way the tokens of one call over the batch come back."""
    model, names, ids, mask = _short_and_long_rows("causal", tiny_t5_dir, tiny_llama_dir)
    if setting == "min_length":
        with torch.no_grad():
            free = model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=3)
        # one call holds EOS back for 2 new tokens (42 - 40 columns): row 0's third token then ends it
        settings = {"min_length": ids.shape[1] + 2, "eos_token_id": int(free[0, -1])}
    else:
        settings = {"prefix_allowed_tokens_fn": lambda row, tokens: [100 + row]}
    outputs = []
    with torch.no_grad():
        for cost in (0, float("inf")):  # a group per length, then one call
            model.generation_call_cost = cost
            outputs.append(
                model.generate(
                    input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=4, **settings
                )
            )
    assert torch.equal(*outputs)


@pytest.mark.parametrize("output", ["output_attentions", "output_hidden_states"])
def test_seq2seq_attentions_and_hidden_states_are_those_of_one_call(output, tiny_t5_dir, tiny_llama_dir):
    """Encoder attentions and hidden states, and cross-attentions over the whole batch's encoder width,
    come back as one call returns them."""
    model, names, ids, mask = _short_and_long_rows("seq2seq", tiny_t5_dir, tiny_llama_dir)
    model.base_model.set_attn_implementation("eager")  # sdpa returns no attention weights
    outputs = []
    with torch.no_grad():
        for cost in (0, float("inf")):  # a group per length, then one call
            model.generation_call_cost = cost
            settings = {output: True, "return_dict_in_generate": True, "max_new_tokens": 3}
            outputs.append(
                model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, **settings)
            )
    split, whole = outputs
    assert split.keys() == whole.keys()
    for key in whole.keys():
        if key != "cache":
            torch.testing.assert_close(split[key], whole[key], rtol=0, atol=0)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_a_row_without_any_token_gives_what_one_call_gives(family, tiny_t5_dir, tiny_llama_dir):
    """A ``__base__`` row with no input token attends to nothing but padding, so its output depends on
    the width of the call it runs in: a batch holding one runs as one call."""
    model, names, ids, mask = _short_and_long_rows(family, tiny_t5_dir, tiny_llama_dir)
    mask[names.index("__base__")] = 0
    outputs = []
    with torch.no_grad():
        for cost in (32, float("inf")):  # the empty row joins the short rows' group, then one call
            model.generation_call_cost = cost
            outputs.append(
                model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, max_new_tokens=4)
            )
    assert torch.equal(*outputs)


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mixed_generation_without_input_ids_names_them(family, tiny_t5_dir, tiny_llama_dir):
    model, names, ids, mask = _short_and_long_rows(family, tiny_t5_dir, tiny_llama_dir)
    with torch.no_grad(), pytest.raises(ValueError, match="Pass input_ids"):
        model.generate(input_ids=None, attention_mask=mask, adapter_names=names, max_new_tokens=2)


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
