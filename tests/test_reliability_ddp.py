"""Scale-out on the existing engines: ``torchrun --nproc_per_node 2 train.py`` (DDP over gloo on CPU).

Two processes with batch 2 each must follow the single-process run with batch 4 (same global batch, no
dropout): equal losses per step and adapter within 1e-5, one set of result files written by rank 0,
and every evaluation example predicted exactly once (5 rows do not split evenly over 2 ranks x batch 2).
The arguments go in a JSON file: torchrun's own parser rejects ``--r`` as an ambiguous abbreviation.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_small_t5, write_rte
from safetensors.torch import load_file
from test_reliability_support import read_json

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = {"train_results.json", "eval_results.json", "test_results.json", "all_results.json",
                "predictions_eval.jsonl", "predictions_test.jsonl", "run_config.json", "trainer_state.json"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_args(root: Path, name: str, batch: int, distributed: bool, **method: object) -> Path:
    args = {
        "model_name_or_path": str(root / "model"), "task_name": "rte", "data_dir": str(root / "data"),
        "output_dir": str(root / name), "max_seq_length": 16, "prefix_length": 4, "r": 2,
        "learning_rate": 0.3, "added_embedding_lr": 0.01, "weight_decay": 0, "warmup_steps": 1, "max_steps": 3,
        "logging_steps": 1, "per_device_train_batch_size": batch, "per_device_eval_batch_size": 2,
        "do_train": True, "do_eval": True, "do_predict": True, "save_strategy": "no", "use_cpu": True,
        "disable_tqdm": True, "report_to": "none", "dataloader_pin_memory": False,
        **method,
    }  # fmt: skip
    if distributed:
        args["ddp_backend"] = "gloo"
    path = root / f"{name}.json"
    path.write_text(json.dumps(args))
    return path


def launch(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def step_losses(out: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_json(out / "trainer_state.json")["log_history"] if "loss" in e}


# ULPT: its frozen projection (a buffer) is the same on every rank and is never reduced
METHODS = {"DePT": {}, "ULPT": {"peft_type": "PROMPT_TUNING_LODIM", "lodim_r": 2, "num_random_proj": 2}}


@pytest.mark.parametrize("method", list(METHODS))
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(method, tmp_path):
    save_small_t5(tmp_path / "model", dropout=0.0)
    write_rte(tmp_path / "data", n_train=16, n_validation=10)  # validation 5 / test 5 rows
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    flags = METHODS[method]
    launch([sys.executable, "train.py", str(run_args(tmp_path, "single", batch=4, distributed=False, **flags))])
    done = launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                   str(free_port()), "train.py", str(run_args(tmp_path, "ddp", batch=2, distributed=True, **flags))])  # fmt: skip
    # find_unused_parameters is off (no warning about a needless graph traversal), and it is right: an unused
    # trainable tensor would make DDP fail at step 2 ("Expected to have finished reduction")
    assert "find_unused_parameters=True" not in done.stderr

    # ranks that trained alone (no gradient sync) would log rank 0's own loss, 2e-2 off at step 1
    a, b = step_losses(single), step_losses(ddp)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    adapter_a = load_file(single / "adapter_model.safetensors")
    adapter_b = load_file(ddp / "adapter_model.safetensors")
    for key in adapter_a:
        torch.testing.assert_close(adapter_b[key], adapter_a[key], rtol=0, atol=1e-5)
    assert read_json(ddp / "all_results.json")["train_loss"] == pytest.approx(
        read_json(single / "all_results.json")["train_loss"], abs=1e-5
    )

    # one set of result files (rank 0 only), no per-rank copies or leftovers
    assert RESULT_FILES <= {p.name for p in ddp.iterdir()}
    assert not [p.name for p in ddp.iterdir() if p.name.startswith(".") or "rank" in p.name]
    for split in ("eval", "test"):
        rows = (ddp / f"predictions_{split}.jsonl").read_text().splitlines()
        assert len(rows) == 5  # gathered from both ranks, the padding duplicates dropped
        assert rows == (single / f"predictions_{split}.jsonl").read_text().splitlines()
        assert (
            read_json(ddp / f"{split}_results.json")[f"{split}_accuracy"]
            == read_json(single / f"{split}_results.json")[f"{split}_accuracy"]
        )


def test_launched_processes_that_would_not_sync_are_refused(monkeypatch):
    """WORLD_SIZE > 1 without a DDP group (no accelerator and no --use_cpu): each rank would train alone."""
    from types import SimpleNamespace

    from transformers.training_args import ParallelMode

    from training.planner.checks import ConfigError, check_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="--use_cpu True"):
        check_distributed(SimpleNamespace(parallel_mode=ParallelMode.NOT_PARALLEL))
    check_distributed(SimpleNamespace(parallel_mode=ParallelMode.DISTRIBUTED))
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_distributed(SimpleNamespace(parallel_mode=ParallelMode.NOT_PARALLEL))


def test_accelerate_configs_load_with_the_settings_the_docs_promise():
    """examples/accelerate/*.yaml parse with accelerate's own loader and say what docs/scale_out.md says."""
    from accelerate.commands.config.config_args import load_config_from_file

    folder = REPO_ROOT / "examples" / "accelerate"
    configs = {p.stem: load_config_from_file(str(p)) for p in sorted(folder.glob("*.yaml"))}
    assert set(configs) == {"multi_gpu", "multi_node", "fsdp_llama", "deepspeed_zero3"}
    assert configs["multi_gpu"].num_machines == 1 and configs["multi_gpu"].distributed_type == "MULTI_GPU"
    assert configs["multi_node"].num_machines == 2 and configs["multi_node"].num_processes == 16
    fsdp = configs["fsdp_llama"].fsdp_config
    assert fsdp["fsdp_use_orig_params"] is True  # frozen and trainable tensors in one FSDP unit
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert configs["deepspeed_zero3"].deepspeed_config["zero_stage"] == 3
    for config in configs.values():
        assert config.mixed_precision == "no"  # precision comes from train.py's --bf16 / --dtype
    assert (REPO_ROOT / "docs" / "scale_out.md").is_file()
