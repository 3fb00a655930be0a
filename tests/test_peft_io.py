"""Saving and loading adapters: round trips, original .bin files, released DePT checkpoints, transfer init."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    T5Config,
    T5ForConditionalGeneration,
)

from peft import MissingAdapterTensorsWarning, PeftModel, PromptTuningConfig, get_peft_model

METHODS = {
    "PT": dict(peft_type="PROMPT_TUNING"),
    "DePT": dict(),
    "ACCEPT-SCPP": dict(scpp=True),
    "ACCEPT-SCAP": dict(scap=True),
    "ACCEPT": dict(scpp=True, scap=True),
}


def _cfg(**kw) -> PromptTuningConfig:
    base = dict(
        num_virtual_tokens=4, max_length=10, r=3, sub_dim_scpp=8, codebook_size_scpp=2, sub_dim_scap=16
    )
    return PromptTuningConfig(**{**base, **kw})


def _randomise(model):
    with torch.no_grad():
        for p in model.named_adapter_tensors().values():
            p.normal_()


@pytest.mark.parametrize("method", list(METHODS))
def test_round_trip_is_exact(tiny_t5_dir, tmp_path, method):
    cfg = _cfg(**METHODS[method])
    assert cfg.method_name == method
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval(), cfg)
    _randomise(model)
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert set(saved) == set(model.named_adapter_tensors())
    assert not any(k.startswith(("shared", "encoder", "decoder", "lm_head")) for k in saved)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["token_dim"] == 32
    loaded = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir).eval(), tmp_path)
    assert type(loaded) is type(model)
    for key, value in model.named_adapter_tensors().items():
        assert torch.equal(loaded.named_adapter_tensors()[key], value)
        assert not loaded.named_adapter_tensors()[key].requires_grad  # is_trainable=False
    ids = torch.randint(2, 100, (2, 10))
    kw = dict(input_ids=ids, decoder_input_ids=ids[:, :2])
    assert torch.equal(model(**kw).logits, loaded(**kw).logits)


def test_classifier_round_trip_includes_head(tiny_bert_dir, tmp_path):
    model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), _cfg())
    _randomise(model)
    model.save_pretrained(tmp_path)
    keys = set(load_file(str(tmp_path / "adapter_model.safetensors")))
    assert {"classifier.weight", "classifier.bias", "prompt_embeddings"} <= keys
    assert not any(k.startswith("bert.") for k in keys)
    loaded = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir), tmp_path, is_trainable=True
    )
    for key, value in model.named_adapter_tensors().items():
        assert torch.equal(loaded.named_adapter_tensors()[key], value)
    assert all(p.requires_grad for p in loaded.prepended_parameters())


def test_original_bin_keys_load_with_weights_only(tiny_t5_dir, tmp_path):
    cfg = _cfg(scap=True)
    original = cfg.to_dict()
    original.pop("extra_fields")
    original.update(
        {"token_dim": 32, "task_type": "SEQ_2_SEQ_LM", "hidden_size": 768, "pretrain_init": False}
    )
    (tmp_path / "adapter_config.json").write_text(json.dumps(original))
    tensors = {
        "prompt_embeddings": torch.randn(4, 32),
        "prompt_encoder.lora_weight": torch.randn(10, 2, 4),
        "prompt_encoder.codebook_lora": torch.randn(2, 4, 16),
    }
    torch.save(tensors, tmp_path / "adapter_model.bin")
    model = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), tmp_path)
    for key, value in tensors.items():
        assert torch.equal(model.named_adapter_tensors()[key], value)


def test_shape_mismatch_names_both_shapes(tiny_t5_dir, tmp_path):
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), _cfg())
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(20, 3\)"):
        PeftModel.from_pretrained(
            AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), tmp_path, config=_cfg(max_length=20)
        )
    with pytest.raises(ValueError, match="does not have"):
        PeftModel.from_pretrained(
            AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), tmp_path, config=_cfg(scpp=True)
        )


def test_load_adapter_into_existing_model(tiny_t5_dir, tmp_path):
    src = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), _cfg(scpp=True))
    _randomise(src)
    src.save_pretrained(tmp_path)
    dst = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), _cfg(scpp=True))
    dst.load_adapter(tmp_path, "default")
    assert all(torch.equal(dst.named_adapter_tensors()[k], v) for k, v in src.named_adapter_tensors().items())
    assert all(p.requires_grad for p in dst.named_adapter_tensors().values())
    dst.load_adapter(tmp_path, "other")  # a new name becomes a second, frozen adapter
    assert sorted(dst.peft_config) == ["default", "other"]
    assert not any(p.requires_grad for p in dst.named_adapter_tensors("other").values())


def test_transfer_init_each_side_and_both_key_spellings(tiny_t5_dir, tmp_path):
    src = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), _cfg(scpp=True, scap=True))
    _randomise(src)
    src.save_pretrained(tmp_path / "scpp_run")
    named = src.named_adapter_tensors()
    scap_dir = tmp_path / "scap_run"
    scap_dir.mkdir()
    torch.save(  # prefix-less spelling, original .bin format
        {
            "lora_weight": named["prompt_encoder.lora_weight"].detach().clone(),
            "codebook_lora": named["prompt_encoder.codebook_lora"].detach().clone(),
        },
        scap_dir / "adapter_model.bin",
    )
    cfg = _cfg(
        scpp=True, scap=True, pretrain_scpp_ckpt=str(tmp_path / "scpp_run"), pretrain_scap_ckpt=str(scap_dir)
    )
    dst = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), cfg)
    assert all(torch.equal(dst.named_adapter_tensors()[k], v) for k, v in named.items())
    # only the SCAP side on: the SCPP folder is not read, the prompt keeps its fresh init
    torch.manual_seed(7)
    only = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir),
        _cfg(scap=True, pretrain_scpp_ckpt=str(tmp_path / "missing"), pretrain_scap_ckpt=str(scap_dir)),
    )
    assert torch.equal(
        only.named_adapter_tensors()["prompt_encoder.lora_weight"], named["prompt_encoder.lora_weight"]
    )
    assert only.named_adapter_tensors()["prompt_embeddings"].shape == (4, 32)  # dense prompt, fresh init
    # shape check on transfer
    bad = _cfg(scpp=True, sub_dim_scpp=4, pretrain_scpp_ckpt=str(tmp_path / "scpp_run"))
    with pytest.raises(ValueError, match="pretrain_scpp_ckpt.*shape"):
        get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), bad)


def test_safetensors_keys_with_adapter_name_are_accepted(tiny_t5_dir, tmp_path):
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), _cfg())
    model.adapter_config.save_pretrained(tmp_path)
    prompt = torch.randn(4, 32)
    save_file(
        {
            "prompt_embeddings": prompt,
            "prompt_encoder.default.lora_embedding_A": torch.randn(10, 3),
            "prompt_encoder.default.lora_embedding_B": torch.randn(3, 32),
        },
        str(tmp_path / "adapter_model.safetensors"),
    )
    model.load_adapter(tmp_path)
    assert torch.equal(model.named_adapter_tensors()["prompt_embeddings"], prompt)


def _t5_base_width():
    """A d=768 T5 with one small layer: the released adapters depend only on d."""
    config = T5Config(
        vocab_size=64, d_model=768, d_kv=8, d_ff=16, num_layers=1, num_decoder_layers=1, num_heads=2
    )
    return T5ForConditionalGeneration(config).eval()


@pytest.mark.parametrize("task, m, r", [("cola", 80, 15), ("sst2", 60, 30)])
def test_released_dept_checkpoints_load_exactly(shared_dir, task, m, r):
    folder = shared_dir / "dept-checkpoints" / task
    model = PeftModel.from_pretrained(_t5_base_width(), folder)
    file = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    assert set(file) == set(model.named_adapter_tensors())
    for key, value in file.items():
        assert torch.equal(model.named_adapter_tensors()[key], value)
    count = model.count_trainable_parameters()
    assert (count.prepended, count.added) == (m * 768, r * (256 + 768))


@pytest.mark.parametrize("task", ["hotpotqa", "nq", "superglue-wic"])
def test_prompt_only_dept_checkpoints_warn_about_missing_tensors(shared_dir, task):
    folder = shared_dir / "dept-checkpoints" / task
    with pytest.warns(MissingAdapterTensorsWarning, match="lora_embedding_A.*lora_embedding_B"):
        model = PeftModel.from_pretrained(_t5_base_width(), folder)
    file = torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True)
    assert torch.equal(model.named_adapter_tensors()["prompt_embeddings"], file["prompt_embeddings"])
    _, added = model.adapter.compose()
    assert torch.count_nonzero(added) == 0  # B keeps its zero init: no added update


def test_save_with_a_full_state_dict_keeps_only_adapter_tensors(tiny_t5_dir, tmp_path):
    """transformers' Trainer may pass the whole model's state dict to save_pretrained."""
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir), _cfg(scpp=True))
    _randomise(model)
    state = model.state_dict()
    model.save_pretrained(tmp_path, state_dict=state, is_main_process=True)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert set(saved) == {
        "prompt_weight",
        "codebook_prompt",
        "prompt_encoder.lora_embedding_A",
        "prompt_encoder.lora_embedding_B",
    }
    assert torch.equal(saved["prompt_weight"], state["adapter.prompt.weight"])
    model.save_pretrained(tmp_path / "other", is_main_process=False)
    assert not (tmp_path / "other").exists()
