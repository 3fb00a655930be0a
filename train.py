"""Train and evaluate PT, DePT and ACCEPT prompt adapters (and encoder-classifier baselines).

    python train.py --model_name_or_path t5-base --task_name rte --peft_type PROMPT_TUNING_LORA \
        --scpp True --scap True --prefix_length 60 --max_seq_length 256 --learning_rate 0.3 \
        --added_embedding_lr 1e-4 --max_steps 30000 --eval_strategy steps --eval_steps 1000 \
        --save_strategy steps --save_steps 1000 --load_best_model_at_end --save_total_limit 1 \
        --do_train --do_eval --do_predict --output_dir runs/rte
    python train.py args.json          # the same arguments as one JSON object

Every flag of the original DePT/ACCEPT scripts is accepted (including the transformers 4 names
--evaluation_strategy, --overwrite_output_dir, --warmup_ratio, --group_by_length, --logging_dir and
DePT's --lora_embedding_lr); ``python train.py --help`` lists them all.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from transformers import HfArgumentParser, Seq2SeqTrainingArguments, set_seed

from data.labels import labeled_count
from data.loading import load_task_splits
from data.preprocess import PaddingCollator, max_target_length, tokenize_splits
from peft.config import DEFAULT_INIT_TEXT
from training.arguments_compat import LegacyTrainingFlags
from training.budget_notice import library_budget_warnings_off, warn_budget
from training.console import metrics_line, plan_lines, say, use_console_progress
from training.distributed import close_process_group
from training.evaluation import SplitReferences, TaskMetrics
from training.identity import write_identity
from training.interrupts import interrupts_kept
from training.lifecycle import RunLifecycle
from training.logs import (
    is_verbose_level,
    restore_logging,
    set_console_verbose,
    set_library_verbosity,
    setup_logging,
)
from training.modeling import (
    DTYPES,
    PEFT_TYPES,
    PROMPT_KINDS,
    UPDATE_KINDS,
    build_model,
    load_tokenizer,
    log_parameter_table,
    parameter_counts,
)
from training.outputs import save_split_metrics, write_all_results, write_predictions, write_run_config
from training.planner import ConfigError, RunPlan, plan_run
from training.planner.schema import check_flags
from training.run_dir import (
    is_finished,
    prepare_output_dir,
    refuse_nested_runs,
    relative_to_run,
    training_finished,
)
from training.sources import check_sources
from training.trainer import NonFiniteLossError, PromptTrainer

logger = logging.getLogger("train")


@dataclass
class ModelArguments:
    """Backbone and adapter (method) arguments."""

    model_name_or_path: str = field(
        metadata={"help": "Local folder or hub id of the backbone (T5, Llama, BERT...)."}
    )
    peft_type: str = field(
        default="PROMPT_TUNING_LORA",
        metadata={
            "help": "PROMPT_TUNING (vanilla PT), PROMPT_TUNING_LORA (DePT; ACCEPT with --scpp/--scap), "
            "PROMPT_TUNING_DPT (DPT), PROMPT_TUNING_LODIM (ULPT), PROMPT_TUNING_LORAX (ADePT), "
            "or the encoder-classifier baselines HEAD_ONLY (train the head of a frozen backbone) and FULL "
            "(train everything).",
            "choices": list(PEFT_TYPES),
        },
    )
    prefix_length: int = field(default=100, metadata={"help": "m, the number of prepended prompt tokens."})
    r: int = field(
        default=30,
        metadata={
            "help": "DePT rank of the added update A (L x r) B (r x d), or ADePT's (tokenwise) rank; unused with "
            "--scap. Alias --lora_rank "
            "(torchrun and accelerate launch reject --r as an ambiguous abbreviation of their own flags).",
            "aliases": ["--lora_rank"],
        },
    )
    scpp: bool = field(
        default=False,
        metadata={
            "help": "ACCEPT SCPP: compose the prepended prompt from codebooks (ACCEPT's code defaulted to True)."
        },
    )
    scap: bool = field(
        default=False, metadata={"help": "ACCEPT SCAP: the added update from codebooks instead of A@B."}
    )
    sub_dim_scpp: int = field(default=16, metadata={"help": "s_p, sub-vector width of SCPP (must divide d)."})
    codebook_size_scpp: int = field(default=12, metadata={"help": "C_p, codewords per SCPP codebook."})
    sub_dim_scap: int = field(default=32, metadata={"help": "s_a, sub-vector width of SCAP (must divide d)."})
    codebook_size_scap: int = field(default=4, metadata={"help": "C_a, codewords per SCAP codebook."})
    lodim_r: int = field(
        default=2,
        metadata={"help": "r_p, rank of the DPT / ULPT prompt Z (m x r_p) W (r_p x d) (ULPT's flag)."},
    )
    num_random_proj: int = field(
        default=1,
        metadata={"help": "G, ULPT's frozen random projections, one per m / G prompt rows (must divide m)."},
    )
    prompt_kind: str | None = field(
        default=None,
        metadata={
            "help": "The prepended prompt, overriding --peft_type's: dense (PT), codebook (SCPP), lowrank (DPT) "
            "or random_projection (ULPT).",
            "choices": list(PROMPT_KINDS),
        },
    )
    update_kind: str | None = field(
        default=None,
        metadata={
            "help": "The added update, overriding --peft_type's: none, lowrank (DePT), codebook (SCAP) or "
            "tokenwise (ADePT; rank --r).",
            "choices": list(UPDATE_KINDS),
        },
    )
    text_init: bool | None = field(
        default=None,
        metadata={
            "help": "Initialise the prompt from --prompt_tuning_init_text (TEXT) or randomly. Default per method: "
            "True for PT and DePT (DePT's default), False for ACCEPT (ACCEPT's default; TEXT cannot "
            "initialise SCPP codebooks)."
        },
    )
    prompt_tuning_init_text: str = field(
        default=DEFAULT_INIT_TEXT,
        metadata={"help": "Text for TEXT init (the original's string, typo included)."},
    )
    pretrain_init: bool = field(
        default=False,
        metadata={"help": "Initialise SCPP/SCAP from --pretrain_scpp_ckpt/--pretrain_scap_ckpt (transfer)."},
    )
    pretrain_scpp_ckpt: str | None = field(
        default=None, metadata={"help": "Adapter folder whose SCPP weights and codebooks initialise --scpp."}
    )
    pretrain_scap_ckpt: str | None = field(
        default=None, metadata={"help": "Adapter folder whose SCAP weights and codebooks initialise --scap."}
    )
    peft_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Start from this saved adapter (few-shot/transfer); its adapter_config.json decides the "
            "shapes and method, the command-line shape flags are ignored (with a warning)."
        },
    )
    enforce_budget: bool = field(
        default=False,
        metadata={
            "help": "Fail when the adapter exceeds the paper's budget (PT with 100 tokens); else warn."
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder/id if not the model's."}
    )
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for hub downloads."})
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Run Python code shipped with the model/tokenizer (auto_map in its config). Off: such "
            "a model is refused before anything is imported."
        },
    )
    dtype: str = field(
        default="float32",
        metadata={
            "help": "Backbone weight dtype (adapter parameters stay float32). float16 is refused for T5.",
            "choices": list(DTYPES),
        },
    )

    def __post_init__(self) -> None:
        check_flags(self)


@dataclass
class DataTrainingArguments:
    """Task and preprocessing arguments."""

    task_name: str | None = field(
        default=None, metadata={"help": "Task key, e.g. rte, superglue-boolq, newsqa."}
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local data root (<data_dir>/<task>/<split>.jsonl in the HF schema); else the hub."
        },
    )
    dataset_config_name: str | None = field(
        default=None,
        metadata={
            "help": "Accepted for the original scripts (they pass 'en'); every task has one configuration."
        },
    )
    max_seq_length: int = field(
        default=256,
        metadata={"help": "L: input truncation/padding length and row count of the added update."},
    )
    pad_to_max_length: bool = field(
        default=True,
        metadata={
            "help": "Pad every input to --max_seq_length (faithful); False pads each batch to its longest."
        },
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={
            "help": "With --pad_to_max_length False: round each batch's length up to a multiple of this "
            "(e.g. 8 for GPU tensor cores); must divide --max_seq_length."
        },
    )
    add_prefix: bool = field(default=False, metadata={"help": "Prepend the task name to the source text."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test rows."})
    k_shot_example: int | None = field(
        default=None, metadata={"help": "Few-shot: sample K training examples per class with --seed."}
    )
    split_validation_test: bool = field(
        default=True,
        metadata={"help": "Build validation/test from the HF splits as DePT does (docs/fidelity.md#f-split)."},
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenisation."}
    )
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenise instead of using the cache."})

    def __post_init__(self) -> None:
        check_flags(self)


@dataclass
class TrainingArguments(LegacyTrainingFlags, Seq2SeqTrainingArguments):
    """HF Seq2SeqTrainingArguments with the original's defaults, two learning rates and legacy names."""

    added_embedding_lr: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the added side (A, B or SCAP); default: --learning_rate."},
    )
    allow_changed_resume_flags: bool = field(
        default=False,
        metadata={
            "help": "Resume although learning rates, schedule, batch size, seed or method flags differ from the "
            "checkpoint's (listed in the error otherwise); the new values are applied and recorded."
        },
    )
    stop_on_nan: bool = field(
        default=True,
        metadata={"help": "Stop (exit != 0) on a NaN/inf training loss, before the optimizer step."},
    )
    adam_epsilon: float = field(
        default=1e-6, metadata={"help": "AdamW epsilon (1e-6: the original transformers.AdamW default)."}
    )
    predict_with_generate: bool = field(default=True, metadata={"help": "Evaluate by greedy generation."})
    generation_max_length: int | None = field(
        default=20,
        metadata={"help": "Longest generated answer for free-text (QA) tasks; classification uses 3."},
    )
    generation_num_beams: int | None = field(default=1, metadata={"help": "1 = greedy (the papers)."})

    def __post_init__(self) -> None:
        check_flags(self)  # before transformers' own checks and conversions see the values
        self.apply_legacy_flags()
        super().__post_init__()


class OneLineErrorParser(HfArgumentParser):
    """argparse's errors (unknown flag, missing value, bad choice) as ConfigError: one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (python train.py --help lists the flags)")


def parse_args(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """Parse the command line, or one ``.json`` file holding the same keys; ConfigError on bad values."""
    parser = OneLineErrorParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    from_file = len(argv) == 1 and argv[0].endswith(".json")
    origin = f"argument file {argv[0]}: " if from_file else ""
    try:
        if from_file:
            return parser.parse_json_file(json_file=str(Path(argv[0]).resolve()))
        return parser.parse_args_into_dataclasses(args=argv)
    except OSError as exc:
        raise ConfigError(f"{origin}{exc.strerror or exc}") from exc
    except ValueError as exc:  # ConfigError of the flag schema, a JSON syntax error, a bad choice
        raise ConfigError(f"{origin}{exc}") from exc


def load_data(data_args: DataTrainingArguments, training_args: TrainingArguments, plan: RunPlan):
    """The logical splits the run needs (train / validation / test), formatted, before any weights load."""
    needed = plan.splits
    try:
        splits = load_task_splits(
            plan.task.name,
            data_dir=data_args.data_dir,
            seed=training_args.seed,
            max_train_samples=data_args.max_train_samples,
            max_eval_samples=data_args.max_eval_samples,
            max_predict_samples=data_args.max_predict_samples,
            k_shot_example=data_args.k_shot_example,
            add_prefix=data_args.add_prefix,
            split_validation_test=data_args.split_validation_test,
            splits=needed,
            num_proc=data_args.preprocessing_num_workers,
        )
    except (FileNotFoundError, ValueError, KeyError) as exc:
        flag = "--data_dir" if data_args.data_dir else "--task_name (hub download; pass --data_dir offline)"
        raise ConfigError(f"{flag}: {exc}") from exc
    except Exception as exc:  # hub/network errors of datasets come in many types
        if data_args.data_dir:
            raise
        raise ConfigError(
            f"--data_dir is needed: loading {plan.task.name} from the hub failed ({exc})"
        ) from exc
    selects_best = training_args.do_train and training_args.load_best_model_at_end
    if selects_best and "validation" in splits and labeled_count(plan.task, splits["validation"]) == 0:
        raise ConfigError(
            f"--load_best_model_at_end picks the checkpoint by validation {plan.task.metric_for_best_model}, but "
            "no validation row has a label; give labeled validation data or drop --load_best_model_at_end."
        )
    return splits


def main(argv: list[str] | None = None) -> int:
    """Run one training/evaluation job; returns the process exit code (0 success, 1 stopped by a failure:
    a NaN loss, a full disk, ... with one line saying what and the fix, 2 bad input, 75 the --output_dir is in
    use by another running process, 130 interrupted by Ctrl-C; ``training.lifecycle``)."""
    setup_logging()
    life = RunLifecycle()
    try:
        with life:
            life.exit_code = start(argv, life)
    finally:
        close_process_group()
        restore_logging()
    return life.exit_code


def start(argv: list[str] | None, life: RunLifecycle) -> int:
    """Parse, lock the output folder, pass the gate, prepare the folder, then ``run`` with its log open."""
    model_args, data_args, training_args = parse_args(argv)
    set_console_verbose(is_verbose_level(training_args.log_level))
    output_dir = Path(training_args.output_dir)
    overwrite = training_args.overwrite_output_dir
    life.lock(output_dir, main_process=training_args.process_index == 0, overwrite=overwrite)
    check_sources(model_args, data_args)
    with library_budget_warnings_off():
        plan = plan_run(model_args, data_args, training_args)  # compares a recorded run's identity
    if is_finished(output_dir) and not overwrite:
        return report_finished(output_dir)
    refuse_nested_runs(output_dir)
    warn_budget(plan.peft_config, plan.token_dim, model_args)
    with interrupts_kept():
        raw_splits = load_data(data_args, training_args, plan)
    if life.holds_lock:
        prepare_output_dir(
            output_dir, overwrite=overwrite,
            starts_training=training_args.do_train and plan.resume_from_checkpoint is None,
            inputs=input_paths(model_args, data_args, plan.resume_from_checkpoint),
        )  # fmt: skip
    set_library_verbosity(training_args.get_process_log_level())
    continues = plan.resume_from_checkpoint is not None or training_finished(output_dir)
    life.open_log(output_dir / "output.log", append=continues, enabled=training_args.should_save)
    return run(model_args, data_args, training_args, plan, raw_splits)


def input_paths(
    model_args: ModelArguments, data_args: DataTrainingArguments, resume_from: str | None = None
) -> dict[str, str | None]:
    """The local files and folders a run reads (flag -> path), which moving a run's files aside must not move."""
    paths = {
        f"--{name}": getattr(model_args, name)
        for name in ("model_name_or_path", "tokenizer_name", "peft_model_id", "pretrain_scpp_ckpt",
                     "pretrain_scap_ckpt", "cache_dir")
    }  # fmt: skip
    return {**paths, "--data_dir": data_args.data_dir, "--resume_from_checkpoint": resume_from}


def report_finished(output_dir: Path) -> int:
    """A finished run is not redone: one line, exit 0."""
    say(
        "%s holds a finished run (all_results.json); nothing to do. Pass --overwrite_output_dir to start "
        "over, or choose another --output_dir.",
        output_dir,
    )
    return 0


def run(
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    training_args: TrainingArguments,
    plan: RunPlan,
    raw_splits,
) -> int:
    """The run after the gate: tokenise, build the model, train, evaluate, write the results.

    When an earlier call of the same command finished training (final adapter and ``train_results.json``
    written) but not the evaluation, training is not redone: its weights are loaded and evaluated.
    """
    output_dir = Path(training_args.output_dir)
    trained_before = training_args.do_train and training_finished(output_dir)
    if training_args.should_save and not trained_before:
        write_identity(output_dir, plan.identity)  # first: a run killed at any point can be compared
    logger.info("task %s | method %s | family %s | d=%d", plan.task.name, plan.method, plan.family, plan.token_dim)
    for name, values in (("model", asdict(model_args)), ("data", asdict(data_args)),
                         ("training", training_args.to_json_string())):  # fmt: skip
        logger.info("%s arguments %s", name, values)

    tokenizer = load_tokenizer(
        model_args.tokenizer_name or model_args.model_name_or_path, plan.family, model_args.cache_dir,
        trust_remote_code=model_args.trust_remote_code,
    )  # fmt: skip
    target_length = max_target_length(plan.task.name, tokenizer, training_args.generation_max_length)
    with interrupts_kept():  # the datasets library swallows a Ctrl-C while it fingerprints the map
        tokenized = tokenize_splits(
            raw_splits, tokenizer, plan.family, data_args.max_seq_length, target_length,
            pad_to_max_length=data_args.pad_to_max_length, num_proc=data_args.preprocessing_num_workers,
            overwrite_cache=data_args.overwrite_cache,
        )  # fmt: skip

    set_seed(training_args.seed)  # before the adapter init, which draws from the global RNG
    with library_budget_warnings_off():  # reported once, by warn_budget in main()
        model = build_model(plan, model_args, tokenizer)
    log_parameter_table(model)
    trainable, total = parameter_counts(model)
    if training_args.should_save and not trained_before:
        write_run_config(output_dir, run_summary(plan, model_args, training_args, trainable),
                         model_args=model_args, data_args=data_args, training_args=training_args)  # fmt: skip

    task_metrics = TaskMetrics(
        task_name=plan.task.name, tokenizer=tokenizer, family=plan.family, labels_list=plan.task.labels_list,
        references={name: SplitReferences.from_dataset(split) for name, split in raw_splits.items()
                    if name != "train"},
    )  # fmt: skip
    trainer = PromptTrainer(
        model=model, args=training_args, train_dataset=tokenized.get("train"),
        eval_dataset=tokenized.get("validation"), processing_class=tokenizer,
        data_collator=PaddingCollator(
            tokenizer, plan.family, pad_to_multiple_of=data_args.pad_to_multiple_of,
            max_seq_length=data_args.max_seq_length if data_args.pad_to_max_length else None,
        ),
        compute_metrics=task_metrics.for_split("validation"), family=plan.family, max_new_tokens=target_length,
        added_embedding_lr=training_args.added_embedding_lr, stop_on_nan=training_args.stop_on_nan,
        identity=plan.identity,
    )  # fmt: skip
    progress = use_console_progress(trainer)
    if trainer.is_world_process_zero():
        announce(plan, model_args, training_args, {name: len(split) for name, split in tokenized.items()},
                 trainable, total)  # fmt: skip

    if trained_before:
        logger.info("training finished in an earlier call; evaluating its weights from %s", output_dir)
        trainer.load_trained_weights(output_dir)
        progress.close()
    elif training_args.do_train:
        try:
            result = trainer.train(resume_from_checkpoint=plan.resume_from_checkpoint)
        except NonFiniteLossError as exc:
            logger.error("%s", exc)
            return 1
        finally:
            progress.close()
        trainer.save_model()  # adapter only (best weights when --load_best_model_at_end), tokenizer
        save_train_metrics(trainer, result, len(tokenized["train"]), output_dir)

    for split, prefix in (("validation", "eval"), ("test", "test")):
        if prefix == "eval" and training_args.do_eval or prefix == "test" and training_args.do_predict:
            evaluate_split(trainer, task_metrics.for_split(split), tokenized[split], split, prefix, output_dir)
    if trainer.is_world_process_zero():
        write_all_results(
            output_dir, {"trainable_params": trainable, "trainable_params_percent": 100.0 * trainable / total}
        )
        say("results in %s (all_results.json; the full log is output.log)", output_dir)
    return 0


def run_summary(
    plan: RunPlan, model_args: ModelArguments, training_args: TrainingArguments, trainable: int
) -> dict[str, Any]:
    """The head of ``run_config.json``: what the run is, in the keys the result scripts read."""
    return {
        "task_name": plan.task.name, "method": plan.method, "peft_type": model_args.peft_type,
        "model_name_or_path": model_args.model_name_or_path, "model_family": plan.family.name,
        "seed": training_args.seed, "learning_rate": training_args.learning_rate,
        "added_embedding_lr": training_args.added_embedding_lr, "trainable_params": trainable,
        "metric_for_best_model": plan.task.metric_for_best_model, "resume_changed_flags": plan.resume_changes,
        "resumed_from": relative_to_run(plan.resume_from_checkpoint, training_args.output_dir),  # movable
    }  # fmt: skip


def announce(
    plan: RunPlan, model_args: ModelArguments, training_args: TrainingArguments, split_sizes: dict[str, int],
    trainable: int, total: int,
) -> None:  # fmt: skip
    """The run's plan on the console, and a warning when an adapter is evaluated without training."""
    for line in plan_lines(
        model_name=model_args.model_name_or_path, model_type=plan.model_config.model_type, family=plan.family,
        token_dim=plan.token_dim, task=plan.task.name, split_sizes=split_sizes, method=plan.method,
        trainable=trainable, total=total, training_args=training_args, resume_from=plan.resume_from_checkpoint,
    ):  # fmt: skip
        say("%s", line)
    if plan.peft_config is not None and not training_args.do_train and not model_args.pretrain_init:
        logger.warning(
            "evaluating a %s adapter that is neither trained nor loaded: its scores are those of a random "
            "initialisation (pass --do_train, or --peft_model_id DIR to evaluate a saved adapter)",
            plan.method,
        )


def save_train_metrics(trainer: PromptTrainer, result: Any, train_rows: int, output_dir: Path) -> None:
    """``train_results.json`` and the trainer state after training (``total_flos``, a Trainer counter and
    not a result, is left out as transformers' own printing callbacks leave it out)."""
    metrics = {k: v for k, v in result.metrics.items() if k != "total_flos"}
    metrics["train_samples"] = train_rows
    trainer.save_state()  # before train_results.json, which marks training as finished
    if trainer.is_world_process_zero():
        save_split_metrics(output_dir, "train", metrics)
        label = f"trained {trainer.state.global_step} steps in {metrics.get('train_runtime', 0):.0f} s"
        say("%s", metrics_line(label, metrics, "train"))


def evaluate_split(
    trainer: PromptTrainer, scorer: Any, dataset: Any, split: str, prefix: str, output_dir: Path
) -> None:
    """Score one split: ``<prefix>_results.json``, its predictions file and one console line."""
    metrics, predictions = trainer.predict_split(dataset, scorer, prefix)
    if prefix == "eval" and trainer.state.epoch is not None:
        metrics["epoch"] = trainer.state.epoch
    if trainer.is_world_process_zero():
        save_split_metrics(output_dir, prefix, metrics)
        say("%s", metrics_line(split, metrics, prefix))
        refs = scorer.references
        write_predictions(output_dir / f"predictions_{prefix}.jsonl", refs.sources, refs.targets, predictions)


if __name__ == "__main__":
    sys.exit(main())
