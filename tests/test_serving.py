"""The batch former of peft/serving.py: requests of similar length share a call, and every request gets
the tokens it gets in one call over all requests and alone with its adapter."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from peft import PromptTuningConfig, get_peft_model
from peft.family import new_tokens
from peft.serving import form_batches, generate_in_batches, request_lengths

ADAPTERS = {  # name -> (config fields, m)
    "default": (dict(peft_type="PROMPT_TUNING"), 3),
    "dept": (dict(r=2), 4),
    "scpp": (dict(scpp=True), 5),
    "accept": (dict(scpp=True, scap=True), 6),
}
NAMES = ["dept", "scpp", "accept", "default", "accept", "__base__"]
SHORT_ROWS = (0, 2, 3)  # 3 tokens each; the other rows have 40


def test_form_batches_cut_where_a_call_costs_less_than_its_padding():
    assert form_batches([10, 100, 12, 98], call_cost=20) == [[0, 2], [1, 3]]
    assert form_batches([10, 100, 12, 98], call_cost=1000) == [[0, 1, 2, 3]]
    assert form_batches([7] * 5, call_cost=0) == [[0, 1, 2, 3, 4]]  # no padding to save: one call
    assert form_batches([5, 6, 50], call_cost=0) == [[0], [1], [2]]
    # 3 rows of 10 and one of 40: one call costs C + 160, two cost 2C + 70, so the cut appears below C = 90
    assert form_batches([10, 40, 10, 10], call_cost=89) == [[0, 2, 3], [1]]
    assert form_batches([10, 40, 10, 10], call_cost=91) == [[0, 1, 2, 3]]
    assert form_batches([]) == []


def test_form_batches_keep_to_the_largest_batch():
    # free calls would give one batch per length; the cap alone cuts five equal rows into 2 + 3 (fewest
    # positions: any cut of equal rows costs the same, the cheapest has the fewest calls)
    assert form_batches([4] * 5, call_cost=1, max_batch_size=3) == [[0, 1], [2, 3, 4]]
    assert all(len(b) <= 2 for b in form_batches([9, 1, 5, 3, 7], call_cost=1000, max_batch_size=2))
    with pytest.raises(ValueError, match="max_batch_size"):
        form_batches([1], max_batch_size=0)


def _served_model(family, tiny_t5_dir, tiny_llama_dir):
    """Four adapters with different m on one backbone, and 6 rows: 3 of 3 tokens, 3 of 40."""
    auto, path = {
        "seq2seq": (AutoModelForSeq2SeqLM, tiny_t5_dir),
        "causal": (AutoModelForCausalLM, tiny_llama_dir),
    }[family]
    torch.manual_seed(0)
    base = auto.from_pretrained(path).eval()
    model = None
    for name, (fields, m) in ADAPTERS.items():
        config = PromptTuningConfig(num_virtual_tokens=m, max_length=48, sub_dim_scpp=8, codebook_size_scpp=2,
                                    sub_dim_scap=16, **{"r": 3, **fields})  # fmt: skip
        if model is None:
            model = get_peft_model(base, config)
        else:
            model.add_adapter(name, config)
        with torch.no_grad():
            for p in model.named_adapter_tensors(name).values():
                p.normal_(0, 0.5)
    ids = torch.randint(2, 100, (len(NAMES), 40), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    pad = slice(0, 37) if family == "causal" else slice(3, None)
    for row in SHORT_ROWS:
        mask[row, pad], ids[row, pad] = 0, 0
    return model.eval(), ids, mask


def _alone(model, ids, mask, row, **settings):
    name = NAMES[row]
    sl = slice(row, row + 1)
    if name == "__base__":
        with model.disable_adapter():
            return model.generate(input_ids=ids[sl], attention_mask=mask[sl], **settings)
    model.set_adapter(name)
    try:
        return model.generate(input_ids=ids[sl], attention_mask=mask[sl], **settings)
    finally:
        model.set_adapter("default")


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_grouped_serving_equals_one_call_and_each_row_alone(family, tiny_t5_dir, tiny_llama_dir):
    """Rows of 3 and 40 tokens run as two calls, each cut to its own longest row, and every row gets the
    tokens of one call over all rows, which are those of the row alone."""
    model, ids, mask = _served_model(family, tiny_t5_dir, tiny_llama_dir)
    lengths = request_lengths(model, mask.sum(dim=1).tolist(), NAMES)
    assert lengths == [7, 45, 9, 6, 46, 40]
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
    settings = {"max_new_tokens": 6, "do_sample": False}
    with torch.no_grad():
        # one call: 32 + 6 * 46 = 308 positions; two: 64 + 3 * 9 + 3 * 46 = 229
        grouped = generate_in_batches(model, ids, mask, NAMES, call_cost=32, **settings)
        assert sorted(widths) == [3 + 6, 40 + 6]  # each call: its inputs and its longest prompt
        widths.clear()
        whole = generate_in_batches(model, ids, mask, NAMES, call_cost=float("inf"), **settings)
        assert widths == [40 + 6]
        one_call = new_tokens(
            model.generate(input_ids=ids, attention_mask=mask, adapter_names=NAMES, **settings),
            ids,
            model.family,
        )
        alone = [new_tokens(_alone(model, ids, mask, row, **settings), ids[row : row + 1], model.family)[0]
                 for row in range(len(NAMES))]  # fmt: skip
    pad_id = model.base_model.config.pad_token_id
    for row in range(len(NAMES)):
        assert torch.equal(whole[row], one_call[row])
        for tokens in (grouped[row], one_call[row]):  # a row that ended early is padded to its call's end
            k = alone[row].shape[0]
            assert torch.equal(tokens[:k], alone[row]) and bool((tokens[k:] == pad_id).all())
