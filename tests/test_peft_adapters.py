"""Named adapters on one frozen model: add/set/delete, save/load of several, is_trainable, HF PEFT files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

from peft import PeftModel, PromptTuningConfig, get_peft_model
from peft.hf_prompt_tuning import DroppedPromptRowsWarning

L = 10


def _cfg(**kw) -> PromptTuningConfig:
    base = dict(
        num_virtual_tokens=4, max_length=L, r=3, sub_dim_scpp=8, codebook_size_scpp=2, sub_dim_scap=16
    )
    return PromptTuningConfig(**{**base, **kw})


def _randomise(model, name=None):
    with torch.no_grad():
        for p in model.named_adapter_tensors(name).values():
            p.normal_()


def _ids(batch=2, n=L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, 100, (batch, n), generator=g)


@pytest.fixture()
def t5(tiny_t5_dir):
    torch.manual_seed(0)
    return AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()


def test_add_set_delete_and_configs(t5):
    model = get_peft_model(t5, _cfg())
    model.add_adapter("rte", _cfg(scpp=True, num_virtual_tokens=6))
    assert sorted(model.peft_config) == ["default", "rte"] and model.active_adapter == "default"
    assert model.peft_config["rte"].method_name == "ACCEPT-SCPP" and model.peft_config["rte"].token_dim == 32
    prompt, added = model.get_prompt("rte")
    assert prompt.shape == (6, 32) and added.shape == (L, 32)
    model.set_adapter("rte")
    assert model.active_adapter == "rte" and model.active_adapters == ["rte"]
    assert model.adapter_config.method_name == "ACCEPT-SCPP"
    assert {id(p) for p in model.prepended_parameters()} == {
        id(p) for p in model.adapter_module("rte").prepended_parameters()
    }
    with pytest.raises(ValueError, match="active"):
        model.delete_adapter("rte")
    model.set_adapter("default")
    model.delete_adapter("rte")
    assert list(model.peft_config) == ["default"] and len(model.extra_adapters) == 0
    for bad, match in (("default", "exists"), ("__base__", "reserved"), ("a.b", "dots")):
        with pytest.raises(ValueError, match=match):
            model.add_adapter(bad, _cfg())
    with pytest.raises(ValueError, match="Unknown adapter 'nope'"):
        model.set_adapter("nope")
    with pytest.raises(ValueError, match="cannot be deleted"):
        model.delete_adapter("default")
    # the default adapter keeps its state-dict names (Trainer checkpoints, golden files)
    assert "adapter.prompt.embedding" in model.state_dict()


def test_active_adapter_drives_forward(t5):
    model = get_peft_model(t5, _cfg())
    model.add_adapter("other", _cfg(peft_type="PROMPT_TUNING", num_virtual_tokens=3))
    _randomise(model, "other")
    ids = _ids()
    kw = dict(input_ids=ids, decoder_input_ids=ids[:, :2])
    first = model(**kw).logits
    model.set_adapter("other")
    prompt, _ = model.get_prompt()
    embeds = torch.cat([prompt.unsqueeze(0).expand(2, -1, -1), t5.shared(ids)], 1)
    ref = t5(inputs_embeds=embeds, decoder_input_ids=ids[:, :2]).logits
    torch.testing.assert_close(model(**kw).logits, ref, rtol=0, atol=1e-6)
    assert not torch.allclose(first, ref)


def test_save_and_load_several_adapters(t5, tiny_t5_dir, tmp_path):
    model = get_peft_model(t5, _cfg())
    model.add_adapter("rte", _cfg(scpp=True, scap=True))
    model.add_adapter("mrpc", _cfg(peft_type="PROMPT_TUNING", num_virtual_tokens=5))
    for name in model.peft_config:
        _randomise(model, name)
    model.save_pretrained(tmp_path / "all")
    assert set(load_file(str(tmp_path / "all" / "adapter_model.safetensors"))) == set(
        model.named_adapter_tensors()
    )
    assert json.loads((tmp_path / "all" / "rte" / "adapter_config.json").read_text())["scap"] is True
    assert set(load_file(str(tmp_path / "all" / "mrpc" / "adapter_model.safetensors"))) == {
        "prompt_embeddings"
    }
    model.save_pretrained(tmp_path / "some", selected_adapters=["mrpc"])
    assert not (tmp_path / "some" / "adapter_config.json").exists() and (tmp_path / "some" / "mrpc").is_dir()
    with pytest.raises(ValueError, match="selected_adapters"):
        model.save_pretrained(tmp_path / "bad", selected_adapters=["nope"])

    fresh = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval()
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "all" / "rte", adapter_name="rte")
    loaded.load_adapter(tmp_path / "all" / "mrpc", "mrpc")
    loaded.load_adapter(tmp_path / "all", "default")
    ids = _ids()
    for name in ("default", "rte", "mrpc"):
        for key, value in model.named_adapter_tensors(name).items():
            assert torch.equal(loaded.named_adapter_tensors(name)[key], value)
        model.set_adapter(name)
        loaded.set_adapter(name)
        kw = dict(input_ids=ids, decoder_input_ids=ids[:, :2])
        assert torch.equal(model(**kw).logits, loaded(**kw).logits)


def test_is_trainable_semantics(t5, tmp_path):
    src = get_peft_model(t5, _cfg(scap=True))
    src.save_pretrained(tmp_path)
    frozen = PeftModel.from_pretrained(t5, tmp_path)
    assert not any(p.requires_grad for p in frozen.named_adapter_tensors().values())
    trainable = PeftModel.from_pretrained(t5, tmp_path, is_trainable=True)
    assert all(p.requires_grad for p in trainable.named_adapter_tensors().values())
    trainable.load_adapter(tmp_path, "second")
    assert not any(p.requires_grad for p in trainable.named_adapter_tensors("second").values())
    trainable.load_adapter(tmp_path, "third", is_trainable=True)
    assert all(p.requires_grad for p in trainable.named_adapter_tensors("third").values())
    # reloading into an existing adapter (the Trainer's best-checkpoint reload) keeps it trainable
    trainable.load_adapter(tmp_path, "default")
    assert all(p.requires_grad for p in trainable.named_adapter_tensors().values())


def test_per_row_adapters_are_refused_in_training(t5):
    model = get_peft_model(t5, _cfg())
    model.train()
    ids = _ids()
    with pytest.raises(ValueError, match="inference.*eval"):
        model(input_ids=ids, labels=ids[:, :2], adapter_names=["default", "__base__"])
    model.eval()
    with pytest.raises(ValueError, match="adapter_names\\[1\\] = 'x'"):
        model(input_ids=ids, labels=ids[:, :2], adapter_names=["default", "x"])
    with pytest.raises(ValueError, match="2 rows"):
        model(input_ids=ids, labels=ids[:, :2], adapter_names=["default"])


def test_disable_adapter_equals_bare_backbone(t5, tiny_llama_dir, tiny_bert_dir):
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    bert = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    for base, extra in ((t5, dict(decoder_input_ids=ids[:, :2])), (llama, {}), (bert, {})):
        model = get_peft_model(base, _cfg(peft_type="PROMPT_TUNING") if base is llama else _cfg())
        _randomise(model)
        with torch.no_grad():
            bare = base(input_ids=ids, attention_mask=mask, **extra).logits
            with model.disable_adapter():
                off = model(input_ids=ids, attention_mask=mask, **extra).logits
            on = model(input_ids=ids, attention_mask=mask, **extra).logits
        torch.testing.assert_close(off, bare, rtol=0, atol=1e-6)
        assert on.shape != bare.shape or not torch.allclose(on, bare)
    gen_model = get_peft_model(t5, _cfg())
    _randomise(gen_model)
    with gen_model.disable_adapter():
        tokens = gen_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(
        tokens, t5.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    )


def test_classifier_adapters_keep_their_own_heads(tiny_bert_dir, tmp_path):
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    model = get_peft_model(base, _cfg())
    model.add_adapter("mrpc", _cfg(peft_type="PROMPT_TUNING"))
    _randomise(model, "mrpc")
    assert set(model.named_adapter_tensors("mrpc")) == {
        "prompt_embeddings",
        "classifier.weight",
        "classifier.bias",
    }
    assert not torch.equal(model.named_adapter_tensors("mrpc")["classifier.weight"], base.classifier.weight)
    ids = _ids()
    model.set_adapter("mrpc")
    prompt, _ = model.get_prompt()
    head = model.extra_heads["mrpc"]["classifier"]
    embeds = base.bert.embeddings.word_embeddings(ids)
    embeds = torch.cat([embeds[:, :1], prompt.unsqueeze(0).expand(2, -1, -1), embeds[:, 1:]], 1)
    pooled = base.bert(inputs_embeds=embeds).pooler_output
    torch.testing.assert_close(model(input_ids=ids).logits, head(pooled), rtol=0, atol=1e-6)
    assert base.classifier is not head  # the base model's own head is back in place
    model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval(), tmp_path / "mrpc", "mrpc"
    )
    assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_print_trainable_parameters_prints_hf_summary(t5, capsys):
    model = get_peft_model(t5, _cfg(peft_type="PROMPT_TUNING"))
    total = sum(p.numel() for p in model.parameters())
    model.print_trainable_parameters()
    line = capsys.readouterr().out.strip()
    assert line == f"trainable params: 128 || all params: {total:,d} || trainable%: {100 * 128 / total:.4f}"


def _write_hf_prompt_tuning(path, prompt, task_type, submodules):
    """An adapter folder as HuggingFace PEFT writes it for PROMPT_TUNING."""
    path.mkdir(parents=True)
    config = {
        "auto_mapping": None,
        "base_model_name_or_path": "t5-small",
        "inference_mode": True,
        "num_attention_heads": 4,
        "num_layers": 2,
        "num_transformer_submodules": submodules,
        "num_virtual_tokens": prompt.shape[0] // submodules,
        "peft_type": "PROMPT_TUNING",
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "revision": None,
        "task_type": task_type,
        "token_dim": prompt.shape[1],
        "tokenizer_kwargs": None,
        "tokenizer_name_or_path": None,
    }
    (path / "adapter_config.json").write_text(json.dumps(config))
    save_file(
        {"prompt_embeddings": prompt}, str(path / "adapter_model.safetensors"), metadata={"format": "pt"}
    )


def test_hf_peft_prompt_tuning_seq2seq_two_submodules(t5, tmp_path):
    prompt = torch.randn(2 * 5, 32)  # 5 virtual tokens x 2 submodules
    _write_hf_prompt_tuning(tmp_path / "hf", prompt, "SEQ_2_SEQ_LM", 2)
    with pytest.warns(DroppedPromptRowsWarning, match="rows 5..9"):
        model = PeftModel.from_pretrained(t5, tmp_path / "hf")
    assert model.adapter_config.method_name == "PT" and model.adapter_config.num_virtual_tokens == 5
    ids = _ids()
    mask = torch.ones_like(ids)
    embeds = torch.cat([prompt[:5].unsqueeze(0).expand(2, -1, -1), t5.shared(ids)], 1)
    full_mask = torch.cat([torch.ones(2, 5, dtype=torch.long), mask], 1)
    ref = t5(inputs_embeds=embeds, attention_mask=full_mask, decoder_input_ids=ids[:, :3]).logits
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3]).logits
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    ref_gen = t5.generate(inputs_embeds=embeds, attention_mask=full_mask, max_new_tokens=4, do_sample=False)
    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(gen, ref_gen)
    bad = tmp_path / "bad"
    _write_hf_prompt_tuning(bad, torch.randn(9, 32), "SEQ_2_SEQ_LM", 1)
    config = json.loads((bad / "adapter_config.json").read_text())
    (bad / "adapter_config.json").write_text(
        json.dumps({**config, "num_transformer_submodules": 2, "num_virtual_tokens": 5})
    )
    with pytest.raises(ValueError, match="9 rows.*does not match"):
        model.load_adapter(bad, "bad")


def test_hf_peft_prompt_tuning_causal(tiny_llama_dir, tmp_path):
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    prompt = torch.randn(3, 32)
    _write_hf_prompt_tuning(tmp_path / "hf", prompt, "CAUSAL_LM", 1)
    model = PeftModel.from_pretrained(llama, tmp_path / "hf")
    ids = _ids(n=7)
    embeds = torch.cat([prompt.unsqueeze(0).expand(2, -1, -1), llama.model.embed_tokens(ids)], 1)
    torch.testing.assert_close(
        model(input_ids=ids).logits, llama(inputs_embeds=embeds).logits, rtol=0, atol=1e-6
    )
