"""PromptTuningConfig: JSON round trip, original-format files, validation errors, budget rule."""

from __future__ import annotations

import json
import warnings

import pytest

from peft import AdapterConfigError, BudgetWarning, PromptTuningConfig
from training.planner.config_flags import in_flag_terms

ORIGINAL_DEPT = {
    "base_model_name_or_path": "t5-base",
    "bias": "none",
    "hidden_size": 768,
    "inference_mode": True,
    "init_lora_weights": True,
    "load_lora_embedding_B": True,
    "load_lora_embeddings": True,
    "lora_alpha": 8,
    "max_length": 256,
    "num_attention_heads": 12,
    "num_layers": 12,
    "num_transformer_submodules": 1,
    "num_virtual_tokens": 80,
    "peft_type": "PROMPT_TUNING_LORA",
    "prompt_tuning_init": "TEXT",
    "prompt_tuning_init_text": "Classify this text is postive or not:",
    "r": 15,
    "revision": None,
    "save_lora_embeddings": True,
    "task_type": "SEQ_2_SEQ_LM",
    "token_dim": 768,
    "tokenizer_name_or_path": "t5-base",
}


def test_json_round_trip(tmp_path):
    cfg = PromptTuningConfig(
        num_virtual_tokens=7, max_length=33, r=3, scpp=True, sub_dim_scpp=8, token_dim=64
    )
    cfg.save_pretrained(tmp_path)
    loaded = PromptTuningConfig.from_pretrained(tmp_path)
    assert loaded == cfg
    assert json.loads((tmp_path / "adapter_config.json").read_text())["sub_dim_scpp"] == 8


def test_reads_original_dept_config_with_unknown_fields(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({**ORIGINAL_DEPT, "some_future_field": 3}))
    cfg = PromptTuningConfig.from_pretrained(tmp_path)
    assert (cfg.num_virtual_tokens, cfg.max_length, cfg.r, cfg.token_dim) == (80, 256, 15, 768)
    assert cfg.prompt_tuning_init == "TEXT" and cfg.method_name == "DePT"
    assert cfg.extra_fields["hidden_size"] == 768 and cfg.extra_fields["some_future_field"] == 3
    cfg.validate()
    # our re-save keeps the extra fields
    cfg.save_pretrained(tmp_path / "again")
    assert PromptTuningConfig.from_pretrained(tmp_path / "again") == cfg


def test_method_names():
    assert PromptTuningConfig(peft_type="PROMPT_TUNING").method_name == "PT"
    assert PromptTuningConfig().method_name == "DePT"
    assert PromptTuningConfig(scpp=True).method_name == "ACCEPT-SCPP"
    assert PromptTuningConfig(scap=True).method_name == "ACCEPT-SCAP"
    assert PromptTuningConfig(scpp=True, scap=True).method_name == "ACCEPT"


def test_scaling_is_alpha_over_sqrt_r():
    assert PromptTuningConfig(r=30).scaling == pytest.approx(1.46059, abs=1e-5)
    assert PromptTuningConfig(r=0).scaling == 0.0


@pytest.mark.parametrize(
    "kwargs, field, flag",
    [
        ({"scpp": True, "sub_dim_scpp": 10}, "sub_dim_scpp", "--sub_dim_scpp"),
        ({"scap": True, "sub_dim_scap": 7}, "sub_dim_scap", "--sub_dim_scap"),
        ({"scpp": True, "codebook_size_scpp": 0}, "codebook_size_scpp", "--codebook_size_scpp"),
        ({"scap": True, "codebook_size_scap": 0}, "codebook_size_scap", "--codebook_size_scap"),
        ({"num_virtual_tokens": 0}, "num_virtual_tokens", "--prefix_length"),
        ({"r": -1}, "r", "--r"),
        ({"scap": True, "max_length": None}, "max_length", "--max_seq_length"),
        ({"max_length": 0}, "max_length", "--max_seq_length"),
        ({"peft_type": "PROMPT_TUNING", "scpp": True}, "scpp", "--peft_type"),
        ({"peft_type": "LORA"}, "peft_type", "--peft_type"),
        ({"scpp": True, "prompt_tuning_init": "TEXT"}, "prompt_tuning_init", "--scpp"),
    ],
)
def test_validation_errors_name_the_field_and_train_py_names_the_flag(kwargs, field, flag):
    """The library speaks in config fields; the planner's mapping turns them into train.py's flags."""
    with pytest.raises(AdapterConfigError) as raised:
        PromptTuningConfig(**kwargs).validate(token_dim=768)
    assert raised.value.field == field and field in str(raised.value)
    assert "--" not in str(raised.value)
    assert flag in in_flag_terms(raised.value)


def test_flag_terms_replace_whole_field_names_only():
    error = AdapterConfigError(
        "max_length 9 + num_virtual_tokens 3 exceed max_length_x.", ("max_length", "num_virtual_tokens")
    )
    assert in_flag_terms(error) == "--max_seq_length 9 + --prefix_length 3 exceed max_length_x."
    assert in_flag_terms(ValueError("max_length 9")) == "max_length 9"  # untyped errors pass unchanged


def test_budget_warning_states_both_numbers():
    cfg = PromptTuningConfig(num_virtual_tokens=60, max_length=348, r=30)  # MultiRC run: 33,480 > 30,720
    with pytest.warns(BudgetWarning, match="33,480 > 30,720"):
        cfg.validate(token_dim=768)
    with pytest.raises(ValueError, match="33,480 > 30,720"):
        PromptTuningConfig(num_virtual_tokens=60, max_length=348, r=30, enforce_budget=True).validate(
            token_dim=768
        )


def test_paper_configs_fit_the_budget():
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetWarning)
        PromptTuningConfig(num_virtual_tokens=60, max_length=256, r=30, enforce_budget=True).validate(768)
        PromptTuningConfig(
            num_virtual_tokens=60, max_length=256, scpp=True, sub_dim_scpp=32, codebook_size_scpp=20, r=30
        ).validate(768)
        PromptTuningConfig(peft_type="PROMPT_TUNING", num_virtual_tokens=100).validate(768)
    count = PromptTuningConfig(
        num_virtual_tokens=60, max_length=256, scpp=True, sub_dim_scpp=32, codebook_size_scpp=20, r=30
    ).param_count(768)
    assert (count.prepended, count.added, count.total) == (44_160, 30_720, 74_880)


def test_num_transformer_submodules_two_is_refused():
    with pytest.raises(ValueError, match="num_transformer_submodules"):
        PromptTuningConfig.from_dict({**ORIGINAL_DEPT, "num_transformer_submodules": 2}).validate()
