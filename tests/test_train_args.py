"""Command-line parsing (original and removed HF flags, .json files) and fail-fast errors of train.py."""

from __future__ import annotations

import json
import os

import pytest
from test_reliability_support import no_weights

from train import main, parse_args

REQUIRED = ["--model_name_or_path", "t5-base", "--output_dir", "out", "--task_name", "rte"]


def test_original_dept_and_accept_flags_parse():
    model, data, training = parse_args(
        [*REQUIRED,
         "--peft_type", "PROMPT_TUNING_LORA", "--prefix_length", "60", "--r", "30",
         "--scpp", "True", "--scap", "False", "--sub_dim_scpp", "32", "--codebook_size_scpp", "20",
         "--sub_dim_scap", "256", "--codebook_size_scap", "30",
         "--lora_embedding_lr", "5e-3", "--learning_rate", "0.3",
         "--pretrain_init", "False", "--text_init", "True",
         "--prompt_tuning_init_text", "hello", "--dataset_config_name", "en", "--pad_to_max_length", "True",
         "--max_seq_length", "256", "--add_prefix", "False", "--k_shot_example", "16",
         "--max_train_samples", "10", "--max_eval_samples", "5", "--max_predict_samples", "7",
         "--evaluation_strategy", "steps", "--eval_steps", "1000", "--save_strategy", "steps",
         "--save_steps", "1000", "--load_best_model_at_end", "--save_total_limit", "1",
         "--overwrite_output_dir", "--warmup_ratio", "0.1", "--group_by_length",
         "--logging_dir", "tb-logs", "--weight_decay", "1e-5", "--max_steps", "30000"]
    )  # fmt: skip
    assert (model.prefix_length, model.r, model.scpp, model.scap) == (60, 30, True, False)
    assert (model.sub_dim_scpp, model.codebook_size_scpp, model.sub_dim_scap, model.codebook_size_scap) == (
        32, 20, 256, 30,
    )  # fmt: skip
    assert model.text_init is True and model.prompt_tuning_init_text == "hello"
    assert data.dataset_config_name == "en" and data.k_shot_example == 16
    assert (data.max_train_samples, data.max_eval_samples, data.max_predict_samples) == (10, 5, 7)
    assert training.added_embedding_lr == 5e-3  # DePT's --lora_embedding_lr
    assert training.eval_strategy == "steps"  # --evaluation_strategy
    assert training.overwrite_output_dir is True
    assert training.warmup_steps == 0.1  # a float < 1 is a ratio for transformers 5
    assert training.get_warmup_steps(30000) == 3000
    assert training.train_sampling_strategy == "group_by_length"
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == "tb-logs"
    assert training.load_best_model_at_end and training.save_total_limit == 1


def test_defaults_match_the_original():
    model, data, training = parse_args(REQUIRED)
    assert training.adam_epsilon == 1e-6 and training.weight_decay == 0.0
    assert (training.adam_beta1, training.adam_beta2) == (0.9, 0.999)
    assert training.predict_with_generate and training.generation_num_beams == 1
    assert training.stop_on_nan is True
    assert data.pad_to_max_length is True and data.max_seq_length == 256
    assert model.peft_type == "PROMPT_TUNING_LORA" and model.scpp is False and model.text_init is None


def test_json_argument_file(tmp_path):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"model_name_or_path": "t5-base", "output_dir": "out", "task_name": "rte",
                                "evaluation_strategy": "steps", "lora_embedding_lr": 1e-4, "scap": True}))  # fmt: skip
    model, _, training = parse_args([str(path)])
    assert model.scap is True
    assert training.eval_strategy == "steps" and training.added_embedding_lr == 1e-4


def test_contradicting_aliases_fail():
    with pytest.raises(ValueError, match="--lora_embedding_lr"):
        parse_args([*REQUIRED, "--lora_embedding_lr", "1e-3", "--added_embedding_lr", "1e-4"])


FAIL_CASES = {
    "unknown task": (["--task_name", "nosuchtask"], "--task_name"),
    "scpp with PT": (["--peft_type", "PROMPT_TUNING", "--scpp", "True"], "--scpp"),
    "sub_dim": (["--scpp", "True", "--sub_dim_scpp", "5"], "--sub_dim_scpp"),
    "sub_dim scap": (["--scap", "True", "--sub_dim_scap", "7"], "--sub_dim_scap"),
    "budget": (["--enforce_budget", "--prefix_length", "60", "--r", "400"], "--enforce_budget"),
    "fp16 with T5": (["--fp16"], "--fp16"),
    "missing data": (["--data_dir", "{empty}"], "--data_dir"),
    "missing data root": (["--data_dir", "{empty}/nothing"], "--data_dir"),
    "head-only on T5": (["--peft_type", "HEAD_ONLY"], "HEAD_ONLY"),
    "pretrain without ckpt": (["--scpp", "True", "--pretrain_init", "True"], "--pretrain_scpp_ckpt"),
    "peft_model_id missing": (["--peft_model_id", "{empty}"], "--peft_model_id"),
    "scheduler": (["--lr_scheduler_type", "cosine"], "--lr_scheduler_type"),
}


@pytest.mark.parametrize("case", list(FAIL_CASES))
def test_bad_input_fails_fast_naming_the_flag(case, tiny_t5_dir, rte_data, tmp_path, capsys, monkeypatch):
    flags, flag_name = FAIL_CASES[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    flags = [f.replace("{empty}", str(empty)) for f in flags]
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(tiny_t5_dir), "--task_name", "rte", "--data_dir", str(rte_data),
            "--output_dir", str(out), "--do_train", "--max_steps", "1", "--max_seq_length", "16",
            "--prefix_length", "4", "--r", "2", *flags]  # fmt: skip


    monkeypatch.setattr("training.modeling.load_backbone", no_weights)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag_name in err[0], err
    assert not out.exists()


def test_non_empty_output_dir_without_checkpoint(tiny_t5_dir, rte_data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something.txt").write_text("x")
    argv = ["--model_name_or_path", str(tiny_t5_dir), "--task_name", "rte", "--data_dir", str(rte_data),
            "--output_dir", str(out), "--do_train", "--max_steps", "1"]  # fmt: skip
    assert main(argv) == 2
    assert "--overwrite_output_dir" in capsys.readouterr().err


def test_unknown_peft_type_is_rejected_by_the_parser(capsys):
    assert main([*REQUIRED, "--peft_type", "LORA"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--peft_type" in err[0] and "invalid choice: 'LORA'" in err[0], err


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], "TEXT"), (["--scpp", "True"], "RANDOM"), (["--scap", "True"], "RANDOM"),
     (["--text_init", "False"], "RANDOM"), (["--peft_type", "PROMPT_TUNING"], "TEXT")],
)  # fmt: skip
def test_text_init_default_per_method(flags, expected, tiny_t5_dir, tmp_path):
    from training.planner import plan_run

    model, data, training = parse_args(
        ["--model_name_or_path", str(tiny_t5_dir), "--task_name", "rte", "--output_dir", str(tmp_path / "o"),
         "--prefix_length", "4", "--r", "2", "--max_seq_length", "16", "--sub_dim_scpp", "8",
         "--sub_dim_scap", "8", "--do_train", *flags]
    )  # fmt: skip
    assert plan_run(model, data, training).peft_config.prompt_tuning_init == expected


def test_a_crash_is_logged_to_output_log(tiny_t5_dir, rte_data, tmp_path, monkeypatch):
    """An unexpected error reaches output.log (sweep_status reads the last error line there)."""
    out = tmp_path / "out"
    argv = ["--model_name_or_path", str(tiny_t5_dir), "--task_name", "rte", "--data_dir", str(rte_data),
            "--output_dir", str(out), "--do_train", "--max_steps", "1", "--max_seq_length", "16",
            "--prefix_length", "4", "--r", "2"]  # fmt: skip

    def crash(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr("train.run", crash)
    assert main(argv) == 1
    log = (out / "output.log").read_text()
    assert "run failed" in log and "RuntimeError: CUDA out of memory (simulated)" in log


def test_log_file_is_appended_on_resume(tmp_path):
    import logging

    from training.logs import attach_log_file, detach_log_file

    path = tmp_path / "output.log"
    for append, message in ((False, "first part"), (True, "resumed part")):
        handler = attach_log_file(path, append=append)
        logging.getLogger("train").warning(message)
        detach_log_file(handler)
    text = path.read_text()
    assert "first part" in text and "resumed part" in text
    handler = attach_log_file(path, append=False)  # a new run starts a new log
    detach_log_file(handler)
    assert path.read_text() == ""


def test_rank_alias_survives_launchers():
    """torchrun's own parser rejects --r (ambiguous prefix of its flags); --lora_rank passes through."""
    from torch.distributed.run import get_args_parser

    launched = get_args_parser().parse_args(["--nproc_per_node", "2", "train.py", *REQUIRED, "--lora_rank", "7"])
    model, _, _ = parse_args(launched.training_script_args)
    assert model.r == 7
