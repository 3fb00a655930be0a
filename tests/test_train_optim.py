"""Optimizer groups and hyper-parameters, the linear schedule, gradient-accumulation correctness and the
non-finite-loss stop of ``training.trainer.PromptTrainer``."""

from __future__ import annotations

import datasets
import pytest
import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration, TrainerCallback

from peft import PromptTuningConfig, get_peft_model
from peft.family import SEQ2SEQ
from train import TrainingArguments
from training.optim import build_linear_schedule, build_optimizer, parameter_groups
from training.trainer import NonFiniteLossError, PromptTrainer

L = 16


def dept_model(model_dir, scap: bool = False):
    torch.manual_seed(0)
    base = T5ForConditionalGeneration.from_pretrained(model_dir)
    config = PromptTuningConfig(
        num_virtual_tokens=4, max_length=L, r=2, scap=scap, sub_dim_scap=8, codebook_size_scap=2
    )
    model = get_peft_model(base, config)
    with torch.no_grad():  # B starts at 0: make A@B non-zero so both groups get gradients
        for p in model.added_parameters():
            p.normal_(0, 0.1)
    return model


def test_two_learning_rate_groups_and_explicit_adamw(tiny_t5_dir):
    model = dept_model(tiny_t5_dir)
    optimizer = build_optimizer(model, learning_rate=0.3, added_embedding_lr=5e-3, weight_decay=0.0)
    assert isinstance(optimizer, torch.optim.AdamW)
    prepended, added = optimizer.param_groups
    assert (prepended["lr"], added["lr"]) == (0.3, 5e-3)
    assert {id(p) for p in prepended["params"]} == {id(p) for p in model.prepended_parameters()}
    assert {id(p) for p in added["params"]} == {id(p) for p in model.added_parameters()}
    for group in optimizer.param_groups:
        assert group["betas"] == (0.9, 0.999) and group["eps"] == 1e-6 and group["weight_decay"] == 0.0
    # without --added_embedding_lr both groups use --learning_rate
    assert [g["lr"] for g in parameter_groups(model, 0.3, None)] == [0.3, 0.3]


def test_scap_parameters_go_to_the_added_group(tiny_t5_dir):
    model = dept_model(tiny_t5_dir, scap=True)
    groups = parameter_groups(model, 0.3, 1e-4)
    assert sum(p.numel() for p in groups[1]["params"]) == model.count_trainable_parameters().added


@pytest.mark.parametrize(
    ("peft_type", "added"), [("PROMPT_TUNING_LORAX", 4), ("PROMPT_TUNING_LODIM", 0), ("PROMPT_TUNING_DPT", 0)]
)
def test_family_groups_hold_their_trained_tensors(peft_type, added, tiny_t5_dir):
    """ADePT's A, a, B, b take --lora_embedding_lr; DPT/ULPT have no added group; ULPT's frozen projection
    is in no group, and one step moves every trained tensor (ADePT's zero-initialised B and b included)."""
    torch.manual_seed(0)
    base = T5ForConditionalGeneration.from_pretrained(tiny_t5_dir)
    model = get_peft_model(base, PromptTuningConfig(peft_type=peft_type, num_virtual_tokens=4, max_length=L, r=2))
    optimizer = build_optimizer(model, learning_rate=0.3, added_embedding_lr=1e-2, weight_decay=0.0)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    added_groups = [g for g in optimizer.param_groups if g["name"] == "added"]
    assert [(len(g["params"]), g["lr"]) for g in added_groups] == ([(added, 1e-2)] if added else [])
    assert {id(p) for p in grouped} == {id(p) for p in model.named_adapter_tensors().values()}
    before = {k: t.detach().clone() for k, t in model.named_saved_tensors().items()}
    ids = torch.randint(2, 100, (2, 6))
    for _ in range(2):  # B = 0 at init: A and a get gradients from the second step on
        model(input_ids=ids, labels=ids[:, :3].contiguous()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = model.named_saved_tensors()
    frozen = set(model.adapter.named_frozen_tensors())
    for key, tensor in after.items():
        assert torch.equal(tensor, before[key]) == (key in frozen), key


def test_linear_schedule_matches_the_released_mrpc_log():
    """DePT MRPC run: lr 0.3 at step 500 (end of warm-up), 0.28421 at step 1000 with max_steps 10,000."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=0.3)
    schedule = build_linear_schedule(optimizer, num_warmup_steps=500, num_training_steps=10_000)
    lrs = []
    for _ in range(1000):
        optimizer.step()
        schedule.step()
        lrs.append(schedule.get_last_lr()[0])
    assert lrs[499] == pytest.approx(0.3)  # logged at step 500 (after 500 scheduler steps)
    assert lrs[999] == pytest.approx(0.3 * 9000 / 9500)  # 0.28421...
    assert round(lrs[999], 5) == 0.28421
    with pytest.raises(ValueError, match="positive"):
        build_linear_schedule(optimizer, 0, -1)  # the original passed -1 (docs/fidelity.md#f-schedule)


def tiny_dataset(tokenizer, n: int = 8) -> datasets.Dataset:
    """Fixed-length inputs and two targets of equal token length (so batch means are comparable)."""
    pairs = [("yes", "no"), ("cats", "dogs"), ("ab", "cd"), ("1", "1")]
    targets = next(p for p in pairs if len(tokenizer(p[0]).input_ids) == len(tokenizer(p[1]).input_ids))
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for i in range(n):
        enc = tokenizer(f"sentence {i} is about {'cats' if i % 2 else 'dogs'}", max_length=L,
                        padding="max_length", truncation=True)  # fmt: skip
        rows["input_ids"].append(enc["input_ids"])
        rows["attention_mask"].append(enc["attention_mask"])
        rows["labels"].append(tokenizer(targets[i % 2]).input_ids)
    return datasets.Dataset.from_dict(rows)


class GradCapture(TrainerCallback):
    """Copies the gradients at the optimizer step (after accumulation)."""

    def __init__(self, model):
        self.model = model
        self.grads: dict[str, torch.Tensor] = {}

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}


def one_update(model_dir, out_dir, batch_size: int, accumulation: int, scaled_for_ga: bool = False):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = dept_model(model_dir)
    args = TrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.1, added_embedding_lr=0.01,
        max_grad_norm=0.0, save_strategy="no", report_to="none", seed=0, disable_tqdm=True,
        dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = PromptTrainer(
        model=model, args=args, train_dataset=tiny_dataset(tokenizer), processing_class=tokenizer,
        family=SEQ2SEQ, max_new_tokens=3, added_embedding_lr=0.01,
    )  # fmt: skip
    if scaled_for_ga:  # what transformers 5 assumes for a forward with **kwargs (the bug being guarded)
        trainer.loss_is_scaled_for_ga = True
    capture = GradCapture(model)
    trainer.add_callback(capture)
    trainer.train()
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return capture.grads, params


def test_gradient_accumulation_equals_the_large_batch(tiny_t5_dir, tmp_path):
    """2 x batch 4 with accumulation 2 == batch 8: same accumulated gradient and same update."""
    grads8, params8 = one_update(tiny_t5_dir, tmp_path / "a", batch_size=8, accumulation=1)
    grads4, params4 = one_update(tiny_t5_dir, tmp_path / "b", batch_size=4, accumulation=2)
    assert set(grads8) == set(grads4) and len(grads8) == 3  # prompt, A, B
    for name in grads8:
        assert grads8[name].abs().sum() > 0, name
        torch.testing.assert_close(grads4[name], grads8[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(params4[name], params8[name], rtol=1e-5, atol=1e-6)
    # the test can fail: without the division by the accumulation steps the gradient doubles
    grads_bug, _ = one_update(tiny_t5_dir, tmp_path / "c", batch_size=4, accumulation=2, scaled_for_ga=True)
    for name in grads8:
        torch.testing.assert_close(grads_bug[name], 2 * grads8[name], rtol=1e-5, atol=1e-7)


def test_non_finite_loss_stops_before_the_optimizer_step(tiny_t5_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    model = dept_model(tiny_t5_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    calls = {"n": 0}

    def poison(module, inputs, output):  # NaN logits from the 2nd forward on
        calls["n"] += 1
        return output * float("nan") if calls["n"] >= 2 else output

    model.get_base_model().lm_head.register_forward_hook(poison)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                             learning_rate=0.1, save_strategy="no", report_to="none", disable_tqdm=True,
                             dataloader_pin_memory=False)  # fmt: skip
    trainer = PromptTrainer(model=model, args=args, train_dataset=tiny_dataset(tokenizer),
                            processing_class=tokenizer, family=SEQ2SEQ, max_new_tokens=3)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"at step 2; last finite loss: \d+\.\d+"):
        trainer.train()
    assert trainer.state.global_step == 1
    after = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert all(torch.isfinite(p).all() for p in after.values())
    assert any(not torch.equal(before[n], after[n]) for n in before)  # step 1 was taken
