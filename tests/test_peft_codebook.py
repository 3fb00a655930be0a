"""The codebook building block and the adapter's initialisations (docs/fidelity.md#f-init)."""

from __future__ import annotations

import math

import pytest
import torch

from peft.codebook import CodebookMatrix, compose
from peft.config import PromptTuningConfig
from peft.encoders import CodebookUpdate, DensePrompt, LowRankUpdate, PromptAdapter


def test_one_hot_weights_reproduce_chosen_codewords():
    torch.manual_seed(0)
    block = CodebookMatrix(num_rows=5, dim=12, sub_dim=4, codebook_size=6)
    choice = torch.randint(0, 6, (5, 3))
    with torch.no_grad():
        block.weight.zero_()
        block.weight.scatter_(2, choice.unsqueeze(-1), 1.0)
    dense = block()
    for i in range(5):
        for k in range(3):
            assert torch.equal(dense[i, 4 * k : 4 * (k + 1)], block.codebook[k, choice[i, k]])


def test_single_subspace_is_a_rank_c_product():
    torch.manual_seed(1)
    block = CodebookMatrix(num_rows=9, dim=16, sub_dim=16, codebook_size=3)
    expected = block.weight[:, 0, :] @ block.codebook[0]
    torch.testing.assert_close(block(), expected, rtol=1e-6, atol=1e-7)
    assert torch.linalg.matrix_rank(block().detach()) == 3


def test_composition_matches_independent_loop():
    torch.manual_seed(2)
    w, cb = torch.randn(4, 3, 5), torch.randn(3, 5, 2)
    expected = torch.zeros(4, 6)
    for i in range(4):
        for k in range(3):
            for t in range(2):
                expected[i, 2 * k + t] = sum(w[i, k, c] * cb[k, c, t] for c in range(5))
    torch.testing.assert_close(compose(w, cb), expected, rtol=1e-5, atol=1e-6)


def test_kaiming_bounds_scpp_and_scap():
    torch.manual_seed(3)
    scpp = CodebookMatrix(num_rows=60, dim=768, sub_dim=32, codebook_size=20)  # K=24, C=20
    assert scpp.weight.abs().max() <= 1 / math.sqrt(24 * 20) and scpp.weight.abs().max() > 0.9 / math.sqrt(
        480
    )
    assert scpp.codebook.abs().max() <= 1 / math.sqrt(20 * 32)
    scap = CodebookUpdate(max_length=256, dim=768, sub_dim=256, codebook_size=20)  # K=3
    bound = math.sqrt(6 / (20 * 256))  # a = 0
    assert scap.codebook.abs().max() <= bound and scap.codebook.abs().max() > 0.9 * bound
    assert scap.weight.abs().max() <= 1 / math.sqrt(3 * 20)
    assert scpp.weight.dtype == scap.codebook.dtype == torch.float32


def test_low_rank_init_and_scaling():
    torch.manual_seed(4)
    update = LowRankUpdate(max_length=16, dim=8, r=4, scaling=2.0)
    assert torch.count_nonzero(update.lora_B) == 0 and torch.count_nonzero(update()) == 0
    assert update.lora_A.abs().max() <= 1 / math.sqrt(4)
    with torch.no_grad():
        update.lora_B.normal_()
    torch.testing.assert_close(update(), 2.0 * update.lora_A @ update.lora_B)


def test_random_prompt_is_standard_normal():
    torch.manual_seed(5)
    prompt = DensePrompt(200, 64).embedding
    assert abs(prompt.mean().item()) < 0.02 and abs(prompt.std().item() - 1) < 0.02


def test_text_init_repeats_and_truncates():
    table = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    prompt = DensePrompt(7, 4)
    prompt.init_from_token_ids(table, [3, 1, 4])
    assert torch.equal(prompt.embedding, table[[3, 1, 4, 3, 1, 4, 3]])
    short = DensePrompt(2, 4)
    short.init_from_token_ids(table, [3, 1, 4])
    assert torch.equal(short.embedding, table[[3, 1]])


@pytest.mark.parametrize(
    "scpp, scap, r", [(False, False, 4), (True, False, 4), (False, True, 4), (True, True, 0)]
)
def test_adapter_parts_follow_the_switches(scpp, scap, r):
    cfg = PromptTuningConfig(
        num_virtual_tokens=3, max_length=5, r=r, scpp=scpp, scap=scap, sub_dim_scpp=4, sub_dim_scap=8
    )
    adapter = PromptAdapter(cfg, dim=16)
    keys = set(adapter.named_adapter_tensors())
    assert ({"prompt_weight", "codebook_prompt"} <= keys) == scpp
    assert ("prompt_embeddings" in keys) == (not scpp)
    assert ({"prompt_encoder.lora_weight", "prompt_encoder.codebook_lora"} <= keys) == scap
    assert ("prompt_encoder.lora_embedding_A" in keys) == (not scap and r > 0)
    prompt, added = adapter.compose()
    assert prompt.shape == (3, 16) and added.shape == (5, 16)
    n_params = sum(p.numel() for p in adapter.parameters())
    assert n_params == cfg.param_count(16).total


def test_add_update_meets_the_input_from_the_start_or_the_end():
    """The update slot the model calls: rows [:n] for right-padded inputs, [L - n:] for left-padded ones,
    the materialised copy when one is active, and the embeddings unchanged without an update (PT)."""
    torch.manual_seed(0)
    adapter = PromptAdapter(PromptTuningConfig(num_virtual_tokens=2, max_length=5, r=2), dim=4)
    torch.nn.init.normal_(adapter.added.lora_B)
    _, added = adapter.compose()
    embeds = torch.randn(3, 2, 4)
    torch.testing.assert_close(adapter.add_update(embeds, from_end=False), embeds + added[:2], rtol=0, atol=0)
    torch.testing.assert_close(adapter.add_update(embeds, from_end=True), embeds + added[3:], rtol=0, atol=0)
    adapter.set_materialized(True)
    with torch.no_grad():  # materialised copies are for inference
        adapter.added.lora_B.zero_()  # the cached copy is what is added until it is dropped
        torch.testing.assert_close(adapter.add_update(embeds, from_end=False), embeds + added[:2], rtol=0, atol=0)
    adapter.set_materialized(False)
    torch.testing.assert_close(adapter.add_update(embeds, from_end=False), embeds, rtol=0, atol=0)
    plain = PromptAdapter(PromptTuningConfig(peft_type="PROMPT_TUNING", num_virtual_tokens=2), dim=4)
    assert plain.add_update(embeds, from_end=True) is embeds
