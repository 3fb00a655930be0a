"""Mixed precision and gradient checkpointing through train.py, for T5 and Llama (CPU smoke tests).

--bf16 (autocast) with a float32 or bfloat16 backbone trains with float32 adapter tensors; --fp16 is
refused for T5 with the reason; gradient checkpointing (inputs_embeds into checkpointed blocks, frozen
embedding) gives the same adapter as the run without it.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from test_reliability_support import read_json, train_argv

import train
from train import main

pytestmark = pytest.mark.slow
TWO_STEPS = ("--max_steps", "2", "--use_cpu", "True")


def check_trained(out, dtype=torch.float32) -> dict[str, torch.Tensor]:
    losses = [e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    tensors = load_file(out / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {dtype}
    assert tensors["prompt_encoder.lora_embedding_B"].abs().sum() > 0  # B starts at zero: it was trained
    return tensors


@pytest.mark.parametrize(
    ("family", "flags"),
    [("t5", ["--bf16"]), ("llama", ["--bf16", "--dtype", "bfloat16"]),  # Llama: the 7B recipe's bf16 weights
     ("llama", ["--bf16", "--dtype", "bfloat16", "--peft_type", "PROMPT_TUNING_LORAX"])],  # ADePT: a network on bf16 rows
)  # fmt: skip
def test_bf16_trains_with_float32_adapter(family, flags, small_t5_dir, small_llama_dir, rte_data, tmp_path):
    model = small_t5_dir if family == "t5" else small_llama_dir
    out = tmp_path / "run"
    assert main(train_argv(model, rte_data, out, *TWO_STEPS, *flags)) == 0
    check_trained(out)
    assert read_json(out / "run_config.json")["training_args"]["bf16"] is True


def test_fp16_is_refused_for_t5_with_the_reason(small_t5_dir, rte_data, tmp_path, capsys):
    assert main(train_argv(small_t5_dir, rte_data, tmp_path / "run", *TWO_STEPS, "--fp16")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fp16" in err[0] and "overflows in float16" in err[0] and "--bf16" in err[0]


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_gradient_checkpointing_gives_the_same_adapter(
    family, small_t5_dir, small_llama_dir, rte_data, tmp_path, monkeypatch
):
    model = small_t5_dir if family == "t5" else small_llama_dir
    seen = []

    class Recorder(train.PromptTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            seen.append(self.model.get_base_model().is_activation_checkpointing)
            return super().training_step(model, inputs, num_items_in_batch)

    monkeypatch.setattr(train, "PromptTrainer", Recorder)
    runs = {}
    for checkpointing in ("False", "True"):
        out = tmp_path / checkpointing
        extra = ("--gradient_checkpointing", checkpointing, "--seed", "3")
        assert main(train_argv(model, rte_data, out, *TWO_STEPS, *extra)) == 0
        runs[checkpointing] = check_trained(out)
    assert seen == [False, False, True, True]  # the backbone really recomputed its blocks in the second run
    for key, value in runs["False"].items():
        torch.testing.assert_close(runs["True"][key], value, rtol=1e-5, atol=1e-6)
