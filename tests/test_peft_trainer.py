"""Our ``peft/`` shadows the HF ``peft`` distribution: transformers' Trainer must import and use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration

from peft import PromptTuningConfig, get_peft_model

REPO = Path(__file__).resolve().parents[1]

CHECK = """
import importlib.metadata as md
import transformers.trainer_utils as tu
from transformers import Seq2SeqTrainer, Trainer
from transformers.utils.import_utils import _is_package_available
import peft
assert tu.PeftModel is peft.PeftModel and tu.PeftMixedModel is peft.PeftMixedModel
assert peft.__file__.startswith({repo!r}), peft.__file__
print(_is_package_available("peft", return_version=True)[1])
"""


def _run(extra_path: str | None) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), extra_path) if p)
    result = subprocess.run(
        [sys.executable, "-c", CHECK.format(repo=str(REPO))],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


def test_imports_without_hf_peft_metadata():
    assert _run(None) == __import__("peft").__version__


def test_imports_with_hf_peft_installed(tmp_path):
    dist = tmp_path / "peft-0.21.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: peft\nVersion: 0.21.2\n")
    assert _run(str(tmp_path)) == "0.21.2"


class _Data(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {
            "input_ids": torch.randint(2, 64, (8,), generator=g),
            "attention_mask": torch.ones(8, dtype=torch.long),
            "labels": torch.randint(2, 64, (3,), generator=g),
        }


@pytest.mark.slow
def test_trainer_checkpoints_hold_only_the_adapter(tmp_path):
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=64,
        d_model=16,
        d_kv=4,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    base = T5ForConditionalGeneration(config)
    backbone = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = PromptTuningConfig(
        num_virtual_tokens=4, max_length=8, r=2, scpp=True, sub_dim_scpp=4, codebook_size_scpp=2
    )
    model = get_peft_model(base, cfg)
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=0.3,
        save_strategy="steps",
        save_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=_Data(), eval_dataset=_Data())
    assert trainer.model_accepts_loss_kwargs is False  # T5 loss is a batch mean: GA must divide it
    trainer.train()
    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert len(checkpoints) == 3
    for ckpt in checkpoints:
        assert (ckpt / "adapter_model.safetensors").is_file() and (ckpt / "adapter_config.json").is_file()
        assert not (ckpt / "model.safetensors").exists()
        assert set(load_file(str(ckpt / "adapter_model.safetensors"))) == set(model.named_adapter_tensors())
    best = load_file(str(Path(trainer.state.best_model_checkpoint) / "adapter_model.safetensors"))
    last = load_file(str(checkpoints[-1] / "adapter_model.safetensors"))
    for key, value in model.named_adapter_tensors().items():
        assert torch.equal(value.detach(), best[key])  # load_best_model_at_end loaded the best adapter
        assert value.requires_grad
    if Path(trainer.state.best_model_checkpoint) != checkpoints[-1]:
        assert any(not torch.equal(best[k], last[k]) for k in best)
    assert all(torch.equal(backbone[k], v) for k, v in base.state_dict().items())
