"""The DePT family as (prompt kind, update kind) pairs: presets of the original flags, counts, encoders, the
update hook, and saving/loading of the new kinds (DPT, ULPT, ADePT and a mixed pair)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from peft import PeftModel, PromptTuningConfig, get_peft_model
from peft.budget import (
    PROMPT_KINDS,
    UPDATE_KINDS,
    count_adapter_params,
    largest_prompt_rank,
    largest_tokenwise_rank,
)
from peft.encoders import KEY_ULPT_PROJECTION, PromptAdapter
from peft.io import WEIGHTS_NAME, read_adapter_tensors

D = 32  # the tiny T5's width


@pytest.mark.parametrize(
    ("fields", "kinds", "name"),
    [
        (dict(peft_type="PROMPT_TUNING"), ("dense", "none"), "PT"),
        (dict(), ("dense", "lowrank"), "DePT"),
        (dict(r=0), ("dense", "none"), "DePT"),
        (dict(scpp=True), ("codebook", "lowrank"), "ACCEPT-SCPP"),
        (dict(scap=True), ("dense", "codebook"), "ACCEPT-SCAP"),
        (dict(scpp=True, scap=True), ("codebook", "codebook"), "ACCEPT"),
        (dict(peft_type="PROMPT_TUNING_DPT"), ("lowrank", "none"), "DPT"),
        (dict(peft_type="PROMPT_TUNING_LODIM"), ("random_projection", "none"), "ULPT"),
        (dict(peft_type="PROMPT_TUNING_LORAX"), ("dense", "tokenwise"), "ADePT"),
        (dict(prompt_kind="random_projection", update_kind="codebook"), ("random_projection", "codebook"),
         "ULPT prompt + SCAP update"),
        (dict(peft_type="PROMPT_TUNING_LODIM", update_kind="tokenwise"), ("random_projection", "tokenwise"),
         "ULPT prompt + ADePT update"),
        (dict(peft_type="PROMPT_TUNING", update_kind="lowrank"), ("dense", "lowrank"), "DePT"),
    ],
)  # fmt: skip
def test_presets_and_method_names(fields, kinds, name):
    config = PromptTuningConfig(**fields)
    assert config.kinds == kinds
    assert config.method_name == name


def test_paper_counts_of_the_new_methods():
    """DPT m*r + r*d, ULPT m*r + 2d (2% of PT at the paper's m = 100, r = 2 on T5-base), ADePT m*d + r(2d+1) + d."""
    d = 768
    assert count_adapter_params(dim=d, num_virtual_tokens=100, prompt_kind="lowrank", lodim_r=2).total == 1_736
    ulpt = count_adapter_params(dim=d, num_virtual_tokens=100, prompt_kind="random_projection", lodim_r=2)
    assert ulpt.total == 100 * 2 + 2 * d
    assert ulpt.total / (100 * d) < 0.023
    adept = count_adapter_params(dim=d, num_virtual_tokens=60, update_kind="tokenwise", r=19)
    assert (adept.prepended, adept.added) == (46_080, 19 * 1_537 + 768)
    assert adept.total == 76_051  # under PT's 76,800
    # the budget solvers invert the counts
    assert largest_tokenwise_rank(d, 40 * d) == 19
    assert largest_prompt_rank("lowrank", 100, d, 76_800) == 88
    assert largest_prompt_rank("random_projection", 100, d, 76_800) == 752


@pytest.mark.parametrize("prompt_kind", PROMPT_KINDS)
@pytest.mark.parametrize("update_kind", UPDATE_KINDS)
def test_counts_equal_the_trained_tensors_of_every_pair(prompt_kind, update_kind):
    config = PromptTuningConfig(
        num_virtual_tokens=6, max_length=10, r=3, lodim_r=2, num_random_proj=3, sub_dim_scpp=8,
        codebook_size_scpp=2, sub_dim_scap=16, codebook_size_scap=3, prompt_kind=prompt_kind,
        update_kind=update_kind, token_dim=D,
    )  # fmt: skip
    config.validate(check_init=False)
    adapter = PromptAdapter(config, D)
    trained = sum(p.numel() for p in adapter.named_adapter_tensors().values())
    assert trained == config.param_count().total == sum(p.numel() for p in adapter.parameters())
    assert config.param_count().added == sum(p.numel() for p in adapter.added_parameters())


@pytest.mark.parametrize(
    ("fields", "field", "flag"),
    [
        (dict(peft_type="PROMPT_TUNING_LODIM", num_virtual_tokens=6, num_random_proj=4), "num_random_proj",
         "--num_random_proj"),
        (dict(peft_type="PROMPT_TUNING_DPT", lodim_r=0), "lodim_r", "--lodim_r"),
        (dict(peft_type="PROMPT_TUNING_LORAX", r=0), "r", "--r"),
        (dict(peft_type="PROMPT_TUNING_DPT", scpp=True), "scpp", "--scpp"),
        (dict(prompt_kind="sparse"), "prompt_kind", "--prompt_kind"),
        (dict(update_kind="prefix"), "update_kind", "--update_kind"),
        (dict(peft_type="PROMPT_TUNING_LODIM", prompt_tuning_init="TEXT"), "prompt_tuning_init", "--text_init"),
    ],
)  # fmt: skip
def test_invalid_family_settings_name_the_field_and_the_flag(fields, field, flag):
    """The library names config fields; train.py's mapping (training/planner/config_flags.py) the flags."""
    from peft.errors import AdapterConfigError
    from training.planner.config_flags import in_flag_terms

    with pytest.raises(AdapterConfigError) as raised:
        PromptTuningConfig(**fields).validate(check_init=True)
    assert raised.value.field == field and "--" not in str(raised.value)
    assert flag in in_flag_terms(raised.value)


def test_original_dpt_ulpt_configs_read_rank_and_no_length():
    """The originals keep the prompt rank in ``r`` and have no max_length (L comes from the run)."""
    ulpt = PromptTuningConfig.from_dict(
        {"peft_type": "PROMPT_TUNING_LODIM", "r": 3, "num_random_proj": 2, "num_virtual_tokens": 8,
         "save_base_embeddings": True, "output_dir": "x"}
    )  # fmt: skip
    assert (ulpt.lodim_r, ulpt.num_random_proj, ulpt.max_length, ulpt.method_name) == (3, 2, None, "ULPT")
    adept = PromptTuningConfig.from_dict({"peft_type": "PROMPT_TUNING_LORAX", "r": 3, "max_length": 16})
    assert (adept.r, adept.max_length, adept.lodim_r) == (3, 16, 2)


def test_ulpt_prompt_formula_and_init():
    """P[i] = s * (Z[i] W[i // (m/G)]) + b with s = 1, b = 0 at init and W in +-sqrt(6 / (r + d))."""
    torch.manual_seed(0)
    config = PromptTuningConfig(peft_type="PROMPT_TUNING_LODIM", num_virtual_tokens=6, lodim_r=2, num_random_proj=3)
    prompt = PromptAdapter(config, D).prompt
    assert torch.equal(prompt.scale, torch.ones(D)) and torch.equal(prompt.bias, torch.zeros(D))
    assert prompt.projection.shape == (3, 2, D) and not prompt.projection.requires_grad
    assert prompt.projection.abs().max() <= math.sqrt(6 / (2 + D))
    with torch.no_grad():
        prompt.scale.uniform_(0.5, 2)
        prompt.bias.normal_()
    expected = torch.stack([prompt.embedding[i] @ prompt.projection[i // 2] for i in range(6)])
    torch.testing.assert_close(prompt(), prompt.scale * expected + prompt.bias)


def test_tokenwise_update_is_zero_at_init_and_position_independent():
    torch.manual_seed(0)
    adapter = PromptAdapter(PromptTuningConfig(peft_type="PROMPT_TUNING_LORAX", r=4, max_length=8), D).eval()
    embeds = torch.randn(2, 5, D)
    assert torch.equal(adapter.add_update(embeds, from_end=False), embeds)  # B = 0, b = 0
    with torch.no_grad():
        for param in adapter.added.parameters():
            param.normal_()
    same_token = embeds.clone()
    same_token[1, 3] = same_token[0, 0]
    out = adapter.add_update(same_token, from_end=False)
    torch.testing.assert_close(out[1, 3], out[0, 0])  # the same embedding gets the same update anywhere
    hidden = torch.relu(embeds @ adapter.added.lora_A + adapter.added.lora_a)
    torch.testing.assert_close(adapter.add_update(embeds, from_end=True), embeds + hidden @ adapter.added.lora_B
                               + adapter.added.lora_b)  # fmt: skip
    assert adapter.compose()[1] is None and adapter.max_length is None
    adapter.train()  # dropout p = 0.1 on e A + a while training
    assert not torch.equal(adapter.add_update(embeds, from_end=False), adapter.add_update(embeds, from_end=False))


def test_position_wise_update_rows_from_start_or_end():
    torch.manual_seed(0)
    adapter = PromptAdapter(PromptTuningConfig(scap=True, sub_dim_scap=8, max_length=6, num_virtual_tokens=2), D)
    embeds = torch.zeros(1, 4, D)
    rows = adapter.compose()[1]
    torch.testing.assert_close(adapter.add_update(embeds, from_end=False)[0], rows[:4])
    torch.testing.assert_close(adapter.add_update(embeds, from_end=True)[0], rows[2:])


FAMILY = {
    "DPT": dict(peft_type="PROMPT_TUNING_DPT", lodim_r=3),
    "ULPT": dict(peft_type="PROMPT_TUNING_LODIM", lodim_r=2, num_random_proj=2),
    "ADePT": dict(peft_type="PROMPT_TUNING_LORAX", r=3),
    "ULPT prompt + SCAP update": dict(prompt_kind="random_projection", update_kind="codebook", sub_dim_scap=8),
}


@pytest.mark.parametrize("method", FAMILY)
def test_save_load_round_trip_and_named_adapters(method, t5_backbone, tmp_path):
    """save_pretrained -> from_pretrained / load_adapter give the same outputs; ULPT's frozen projection
    travels in the adapter file and stays frozen; the new adapter serves as a named adapter."""
    torch.manual_seed(0)
    config = PromptTuningConfig(num_virtual_tokens=4, max_length=12, **FAMILY[method])
    model = get_peft_model(t5_backbone, config).eval()
    with torch.no_grad():
        for param in model.named_adapter_tensors().values():
            param.normal_(0, 0.5)
    ids = torch.randint(2, 100, (2, 7))
    labels = torch.randint(2, 100, (2, 3))
    with torch.no_grad():
        before = model(input_ids=ids, labels=labels).logits
    model.save_pretrained(tmp_path / "a")
    saved = read_adapter_tensors(tmp_path / "a")
    assert (KEY_ULPT_PROJECTION in saved) == (config.kinds[0] == "random_projection")
    torch.manual_seed(123)  # a fresh draw would give another projection: the file's must win
    loaded = PeftModel.from_pretrained(t5_backbone, tmp_path / "a").eval()
    assert loaded.adapter_config.method_name == method
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, labels=labels).logits, before)
        loaded.load_adapter(tmp_path / "a", adapter_name="again", is_trainable=True)
        out = loaded(input_ids=ids, labels=labels, adapter_names=["again", "default"]).logits
    assert torch.equal(out, before)
    trainable = {p for p in loaded.adapter_module("again").parameters() if p.requires_grad}
    assert sum(p.numel() for p in trainable) == config.param_count(D).total
    for tensor in loaded.adapter_module("again").named_frozen_tensors().values():
        assert not tensor.requires_grad


def test_ulpt_folder_without_projection_or_rng_state_is_refused(t5_backbone, tmp_path):
    config = PromptTuningConfig(peft_type="PROMPT_TUNING_LODIM", num_virtual_tokens=4, lodim_r=2)
    get_peft_model(t5_backbone, config).save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / WEIGHTS_NAME))
    del tensors[KEY_ULPT_PROJECTION]
    save_file(tensors, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="rng_state.pth"):
        PeftModel.from_pretrained(t5_backbone, tmp_path)


def test_tokenwise_decoder_only_generation_updates_every_token(tiny_llama_dir, monkeypatch):
    """ADePT's original decoder-only generate fails (docs/fidelity.md#f-adept). Ours gives generated tokens the
    update too, as training gives every token: each greedy token is the argmax of the teacher-forced forward
    over the input plus the tokens so far (where that forward applies the update to all of them)."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    config = PromptTuningConfig(peft_type="PROMPT_TUNING_LORAX", num_virtual_tokens=3, r=2, max_length=8)
    model = get_peft_model(base, config).eval()
    with torch.no_grad():
        for param in model.added_parameters():
            param.normal_(0, 1.0)
    ids = torch.randint(2, 100, (2, 8))
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
        assert out.shape == (2, 12) and torch.equal(out[:, :8], ids)
        for k in range(8, 12):
            logits = model(input_ids=out[:, :k]).logits[:, -1]
            assert torch.equal(logits.argmax(-1), out[:, k])
        # the check can fail: new tokens embedded without the update give other tokens
        monkeypatch.setattr(type(model), "_update_new_tokens", lambda self, inputs, names: None)
        plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert not torch.equal(plain, out)


def test_original_ulpt_folder_passes_the_planner_check(shared_dir, tmp_path):
    """--peft_model_id with an original ULPT folder: its tensors check out (the projection comes from
    rng_state.pth); the same folder without rng_state.pth is refused before any weights load."""
    import shutil

    from training.planner.checkpoints import check_adapter_tensors
    from training.planner.checks import ConfigError

    folder = shared_dir / "golden-family" / "t5_ulpt"
    if not folder.is_dir():
        pytest.skip("../shared/golden-family is not present")
    config = PromptTuningConfig.from_pretrained(folder)
    check_adapter_tensors(folder, config, 64, "--peft_model_id")
    copy = tmp_path / "ulpt"
    shutil.copytree(folder, copy)
    (copy / "rng_state.pth").unlink()
    with pytest.raises(ConfigError, match="rng_state.pth"):
        check_adapter_tensors(copy, config, 64, "--peft_model_id")
