"""Safe loading: pickles that run code are refused, remote code is off, adapter configs are checked first.

The malicious ``adapter_model.bin`` is a real ``torch.save`` file whose unpickling calls ``open(marker,
"w")``; the test first shows that an unsafe load does create the marker, so the refusals below are
not vacuous.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_reliability_support import WeightsLoaded, no_weights, train_argv
from transformers import AutoModelForSeq2SeqLM

from peft import PeftModel, PromptTuningConfig, get_peft_model
from train import main


class CreatesFile:
    """Unpickling this object calls ``open(path, "w")``: arbitrary code would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def write_malicious_adapter(folder: Path, marker: Path, config: PromptTuningConfig) -> Path:
    """An adapter folder with a valid config and an ``adapter_model.bin`` carrying the payload."""
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    state = {"prompt_embeddings": torch.zeros(4, 16), "prompt_encoder.lora_embedding_A": CreatesFile(marker)}
    torch.save(state, folder / "adapter_model.bin")
    return folder / "adapter_model.bin"


def dept_config(**kw) -> PromptTuningConfig:
    return PromptTuningConfig(num_virtual_tokens=4, max_length=16, r=2, **kw)


@pytest.fixture
def malicious(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code_ran"
    path = write_malicious_adapter(tmp_path / "adapter", marker, dept_config(scpp=True, sub_dim_scpp=4))
    # control: the payload is live, an unsafe load runs it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_from_pretrained_refuses_a_code_running_pickle(malicious, small_t5_dir):
    path, marker = malicious
    base = AutoModelForSeq2SeqLM.from_pretrained(small_t5_dir)
    with pytest.raises(ValueError, match="refused") as info:
        PeftModel.from_pretrained(base, path.parent)
    assert str(path) in str(info.value)
    assert "io.open" in str(info.value)  # names the refused callable
    assert not marker.exists()


def test_transfer_init_refuses_a_code_running_pickle(malicious, small_t5_dir):
    path, marker = malicious
    base = AutoModelForSeq2SeqLM.from_pretrained(small_t5_dir)
    config = dept_config(scpp=True, sub_dim_scpp=4, codebook_size_scpp=2, pretrain_scpp_ckpt=str(path.parent))
    with pytest.raises(ValueError, match="refused") as info:
        get_peft_model(base, config)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("route", ["--peft_model_id", "--pretrain_scpp_ckpt"])
def test_train_refuses_a_code_running_pickle_before_weights_load(
    route, malicious, small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    path, marker = malicious
    flags = {
        "--peft_model_id": ["--peft_model_id", str(path.parent)],
        "--pretrain_scpp_ckpt": ["--scpp", "True", "--sub_dim_scpp", "4", "--codebook_size_scpp", "2",
                                 "--pretrain_init", "True", "--pretrain_scpp_ckpt", str(path.parent)],
    }[route]  # fmt: skip
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    out = tmp_path / "out"
    assert main(train_argv(small_t5_dir, rte_data, out, "--max_steps", "1", *flags)) == 2
    line = the_error_line(capsys.readouterr().err)
    assert route in line and str(path) in line and "refused" in line, line
    assert not marker.exists()


def the_error_line(stderr: str) -> str:
    """The one ``error:`` line a refused run shows (warnings, if any, may stand beside it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]



def remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config points at a Python file that creates ``marker`` when imported."""
    folder.mkdir()
    config = {"model_type": "custom-t5", "architectures": ["CustomModel"],
              "auto_map": {"AutoConfig": "custom.CustomConfig", "AutoModelForSeq2SeqLM": "custom.CustomModel"}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class CustomConfig(PretrainedConfig):\n    model_type = 'custom-t5'\n"
    )
    return folder


def test_remote_code_is_off_unless_passed(rte_data, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "code_ran"
    model = remote_code_model(tmp_path / "model", marker)
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # a terminal must not turn this into a prompt
    assert main(train_argv(model, rte_data, tmp_path / "out", "--max_steps", "1")) == 2
    line = the_error_line(capsys.readouterr().err)
    assert "--trust_remote_code" in line and str(model) in line, line
    assert not marker.exists()


def test_trust_remote_code_flag_defaults_off():
    from train import parse_args

    model_args, _, _ = parse_args(["--model_name_or_path", "m", "--output_dir", "o", "--task_name", "rte"])
    assert model_args.trust_remote_code is False


def save_adapter(base_dir: Path, folder: Path, config: PromptTuningConfig) -> Path:
    """A trained-looking adapter of ``config`` for the model in ``base_dir``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    auto = (
        AutoModelForCausalLM
        if "llama" in AutoConfig.from_pretrained(base_dir).model_type
        else AutoModelForSeq2SeqLM
    )
    get_peft_model(auto.from_pretrained(base_dir), config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        ({"token_dim": 32}, ["32", "16", "token_dim"]),  # saved for a d=32 model, this one has d=16
        ({"task_type": "CAUSAL_LM"}, ["CAUSAL_LM", "seq2seq"]),  # a decoder-only adapter on T5
        ({"max_length": 300}, ["(16, 2)", "(300, 2)"]),  # config edited, tensors not: A's shape (L, r)
        ({"scpp": True, "sub_dim_scpp": 4}, ["codebook_prompt"]),  # SCPP config, dense-prompt tensors
        ({}, None),  # control: the intact adapter passes and reaches the weights
    ],
)
def test_saved_adapter_config_is_checked_against_the_model_before_weights_load(
    mutate, expected, small_t5_dir, rte_data, tmp_path, capsys, monkeypatch
):
    adapter = save_adapter(small_t5_dir, tmp_path / "adapter", dept_config())
    saved = json.loads((adapter / "adapter_config.json").read_text())
    saved.update(mutate)
    (adapter / "adapter_config.json").write_text(json.dumps(saved))
    capsys.readouterr()  # drop the progress output of building the adapter above
    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    argv = train_argv(
        small_t5_dir, rte_data, tmp_path / "out", "--max_steps", "1", "--peft_model_id", str(adapter)
    )
    if expected is None:  # a valid adapter passes validation and reaches the weights
        with pytest.raises(WeightsLoaded):
            main(argv)
        return
    assert main(argv) == 2
    line = the_error_line(capsys.readouterr().err)
    assert "--peft_model_id" in line and all(value in line for value in expected), line
