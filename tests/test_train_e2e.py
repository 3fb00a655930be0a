"""End-to-end runs of ``train.main`` on tiny models and local RTE-schema data (offline, a few steps).

Checks every output file of the run contract, the metric keys, the parameter counts against
``peft.budget``, the predictions files, and that the saved adapter is the best checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_rte
from safetensors.torch import load_file

from peft.budget import count_adapter_params
from peft.encoders import KEY_ULPT_PROJECTION
from train import main

pytestmark = pytest.mark.slow

N_TRAIN, N_VALIDATION = 16, 12  # rte is "small": HF validation is halved into validation (6) / test (6)
D = 32  # tiny models' width
L = 24  # --max_seq_length


@pytest.fixture(scope="module")
def rte_dir(tmp_path_factory) -> Path:
    return write_rte(tmp_path_factory.mktemp("data"), n_train=N_TRAIN, n_validation=N_VALIDATION)


def base_argv(model_dir: Path, data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir),
        "--task_name", "rte",
        "--data_dir", str(data_dir),
        "--output_dir", str(output_dir),
        "--max_seq_length", str(L),
        "--prefix_length", "4",
        "--r", "2",
        "--learning_rate", "0.3",
        "--added_embedding_lr", "1e-3",
        "--weight_decay", "0",
        "--max_steps", "3",
        "--warmup_steps", "1",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8",
        "--evaluation_strategy", "steps",
        "--eval_steps", "2",
        "--save_strategy", "steps",
        "--save_steps", "2",
        "--load_best_model_at_end",
        "--save_total_limit", "1",
        "--logging_steps", "1",
        "--do_train", "--do_eval", "--do_predict",
        "--disable_tqdm", "True",
        "--report_to", "none",
        *extra,
    ]  # fmt: skip


METHODS = {
    # method label -> (extra flags, expected ParamCount kwargs)
    "PT": (["--peft_type", "PROMPT_TUNING"], {"with_added": False}),
    "DePT": ([], {}),
    "ACCEPT-SCPP": (
        ["--scpp", "True", "--sub_dim_scpp", "8", "--codebook_size_scpp", "2"],
        {"scpp": True, "sub_dim_scpp": 8, "codebook_size_scpp": 2},
    ),
    "ACCEPT-SCAP": (
        ["--scap", "True", "--sub_dim_scap", "8", "--codebook_size_scap", "2"],
        {"scap": True, "sub_dim_scap": 8, "codebook_size_scap": 2},
    ),
    "ACCEPT": (
        ["--scpp", "True", "--scap", "True", "--sub_dim_scpp", "8", "--codebook_size_scpp", "2",
         "--sub_dim_scap", "8", "--codebook_size_scap", "2"],
        {"scpp": True, "sub_dim_scpp": 8, "codebook_size_scpp": 2, "scap": True, "sub_dim_scap": 8,
         "codebook_size_scap": 2},
    ),
    "DPT": (["--peft_type", "PROMPT_TUNING_DPT", "--lodim_r", "3"], {"prompt_kind": "lowrank", "lodim_r": 3,
                                                                     "update_kind": "none"}),
    "ULPT": (["--peft_type", "PROMPT_TUNING_LODIM", "--lodim_r", "2", "--num_random_proj", "2"],
             {"prompt_kind": "random_projection", "lodim_r": 2, "update_kind": "none"}),
    "ADePT": (["--peft_type", "PROMPT_TUNING_LORAX", "--lora_embedding_lr", "1e-3", "--added_embedding_lr", "1e-3"],
              {"update_kind": "tokenwise"}),
    "ULPT prompt + SCAP update": (
        ["--prompt_kind", "random_projection", "--update_kind", "codebook", "--sub_dim_scap", "8",
         "--codebook_size_scap", "2"],
        {"prompt_kind": "random_projection", "lodim_r": 2, "update_kind": "codebook", "sub_dim_scap": 8,
         "codebook_size_scap": 2},
    ),
}  # fmt: skip

RESULT_KEYS = {
    "train": {"epoch", "train_loss", "train_runtime", "train_samples", "train_samples_per_second",
              "train_steps_per_second"},
    "eval": {"epoch", "eval_loss", "eval_accuracy", "eval_invalid_predictions", "eval_runtime",
             "eval_samples_per_second", "eval_steps_per_second"},
    "test": {"test_loss", "test_accuracy", "test_invalid_predictions", "test_runtime",
             "test_samples_per_second", "test_steps_per_second"},
}  # fmt: skip


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def check_run_outputs(out: Path, method: str, expected_params: int, splits: dict[str, int]) -> None:
    """Every file of the output contract, with the right keys and consistent numbers."""
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer_config.json",
        "run_config.json",
        "train_results.json",
        "eval_results.json",
        "test_results.json",
        "all_results.json",
        "trainer_state.json",
        "predictions_eval.jsonl",
        "predictions_test.jsonl",
        "output.log",
    ):
        assert (out / name).is_file(), name  # fmt: skip
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    all_results = read_json(out / "all_results.json")
    for split, keys in RESULT_KEYS.items():
        results = read_json(out / f"{split}_results.json")
        assert set(results) == keys, (split, set(results) ^ keys)
        assert {k: all_results[k] for k in keys} == results
    assert all_results["train_samples"] == N_TRAIN
    assert all_results["trainable_params"] == expected_params
    assert 0 < all_results["trainable_params_percent"] < 100
    assert 0 <= all_results["eval_accuracy"] <= 100
    assert all_results["eval_invalid_predictions"] in range(splits["eval"] + 1)

    config = read_json(out / "run_config.json")
    assert config["method"] == method
    assert config["task_name"] == "rte"
    assert config["model_family"] in ("seq2seq", "causal")
    assert config["trainable_params"] == expected_params
    assert config["metric_for_best_model"] == "accuracy"
    assert config["training_args"]["weight_decay"] == 0
    assert set(config["versions"]) == {"python", "torch", "transformers", "datasets"}
    assert {"model_args", "data_args", "training_args", "git_commit", "seed", "learning_rate"} <= set(config)

    state = read_json(out / "trainer_state.json")
    assert state["global_step"] == 3
    assert state["best_model_checkpoint"] is not None
    assert any("eval_accuracy" in entry for entry in state["log_history"])

    for split, n in splits.items():
        rows = [json.loads(line) for line in (out / f"predictions_{split}.jsonl").read_text().splitlines()]
        assert len(rows) == n
        assert all(set(row) == {"source", "target", "prediction"} for row in rows)
        assert all(row["target"] in ("0", "1") for row in rows)
        assert rows[0]["source"].startswith("sentence1:")

    tensors = load_file(out / "adapter_model.safetensors")
    trained = {k: t for k, t in tensors.items() if k != KEY_ULPT_PROJECTION}  # ULPT's frozen W travels along
    assert sum(t.numel() for t in trained.values()) == expected_params  # adapter only, no backbone
    assert "step 1: {'loss'" in (out / "output.log").read_text()


@pytest.mark.parametrize("method", list(METHODS))
def test_t5_methods_end_to_end(method, tiny_t5_dir, rte_dir, tmp_path):
    flags, count_kwargs = METHODS[method]
    out = tmp_path / "run"
    assert main(base_argv(tiny_t5_dir, rte_dir, out, *flags)) == 0
    kwargs = {"dim": D, "num_virtual_tokens": 4, "max_length": L, "r": 2, **count_kwargs}
    expected = count_adapter_params(**kwargs).total
    check_run_outputs(out, method, expected, {"eval": N_VALIDATION // 2, "test": N_VALIDATION // 2})


@pytest.mark.parametrize("method", ["DePT", "ULPT", "ADePT"])
def test_llama_end_to_end(method, tiny_llama_dir, rte_dir, tmp_path):
    flags, count_kwargs = METHODS[method]
    out = tmp_path / "run"
    assert main(base_argv(tiny_llama_dir, rte_dir, out, *flags)) == 0
    expected = count_adapter_params(dim=D, num_virtual_tokens=4, max_length=L, r=2, **count_kwargs).total
    check_run_outputs(out, method, expected, {"eval": N_VALIDATION // 2, "test": N_VALIDATION // 2})
    assert read_json(out / "run_config.json")["model_family"] == "causal"


def test_best_checkpoint_is_reloaded(tiny_t5_dir, rte_dir, tmp_path):
    """Evaluate and save every step; the final adapter must equal the best checkpoint's (first on ties)."""
    out = tmp_path / "run"
    argv = base_argv(tiny_t5_dir, rte_dir, out, "--eval_steps", "1", "--save_steps", "1", "--max_steps", "3")
    argv[argv.index("--save_total_limit") + 1] = "10"
    assert main(argv) == 0
    state = read_json(out / "trainer_state.json")
    evals = [(e["step"], e["eval_accuracy"]) for e in state["log_history"] if "eval_accuracy" in e]
    assert [s for s, _ in evals] == [1, 2, 3]
    best_value = max(v for _, v in evals)
    best_step = next(s for s, v in evals if v == best_value)  # first occurrence wins
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    assert state["best_metric"] == best_value
    final = load_file(out / "adapter_model.safetensors")
    for step in (1, 2, 3):
        saved = load_file(out / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert set(saved) == set(final)
        same = all(torch.equal(final[k], saved[k]) for k in final)
        assert same == (step == best_step), step
    # the eval results are the best checkpoint's
    assert read_json(out / "eval_results.json")["eval_accuracy"] == best_value


def test_resume_and_overwrite(tiny_t5_dir, rte_dir, tmp_path):
    """A finished run is not redone; a longer run continues its checkpoint elsewhere (with the changed flag
    allowed); --overwrite_output_dir restarts and moves the old run aside."""
    out = tmp_path / "run"
    argv = base_argv(
        tiny_t5_dir, rte_dir, out, "--max_steps", "2", "--do_eval", "False", "--do_predict", "False"
    )
    assert main(argv) == 0
    assert main(argv) == 0  # finished: nothing redone
    assert main([*argv, "--max_steps", "3"]) == 2  # another setting: the old results are not reused
    assert read_json(out / "trainer_state.json")["global_step"] == 2
    longer = base_argv(
        tiny_t5_dir, rte_dir, tmp_path / "longer", "--max_steps", "3", "--do_eval", "False", "--do_predict",
        "False", "--resume_from_checkpoint", str(out / "checkpoint-2"), "--allow_changed_resume_flags", "True",
    )  # fmt: skip
    assert main(longer) == 0
    config = read_json(tmp_path / "longer" / "run_config.json")
    assert config["resumed_from"].endswith("checkpoint-2")
    assert config["resume_changed_flags"] == {"max_steps": {"checkpoint": 2, "now": 3}}
    assert read_json(tmp_path / "longer" / "trainer_state.json")["global_step"] == 3
    assert main([*argv, "--overwrite_output_dir"]) == 0
    assert read_json(out / "run_config.json")["resumed_from"] is None
    assert sorted(p.name for p in (tmp_path / ".run.previous").glob("*_results.json")) == [
        "all_results.json", "eval_results.json", "train_results.json",
    ]  # fmt: skip


@pytest.mark.parametrize(("peft_type", "method"), [("HEAD_ONLY", "head-only"), ("FULL", "full-finetuning")])
def test_encoder_classifier_baselines(peft_type, method, tiny_bert_dir, rte_dir, tmp_path):
    out = tmp_path / "run"
    argv = base_argv(tiny_bert_dir, rte_dir, out, "--peft_type", peft_type, "--learning_rate", "1e-3")
    assert main(argv) == 0
    config = read_json(out / "run_config.json")
    assert (config["method"], config["model_family"]) == (method, "classifier")
    results = read_json(out / "all_results.json")
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    total = sum(p.numel() for p in base.parameters())
    head = sum(p.numel() for n, p in base.named_parameters() if not n.startswith("bert."))
    assert results["trainable_params"] == (head if peft_type == "HEAD_ONLY" else total)
    assert {"eval_accuracy", "test_accuracy", "eval_invalid_predictions"} <= set(results)
    rows = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert all(row["prediction"] in ("0", "1") for row in rows)


def test_transfer_and_few_shot_from_a_saved_adapter(tiny_t5_dir, rte_dir, tmp_path):
    """ACCEPT source run -> (a) --peft_model_id + --k_shot_example, (b) --pretrain_init from its codebooks."""
    flags = METHODS["ACCEPT"][0]
    source = tmp_path / "source"
    assert main(base_argv(tiny_t5_dir, rte_dir, source, *flags, "--max_steps", "2")) == 0
    source_tensors = load_file(source / "adapter_model.safetensors")

    few = tmp_path / "fewshot"
    argv = base_argv(tiny_t5_dir, rte_dir, few, "--peft_model_id", str(source), "--k_shot_example", "2",
                     "--prefix_length", "9", "--learning_rate", "0")  # fmt: skip
    assert main(argv) == 0
    assert read_json(few / "run_config.json")["method"] == "ACCEPT"  # from the saved config, not the CLI
    assert read_json(few / "all_results.json")["train_samples"] == 2  # K examples in total (docs/fidelity.md#f-kshot)
    few_tensors = load_file(few / "adapter_model.safetensors")
    # learning rate 0 for the prepended side: SCPP tensors are exactly the source's
    for key in few_tensors:
        if "prompt" in key and "lora" not in key:
            assert torch.equal(few_tensors[key], source_tensors[key]), key

    init = tmp_path / "pretrain_init"
    argv = base_argv(tiny_t5_dir, rte_dir, init, *flags, "--pretrain_init", "True",
                     "--pretrain_scpp_ckpt", str(source), "--pretrain_scap_ckpt", str(source),
                     "--do_train", "False", "--do_eval", "True")  # fmt: skip
    assert main(argv) == 0
    # no training: the evaluation used the transferred tensors, so it matches the source's predictions
    assert (init / "predictions_eval.jsonl").read_text() == (source / "predictions_eval.jsonl").read_text()
