"""The Trainer used by ``train.py``: DePT/ACCEPT optimizer and schedule, correct gradient accumulation,
greedy generation with the task's target length, a stop on non-finite loss, atomic state files.

It subclasses ``Seq2SeqTrainer`` for every model family; decoder-only and classifier models use the same
class (the classifier path evaluates logits instead of generating, ``predict_with_generate=False``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import SequentialSampler
from transformers import Seq2SeqTrainer, TrainerCallback, TrainerState
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peft.family import Family, new_tokens
from peft.io import load_tensors_into, read_adapter_tensors
from peft.model import divide_loss_by_accumulation
from training.evaluation import SplitMetrics
from training.head_only import mark_trained_only, trained_state_dict
from training.manifest import MANIFEST_NAME, write_manifest
from training.optim import build_linear_schedule, build_optimizer
from training.outputs import atomic_write_text
from training.resume_record import read_record, write_record
from training.run_dir import TRAINER_STATE, relative_to_run, resolve_in_run

logger = logging.getLogger(__name__)

GENERATION_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class NonFiniteLossError(RuntimeError):
    """Raised before the optimizer step when the training loss is NaN or infinite (``--stop_on_nan``)."""


class LogHistoryCallback(TrainerCallback):
    """Copy every Trainer log record (loss, learning rate, eval metrics) into our logger, hence output.log."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            logger.info("step %d: %s", state.global_step, logs)


def state_json(state: TrainerState, run_dir: str | os.PathLike) -> str:
    """``trainer_state.json`` text (the Trainer's layout) with the best checkpoint relative to ``run_dir``."""
    data = dataclasses.asdict(state)
    data["best_model_checkpoint"] = relative_to_run(state.best_model_checkpoint, run_dir)
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def best_checkpoint_in(state: TrainerState, run_dir: str | os.PathLike) -> str | None:
    """The best checkpoint of ``state`` in the run's current folder ``run_dir``, or None when it is gone.

    Found by its step (``best_global_step``), as the Trainer itself does when saving, so a state written
    by an older version (an absolute path into the folder's old place) is found too.
    """
    candidates = [resolve_in_run(state.best_model_checkpoint, run_dir)]
    if state.best_global_step:
        candidates.append(str(Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.best_global_step}"))
    found = next((c for c in candidates if c is not None and Path(c).is_dir()), None)
    if found is None and state.best_model_checkpoint is not None:
        logger.warning("the best checkpoint %s is no longer in %s", state.best_model_checkpoint, run_dir)
    return found


class _DropMessagesNaming(logging.Filter):
    """Drops log records that mention ``text`` (None drops nothing)."""

    def __init__(self, text: str | None) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text is None or self.text not in record.getMessage()


class PromptTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with the original optimisation and evaluation semantics.

    Args beyond ``Seq2SeqTrainer``'s (keyword-only):
        family: the model family (a ``peft.family.Family`` or its name).
        max_new_tokens: tokens generated per example at evaluation (the task's max target length).
        added_embedding_lr: learning rate of the added side; None = ``args.learning_rate``.
        stop_on_nan: raise ``NonFiniteLossError`` on a non-finite training loss.
        identity: the run's identity (``training.identity``), recorded with the running loss sum in every
            checkpoint's ``resume_record.json``; None writes no record.
    """

    def __init__(
        self,
        *args: Any,
        family: Family,
        max_new_tokens: int,
        added_embedding_lr: float | None = None,
        stop_on_nan: bool = True,
        identity: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None and training_args.ddp_find_unused_parameters is None:
            # Every trainable tensor (prompt, A/B or codebooks, a classifier head) takes part in every forward
            # and frozen ones are not registered by DDP: skip the per-step search for unused parameters
            # (transformers turns it on for any model that is not a PreTrainedModel, as our wrapper). Set
            # before the parent builds the accelerator, which reads it.
            training_args.ddp_find_unused_parameters = False
        model = kwargs.get("model", args[0] if args else None)
        if model is not None:  # read by the parent's __init__; also for the HEAD_ONLY/FULL baselines
            divide_loss_by_accumulation(model)
        super().__init__(*args, **kwargs)
        self.add_callback(LogHistoryCallback())
        self.family = family
        self.max_new_tokens = max_new_tokens
        self.added_embedding_lr = added_embedding_lr
        self.stop_on_nan = stop_on_nan
        self.last_finite_loss: float | None = None
        self.identity = identity
        self._loss_sum_before_resume = 0.0

    # ---- optimisation -------------------------------------------------------------------------
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """torch AdamW with two learning-rate groups (see ``training.optim``)."""
        if self.optimizer is None:
            self.optimizer = build_optimizer(
                model if model is not None else self.model,
                learning_rate=self.args.learning_rate,
                added_embedding_lr=self.added_embedding_lr,
                weight_decay=self.args.weight_decay,
                betas=(self.args.adam_beta1, self.args.adam_beta2),
                eps=self.args.adam_epsilon,
            )
        return self.optimizer

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Linear warm-up/decay over the Trainer's real step count (so ``--num_train_epochs`` works too)."""
        if self.lr_scheduler is None:
            self.lr_scheduler = build_linear_schedule(
                optimizer if optimizer is not None else self.optimizer,
                self.args.get_warmup_steps(num_training_steps),
                num_training_steps,
            )
        return self.lr_scheduler

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; after a resume ``train_loss`` is the mean over the whole run (the Trainer alone
        averages the steps of this call only), from the loss sum recorded in the checkpoint."""
        record = read_record(resume_from_checkpoint) if isinstance(resume_from_checkpoint, str) else None
        self._loss_sum_before_resume = float(record["train_loss_sum"]) if record else 0.0
        output = super().train(resume_from_checkpoint, *args, **kwargs)
        if record is None:
            if isinstance(resume_from_checkpoint, str):
                logger.warning(
                    "%s has no resume record: train_loss covers this call's steps only",
                    resume_from_checkpoint,
                )
            return output
        loss = (self._loss_sum_before_resume + self._total_loss_scalar) / max(self.state.global_step, 1)
        return output._replace(training_loss=loss, metrics=dict(output.metrics, train_loss=loss))

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        """The Trainer's epoch, not entered once ``--max_steps`` is reached: the Trainer checks it only after
        a step, so a resume from the final checkpoint of a run killed mid-epoch trained one step too many."""
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """One micro-batch; with ``stop_on_nan`` a non-finite loss stops the run before the optimizer step."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.stop_on_nan:
            value = loss.item() * self.current_gradient_accumulation_steps
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite training loss ({value}) at step {self.state.global_step + 1}; "
                    f"last finite loss: {self.last_finite_loss}. The run was stopped before the optimizer "
                    "step; checkpoints already saved in --output_dir are intact (--stop_on_nan False to "
                    "disable this check)."
                )
            self.last_finite_loss = value
        return loss

    # ---- evaluation ---------------------------------------------------------------------------
    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        """Evaluation keeps dataset order: scoring and ``predictions_<split>.jsonl`` match rows by position.

        transformers 5 would length-group evaluation batches too under
        ``--train_sampling_strategy group_by_length`` (permuting the predictions); only training is grouped.
        """
        if eval_dataset is not None and self.args.train_sampling_strategy == "group_by_length":
            return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
        return super()._get_eval_sampler(eval_dataset)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        """Evaluate with the prompt/update composed once (``model.materialized()``) when available.

        Under DDP every example is scored once: ``Seq2SeqTrainer.evaluate/predict`` switch the gather to
        ``accelerator.gather``, which keeps the samples the distributed sampler repeats to even out the last
        batch (N=5 on 2 ranks with batch 2 gives 8 predictions); ``gather_for_metrics`` drops them.
        """
        self.gather_function = functools.partial(
            self.accelerator.gather_for_metrics, use_gather_object=self.args.eval_use_gather_object
        )
        materialized = getattr(self.model, "materialized", None)
        context = materialized() if callable(materialized) else contextlib.nullcontext()
        with context:
            return super().evaluation_loop(*args, **kwargs)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Greedy generation of ``max_new_tokens`` tokens + the teacher-forced loss.

        Only the input ids and masks reach ``generate`` (transformers 5's own step forwards every batch
        key). Returns ``(loss, generated [B, max_new_tokens] padded with the pad id, labels)``; for
        decoder-only models the generated ids are the new tokens only.
        """
        if not self.args.predict_with_generate or prediction_loss_only:
            return super().prediction_step(
                model, inputs, prediction_loss_only=prediction_loss_only, ignore_keys=ignore_keys
            )
        inputs = self._prepare_inputs(inputs)
        generation_inputs = {k: inputs[k] for k in GENERATION_INPUT_KEYS if k in inputs}
        with torch.no_grad():
            generated = self.model.generate(
                **generation_inputs,
                max_new_tokens=self.max_new_tokens,
                num_beams=self.args.generation_num_beams or 1,
                do_sample=False,
            )
        generated = self._pad_to(new_tokens(generated, inputs["input_ids"], self.family), self.max_new_tokens)

        loss = None
        if "labels" in inputs:
            with torch.no_grad(), self.compute_loss_context_manager():
                outputs = model(**inputs)
            loss = (outputs["loss"] if isinstance(outputs, dict) else outputs[0]).detach().mean()
        if self.args.prediction_loss_only:
            return loss, None, None
        return loss, generated, inputs.get("labels")

    def predict_split(
        self, dataset: Any, scorer: SplitMetrics, metric_key_prefix: str
    ) -> tuple[dict[str, float], list[str]]:
        """Predict ``dataset`` and score it with ``scorer`` (``training.evaluation.SplitMetrics``).

        Returns the metrics (keys prefixed with ``metric_key_prefix``) and the predictions as text, in dataset
        order. The scorer of the periodic evaluation (``compute_metrics``) is restored afterwards.
        """
        periodic, self.compute_metrics = self.compute_metrics, scorer
        try:
            output = self.predict(dataset, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics = periodic
        # The Trainer times wrapping the model on its first use, which a run that trained did before: not a
        # result (an evaluation redone after a kill would report a key the uninterrupted run does not).
        metrics = {k: v for k, v in output.metrics.items() if k != f"{metric_key_prefix}_model_preparation_time"}
        return metrics, scorer.decode(output.predictions, output.label_ids)

    def _pad_to(self, tensor: torch.Tensor, length: int) -> torch.Tensor:
        pad_id = self.processing_class.pad_token_id
        if pad_id is None:
            pad_id = self.processing_class.eos_token_id
        if tensor.shape[1] >= length:
            return tensor[:, :length]
        padded = tensor.new_full((tensor.shape[0], length), pad_id)
        padded[:, : tensor.shape[1]] = tensor
        return padded

    # ---- checkpoints ----------------------------------------------------------------------------
    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint with ``resume_record.json`` (identity, loss sum so far), a
        ``trainer_state.json`` whose paths are relative to the run folder, and ``checkpoint_manifest.json``
        written last: without it (a save cut off) the checkpoint is never resumed."""
        run_dir = self._get_output_dir(trial=trial)
        folder = Path(run_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            (folder / MANIFEST_NAME).unlink(missing_ok=True)  # a save over an older one: invalid until done
        if self.identity is not None:
            pending = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
            loss_sum = self._loss_sum_before_resume + self._total_loss_scalar + pending
            if self.args.should_save:
                write_record(folder, self.identity, loss_sum, self.state.global_step)
        super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every process has written its RNG state (DDP)
        if self.args.should_save:
            atomic_write_text(folder / TRAINER_STATE, state_json(self.state, run_dir))
            write_manifest(folder)

    def _init_training_state(
        self,
        max_steps: int,
        num_update_steps_per_epoch: int,
        num_train_epochs: int,
        resume_from_checkpoint: str | None,
        trial: Any,
    ) -> tuple[int, int]:
        """The Trainer's state restore, with the best checkpoint found in the run's *current* folder.

        ``trainer_state.json`` records it relative to the run folder (the folder may have been moved since);
        the Trainer would look for it relative to the working directory and drop it with a warning.
        """
        recorded = None
        if resume_from_checkpoint is not None and (Path(resume_from_checkpoint) / TRAINER_STATE).is_file():
            recorded = json.loads((Path(resume_from_checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
            recorded = recorded.get("best_model_checkpoint")
        trainer_logger = logging.getLogger("transformers.trainer")
        drop = _DropMessagesNaming(recorded)
        trainer_logger.addFilter(drop)
        try:
            result = super()._init_training_state(
                max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
            )
        finally:
            trainer_logger.removeFilter(drop)
        if recorded is not None:
            self.state.best_model_checkpoint = recorded
            self.state.best_model_checkpoint = best_checkpoint_in(self.state, self._get_output_dir(trial=trial))
        return result

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Adapter runs read only ``adapter_model.safetensors`` of the checkpoint (the Trainer would prefer a
        full ``model.safetensors`` there and load it non-strictly); every adapter tensor must be in it (the
        frozen ones saved with it too, e.g. ULPT's projection)."""
        model = model if model is not None else self.model
        named = getattr(model, "named_saved_tensors", None)
        if named is None:
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        tensors = named()
        state = read_adapter_tensors(resume_from_checkpoint)
        load_tensors_into(tensors, state, str(resume_from_checkpoint), required=tuple(tensors))

    def load_trained_weights(self, folder: str | os.PathLike) -> None:
        """Load the final weights and Trainer state a finished training wrote to ``folder`` (adapter, or the
        baseline model), so that a redone evaluation reports what the uninterrupted run did (epoch, step)."""
        self._load_from_checkpoint(str(folder))
        state = Path(folder) / TRAINER_STATE
        if state.is_file():
            self.state = TrainerState.load_from_json(str(state))
            self.state.best_model_checkpoint = best_checkpoint_in(self.state, folder)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Restore optimizer and schedule (``weights_only=True``), then apply this run's learning rates.

        The restored schedule carries the checkpoint's peak learning rates; they are replaced by the current
        ``--learning_rate``/``--added_embedding_lr`` (identical values when the flags did not change, so an
        exact resume stays exact), and each group's rate is recomputed on the current schedule.
        """
        if checkpoint is None:
            return
        folder = Path(checkpoint)
        plain = not (self.is_deepspeed_enabled or self.is_fsdp_enabled) and self.args.world_size <= 1
        if plain and (folder / "optimizer.pt").is_file() and (folder / "scheduler.pt").is_file():
            self.optimizer.load_state_dict(
                torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
            )
            self.lr_scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        else:
            super()._load_optimizer_and_scheduler(checkpoint)
        self._apply_current_learning_rates()

    def _apply_current_learning_rates(self) -> None:
        scheduler = self.lr_scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        added = self.added_embedding_lr if self.added_embedding_lr is not None else self.args.learning_rate
        peaks = {"added": added}
        base_lrs = [
            peaks.get(group.get("name"), self.args.learning_rate) for group in self.optimizer.param_groups
        ]
        for group, base, factor in zip(
            self.optimizer.param_groups, base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["initial_lr"] = base
            group["lr"] = base * factor(scheduler.last_epoch)
        scheduler.base_lrs = base_lrs
        scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---- files --------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """A plain model with frozen parts (the HEAD_ONLY baseline) saves only its trained tensors.

        Our adapters save only theirs already (``PeftModel.save_pretrained``).
        """
        if state_dict is None and not hasattr(self.model, "named_adapter_tensors"):
            state_dict = trained_state_dict(self.model)
            if state_dict is not None:
                mark_trained_only(self.model)
        super()._save(output_dir, state_dict=state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """Reloading a checkpoint of trained tensors only: the frozen ones are not missing."""
        frozen = {name for name, p in self.model.named_parameters() if not p.requires_grad}
        missing = [key for key in load_result.missing_keys if key not in frozen]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def save_state(self) -> None:
        """``trainer_state.json`` in ``--output_dir``, written atomically (rank 0 only)."""
        if not self.is_world_process_zero():
            return
        atomic_write_text(
            Path(self.args.output_dir) / TRAINER_STATE, state_json(self.state, self.args.output_dir)
        )
