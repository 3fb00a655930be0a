"""Parity with the original ACCEPT/DePT code on tiny models (reference outputs in ../shared/golden)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from peft import PeftModel

CASES = ["dept", "scpp", "scap", "scpp_scap"]
M = 8


@pytest.fixture(scope="module")
def golden(shared_dir):
    root = shared_dir / "golden"
    return root, json.loads((root / "golden.json").read_text())


def _run_original_adapter(root, prefix: str, case: str, auto_cls, **generate_kwargs):
    """Load ``<prefix>_<case>`` onto the golden tiny backbone; forward + greedy generation on its batch."""
    base = auto_cls.from_pretrained(root / f"tiny-{prefix}")
    model = PeftModel.from_pretrained(base, root / f"{prefix}_{case}").eval()
    batch = load_file(str(root / f"{prefix}_batch.safetensors"))
    ref = load_file(str(root / f"{prefix}_{case}" / "outputs.safetensors"))
    with torch.no_grad():
        out = model(**batch)
        generated = model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=False, **generate_kwargs
        )
    return model, batch, ref, out, generated


@pytest.mark.parametrize("case", CASES)
def test_t5_matches_original(golden, case):
    root, spec = golden
    expected = spec["cases"][case]
    model, _, ref, out, generated = _run_original_adapter(
        root, "t5", case, AutoModelForSeq2SeqLM, max_length=6, num_beams=1
    )
    assert abs(out.loss.item() - expected["loss"]) < 1e-4
    assert (out.logits - ref["logits"]).abs().max().item() < 1e-3
    assert generated.tolist() == expected["generated"]
    assert model.count_trainable_parameters().total == expected["trainable_params"]
    shapes = {k: list(v.shape) for k, v in model.named_adapter_tensors().items()}
    assert shapes == expected["adapter_keys"]


@pytest.mark.parametrize("case", CASES)
def test_llama_matches_original(golden, case):
    root, spec = golden
    expected = spec["llama_cases"][case]
    _, batch, ref, out, generated = _run_original_adapter(root, "llama", case, AutoModelForCausalLM, max_length=20)
    assert abs(out.loss.item() - expected["loss"]) < 1e-4
    assert list(out.logits.shape) == expected["logits_shape"]
    attended = torch.cat([torch.ones(3, M, dtype=torch.long), batch["attention_mask"]], 1).bool()
    assert (out.logits - ref["logits"]).abs()[attended].max().item() < 1e-3
    # row 0 is unpadded, so generation positions agree with the original's by construction
    assert generated[0].tolist() == expected["generated"][0]
