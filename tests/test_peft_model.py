"""Wrappers: input construction, equivalences between methods, gradients, counts, generation, errors."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    BertConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from peft import (
    FAMILIES,
    PeftModelForCausalLM,
    PeftModelForSeq2SeqLM,
    PeftModelForSequenceClassification,
    PromptTuningConfig,
    detect_family,
    get_family,
    get_peft_model,
    wrapper_for,
)
from peft.codebook import compose
from peft.family import family_for_task_type

M, L = 4, 12


def _cfg(**kw) -> PromptTuningConfig:
    base = dict(
        num_virtual_tokens=M, max_length=L, r=3, sub_dim_scpp=8, codebook_size_scpp=2, sub_dim_scap=16
    )
    base.update(kw)
    return PromptTuningConfig(**base)


def _batch(n=L, batch=2, vocab=200, seed=0, left_pad=False):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch, n), generator=g)
    mask = torch.ones(batch, n, dtype=torch.long)
    if left_pad:
        mask[1, :3] = 0
        ids[1, :3] = 0
    else:
        mask[1, -3:] = 0
        ids[1, -3:] = 0
    return ids, mask


def _nonzero_b(model):
    with torch.no_grad():
        for p in model.added_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.5)


@pytest.fixture()
def t5(tiny_t5_dir):
    torch.manual_seed(0)
    return AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()


@pytest.fixture()
def llama(tiny_llama_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()


@pytest.fixture()
def bert(tiny_bert_dir):
    return AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()


def test_family_detection(t5, llama, bert):
    assert detect_family(t5.config).name == "seq2seq"
    assert detect_family(llama.config).name == "causal"
    assert detect_family(bert.config).name == "classifier"
    bare = LlamaConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, vocab_size=10
    )
    assert detect_family(bare).name == "causal"  # no architectures: decided by the model type
    sentence_encoder = BertConfig(architectures=["BertModel"])  # bare encoder checkpoints get a new head
    assert detect_family(sentence_encoder).name == "classifier"
    with pytest.raises(ValueError, match="task_type"):
        detect_family(PretrainedConfig())
    with torch.device("meta"):
        assert detect_family(LlamaForCausalLM(bare)).name == "causal"


def test_family_descriptor_is_the_one_lookup(t5, llama, bert):
    """Name, task type, Auto class and wrapper class of each family come from one descriptor."""
    for model, wrapper in ((t5, PeftModelForSeq2SeqLM), (llama, PeftModelForCausalLM),
                           (bert, PeftModelForSequenceClassification)):  # fmt: skip
        family = detect_family(model.config)
        assert get_family(family.name) is family and family_for_task_type(family.task_type) is family
        assert wrapper_for(family) is wrapper and wrapper.family is family
        assert isinstance(get_peft_model(model, _cfg(r=0)), wrapper)
    assert get_family("causal").auto_class is AutoModelForCausalLM
    assert (get_family("causal").padding_side, get_family("seq2seq").padding_side) == ("left", "right")
    assert [f.generates for f in FAMILIES] == [True, True, False]
    with pytest.raises(ValueError, match="Unknown model family 'gpt'"):
        get_family("gpt")
    with pytest.raises(ValueError, match="task_type 'TOKEN_CLS' is not supported"):
        family_for_task_type("TOKEN_CLS")


@pytest.mark.parametrize("scpp, scap", [(False, False), (True, False), (False, True), (True, True)])
def test_seq2seq_forward_equals_hand_built_inputs_embeds(t5, scpp, scap):
    model = get_peft_model(t5, _cfg(scpp=scpp, scap=scap))
    _nonzero_b(model)
    ids, mask = _batch(n=L - 3)  # dynamic padding: n < L uses rows [:n]
    labels = torch.randint(2, 100, (2, 3))
    adapter = model.adapter
    if scpp:
        prompt = compose(adapter.prompt.weight, adapter.prompt.codebook)
    else:
        prompt = adapter.prompt.embedding
    if scap:
        added = torch.einsum("nkc,kcs->nks", adapter.added.weight, adapter.added.codebook).reshape(L, -1)
    else:
        added = model.adapter_config.scaling * (adapter.added.lora_A @ adapter.added.lora_B)
    x = t5.shared(ids) + added[: L - 3]
    embeds = torch.cat([prompt.unsqueeze(0).expand(2, -1, -1), x], 1)
    full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], 1)
    ref = t5(inputs_embeds=embeds, attention_mask=full_mask, labels=labels)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-6)


def test_dept_with_zero_b_equals_pt_with_same_prompt(t5):
    torch.manual_seed(1)
    dept = get_peft_model(t5, _cfg())
    ids, mask = _batch()
    logits_dept = dept(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3]).logits
    pt = get_peft_model(t5, _cfg(peft_type="PROMPT_TUNING"))
    with torch.no_grad():
        pt.adapter.prompt.embedding.copy_(dept.adapter.prompt.embedding)
    assert pt.adapter.added is None
    logits_pt = pt(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3]).logits
    assert torch.equal(logits_dept, logits_pt)


def test_accept_with_both_switches_off_is_dept(t5):
    from_accept = PromptTuningConfig.from_dict(
        {**_cfg().to_dict(), "scpp": False, "scap": False, "pretrain_init": False}
    )
    assert from_accept.method_name == "DePT"
    torch.manual_seed(2)
    a = get_peft_model(t5, from_accept)
    torch.manual_seed(2)
    b = get_peft_model(t5, _cfg())
    ta, tb = a.named_adapter_tensors(), b.named_adapter_tensors()
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    ids, mask = _batch()
    assert torch.equal(
        a(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2]).logits,
        b(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2]).logits,
    )


@pytest.mark.parametrize("scpp, scap", [(False, False), (True, True)])
def test_only_adapter_gets_gradients_and_backbone_is_unchanged(t5, scpp, scap):
    t5.train()
    before = {k: v.clone() for k, v in t5.state_dict().items()}
    model = get_peft_model(t5, _cfg(scpp=scpp, scap=scap))
    adapter_before = {k: v.detach().clone() for k, v in model.named_adapter_tensors().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.0)
    ids, mask = _batch()
    labels = torch.randint(2, 100, (2, 3))
    for _ in range(3):
        opt.zero_grad()
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        assert all(p.grad is None for p in t5.parameters())
        assert all(p.grad is not None for p in model.prepended_parameters() + model.added_parameters())
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in t5.state_dict().items())
    after = model.named_adapter_tensors()
    assert all(not torch.equal(adapter_before[k], after[k]) for k in after)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.prepended_parameters() + model.added_parameters()}


def test_gradient_checkpointing_with_out_of_place_update(t5):
    t5.train()
    model = get_peft_model(t5, _cfg())
    model.get_base_model().activation_checkpointing_enable()
    ids, mask = _batch()
    model(input_ids=ids, attention_mask=mask, labels=ids[:, :3].clone()).loss.backward()
    assert model.adapter.prompt.embedding.grad is not None


SHAPES = {
    "t5-small": (T5Config, dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8)),
    "t5-base": (T5Config, dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)),
    "t5-large": (T5Config, dict(d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16)),
    "llama-7b": (
        LlamaConfig,
        dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            vocab_size=32000,
        ),
    ),
}


@pytest.mark.filterwarnings("ignore::peft.BudgetWarning")
@pytest.mark.parametrize("name", list(SHAPES))
def test_parameter_counts_equal_formulas_on_meta_models(name):
    config_cls, kw = SHAPES[name]
    with torch.device("meta"):
        base = (T5ForConditionalGeneration if config_cls is T5Config else LlamaForCausalLM)(config_cls(**kw))
    d = base.get_input_embeddings().weight.shape[1]
    cases = [
        (dict(peft_type="PROMPT_TUNING", num_virtual_tokens=100), 100 * d),
        (dict(num_virtual_tokens=60, max_length=256, r=30), 60 * d + 30 * (256 + d)),
        (
            dict(
                num_virtual_tokens=60, max_length=256, scpp=True, sub_dim_scpp=32, codebook_size_scpp=20, r=30
            ),
            (d // 32) * 20 * (60 + 32) + 30 * (256 + d),
        ),
        (
            dict(
                num_virtual_tokens=60,
                max_length=256,
                scpp=True,
                scap=True,
                sub_dim_scpp=32,
                codebook_size_scpp=20,
                sub_dim_scap=256,
                codebook_size_scap=20,
            ),
            (d // 32) * 20 * (60 + 32) + (d // 256) * 20 * (256 + 256),
        ),
    ]
    for cfg_kw, expected in cases:
        with torch.device("meta"):
            model = get_peft_model(base, PromptTuningConfig(**cfg_kw))
        actual = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert model.count_trainable_parameters().total == actual == expected
    if name == "t5-base":
        assert expected == 74_880 - 30_720 + 30_720  # SCPP(32,20) + SCAP(256,20) = 74,880


def test_materialized_is_bitwise_identical(t5):
    model = get_peft_model(t5, _cfg(scpp=True, scap=True))
    ids, mask = _batch()
    ref = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2]).logits
    gen_ref = model.generate(input_ids=ids, attention_mask=mask, max_length=5, do_sample=False)
    calls = []
    hook = model.adapter.prompt.register_forward_hook(lambda *a: calls.append(1))
    with model.materialized():
        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2]).logits
        gen = model.generate(input_ids=ids, attention_mask=mask, max_length=5, do_sample=False)
    hook.remove()
    assert len(calls) == 1  # composed once on entering
    assert torch.equal(out, ref) and torch.equal(gen, gen_ref)
    model.train()
    with model.materialized(), pytest.raises(RuntimeError, match="inference"):
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2])


def _greedy_t5(model, ids, mask, steps, eos=1, pad=0):
    dec = torch.zeros(ids.shape[0], 1, dtype=torch.long)
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(steps):
        nxt = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        done |= nxt == eos
        dec = torch.cat([dec, nxt[:, None]], 1)
    return dec


@pytest.mark.parametrize("scpp, scap", [(False, False), (True, True)])
def test_t5_greedy_generate_equals_manual_loop(t5, scpp, scap):
    torch.manual_seed(3)
    model = get_peft_model(t5, _cfg(scpp=scpp, scap=scap))
    _nonzero_b(model)
    ids, mask = _batch(n=L)
    gen = model.generate(input_ids=ids, attention_mask=mask, max_length=7, do_sample=False, num_beams=1)
    manual = _greedy_t5(model, ids, mask, steps=6)
    assert torch.equal(gen, manual[:, : gen.shape[1]])
    assert gen.shape[1] == 7 or bool((manual[:, gen.shape[1] :] == 0).all())


@pytest.mark.parametrize("scpp, scap", [(False, False), (True, True)])
def test_llama_greedy_generate_equals_manual_loop(llama, scpp, scap):
    torch.manual_seed(4)
    model = get_peft_model(llama, _cfg(scpp=scpp, scap=scap))
    _nonzero_b(model)
    ids, mask = _batch(n=L, left_pad=True)
    llama.generation_config.eos_token_id = None
    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert gen.shape == (2, L + 4) and torch.equal(gen[:, :L], ids)
    prompt, added = model.adapter.compose()
    embeds = torch.cat([prompt.expand(2, -1, -1), llama.get_input_embeddings()(ids) + added], 1)
    full_mask = torch.cat([torch.ones(2, M, dtype=torch.long), mask], 1)
    new = []
    with torch.no_grad():
        for _ in range(4):
            pos = (full_mask.cumsum(-1) - 1).clamp(min=0)
            nxt = (
                llama(inputs_embeds=embeds, attention_mask=full_mask, position_ids=pos)
                .logits[:, -1]
                .argmax(-1)
            )
            new.append(nxt)
            embeds = torch.cat([embeds, llama.get_input_embeddings()(nxt)[:, None]], 1)
            full_mask = torch.cat([full_mask, torch.ones(2, 1, dtype=torch.long)], 1)
    assert torch.equal(gen[:, L:], torch.stack(new, 1))


def test_causal_forward_prefixes_labels_and_refuses_inputs_longer_than_l(llama):
    model = get_peft_model(llama, _cfg())
    _nonzero_b(model)
    ids, mask = _batch(left_pad=True)
    labels = torch.full_like(ids, -100)
    labels[:, -2:] = ids[:, -2:]
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape[1] == M + L
    prompt, added = model.adapter.compose()
    embeds = torch.cat([prompt.expand(2, -1, -1), llama.get_input_embeddings()(ids) + added], 1)
    ref = llama(
        inputs_embeds=embeds,
        attention_mask=torch.cat([torch.ones(2, M, dtype=torch.long), mask], 1),
        labels=torch.cat([torch.full((2, M), -100), labels], 1),
    )
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.loss, ref.loss, rtol=0, atol=1e-6)
    longer = torch.cat([ids[:, :1], ids], 1)  # shorter batches are dynamic padding (test_perf_padding.py)
    with pytest.raises(ValueError, match=f"exceeds max_length L={L}"):
        model(input_ids=longer, attention_mask=torch.cat([mask[:, :1], mask], 1))


def test_input_longer_than_max_length_is_refused(t5):
    model = get_peft_model(t5, _cfg())
    ids, mask = _batch(n=L + 1)
    with pytest.raises(ValueError, match=f"exceeds max_length L={L}"):
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :1])


def test_classifier_prompt_head_and_token_types(bert):
    model = get_peft_model(bert, _cfg(scpp=True))
    assert detect_family(bert.config).name == "classifier"
    head = [p for n, p in bert.named_parameters() if n.startswith("classifier")]
    assert all(p.requires_grad for p in head)
    assert {id(p) for p in head} <= {id(p) for p in model.prepended_parameters()}
    count = model.count_trainable_parameters()
    assert count.head == sum(p.numel() for p in head) and count.total == sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )
    ids, mask = _batch(n=L - 2)
    tt = torch.ones_like(ids)
    labels = torch.tensor([0, 1])
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=tt, labels=labels)
    prompt, added = model.adapter.compose()
    words = bert.get_input_embeddings()(ids) + added[: L - 2]
    # The prompt goes right after the first ([CLS]) position, which the pooler reads.
    embeds = torch.cat([words[:, :1], prompt.expand(2, -1, -1), words[:, 1:]], 1)
    ref = bert(
        inputs_embeds=embeds,
        attention_mask=torch.cat([mask[:, :1], torch.ones(2, M, dtype=torch.long), mask[:, 1:]], 1),
        token_type_ids=torch.cat([tt[:, :1], torch.zeros(2, M, dtype=torch.long), tt[:, 1:]], 1),
        labels=labels,
    )
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-6)
    out.loss.backward()
    assert all(p.grad is not None for p in head)


def test_classifier_update_rows_follow_input_tokens(bert):
    """Row j of a non-zero update goes to input token j ([CLS] included), which sits at position m + j
    (j >= 1) after the prompt; padding and the batch's padded length change no real example's logits."""
    model = get_peft_model(bert, _cfg())
    _nonzero_b(model)
    ids, mask = _batch(n=L - 2)
    tt = torch.ones_like(ids)
    seen = {}
    hook = bert.bert.embeddings.LayerNorm.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    logits = model(input_ids=ids, attention_mask=mask, token_type_ids=tt).logits
    hook.remove()
    prompt, added = model.adapter.compose()
    emb = bert.bert.embeddings
    n = ids.shape[1]
    words = emb.word_embeddings(ids) + added[:n] + emb.token_type_embeddings(tt)
    pos = emb.position_embeddings.weight
    torch.testing.assert_close(seen["x"][:, 0], words[:, 0] + pos[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(
        seen["x"][:, 1 : M + 1],
        (prompt + pos[1 : M + 1] + emb.token_type_embeddings.weight[0]).expand(2, -1, -1),
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(seen["x"][:, M + 1 :], words[:, 1:] + pos[M + 1 : M + n], rtol=0, atol=1e-6)
    # Example 1 alone without its 3 padding positions, and both examples padded 2 positions further.
    real = int(mask[1].sum())
    alone = model(
        input_ids=ids[1:, :real], attention_mask=mask[1:, :real], token_type_ids=tt[1:, :real]
    ).logits
    torch.testing.assert_close(alone, logits[1:], rtol=0, atol=1e-5)
    pad = torch.zeros(2, 2, dtype=torch.long)
    longer = model(
        input_ids=torch.cat([ids, pad], 1),
        attention_mask=torch.cat([mask, pad], 1),
        token_type_ids=torch.cat([tt, pad], 1),
    ).logits
    torch.testing.assert_close(longer, logits, rtol=0, atol=1e-5)
    assert added[:n].abs().sum(-1).min() > 0


@pytest.mark.filterwarnings("ignore::peft.BudgetWarning")
def test_classifier_positions_must_fit(bert):
    with pytest.raises(ValueError, match="max_position_embeddings 512"):
        get_peft_model(bert, _cfg(num_virtual_tokens=100, max_length=500, r=1))


def test_bf16_backbone_keeps_fp32_adapter(tiny_t5_dir):
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir, dtype=torch.bfloat16)
    model = get_peft_model(base, _cfg(scpp=True, scap=True))
    assert all(p.dtype == torch.float32 for p in model.named_adapter_tensors().values())
    ids, mask = _batch()
    out = model(input_ids=ids, attention_mask=mask, labels=ids[:, :2].clone())
    assert out.logits.dtype == torch.bfloat16
    out.loss.backward()
    assert model.adapter.prompt.weight.grad.dtype == torch.float32


def test_text_init_uses_init_text_ids(t5, t5_tokenizer):
    cfg = _cfg(prompt_tuning_init="TEXT", num_virtual_tokens=15, prompt_tuning_init_text="text word")
    model = get_peft_model(t5, cfg, tokenizer=t5_tokenizer)
    ids = t5_tokenizer("text word")["input_ids"]
    assert ids[-1] == 1  # the final </s> is part of the init ids
    rep = (ids * 15)[:15]
    assert torch.equal(model.adapter.prompt.embedding, t5.shared.weight[rep])
