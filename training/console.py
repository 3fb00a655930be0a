"""What a ``train.py`` run shows a user: its plan in a few lines, one progress bar, one metrics line per
evaluation, and where the results are (the routing of the lines is in ``training/logs.py``)."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from training.logs import CONSOLE
from training.run_dir import last_complete_checkpoint

logger = logging.getLogger("train")

# Timing keys of the Trainer's metrics: kept in the result files, left out of the console line.
_TIMING_KEYS = (
    "runtime", "samples_per_second", "steps_per_second", "epoch", "total_flos", "model_preparation_time",
)  # fmt: skip


def say(message: str, *args: Any) -> None:
    """One line on the default console (stdout) and in ``output.log``."""
    logger.info(message, *args, extra=CONSOLE)


def planned_steps(training_args: Any, num_train_examples: int) -> int:
    """Optimizer steps of the run: ``--max_steps``, else epochs x updates per epoch (as the Trainer counts)."""
    if training_args.max_steps > 0:
        return training_args.max_steps
    batch = training_args.per_device_train_batch_size * max(training_args.world_size, 1)
    updates_per_epoch = max(
        math.ceil(math.ceil(num_train_examples / batch) / training_args.gradient_accumulation_steps), 1
    )
    return math.ceil(training_args.num_train_epochs * updates_per_epoch)


def _every(strategy: Any, steps: float, what: str) -> str:
    strategy = getattr(strategy, "value", strategy)
    if strategy == "steps":
        return f"{what} every {steps:g} steps"
    if strategy == "epoch":
        return f"{what} every epoch"
    return f"no {what} during training"


def plan_lines(
    *,
    model_name: str,
    model_type: str,
    family: str,
    token_dim: int,
    task: str,
    split_sizes: dict[str, int],
    method: str,
    trainable: int,
    total: int,
    training_args: Any,
    resume_from: str | None,
) -> list[str]:
    """The run's plan: model, task, method with its trainable parameters, steps, output folder."""
    sizes = " / ".join(f"{n:,} {name}" for name, n in split_sizes.items())
    lines = [
        f"model   {model_name} ({model_type}, {family}, d={token_dim})",
        f"task    {task}: {sizes} examples",
        f"method  {method}: {trainable:,} trainable parameters ({100.0 * trainable / max(total, 1):.4g}% of {total:,})",
    ]
    if training_args.do_train:
        steps = planned_steps(training_args, split_sizes.get("train", 0))
        lr = f"learning rate {training_args.learning_rate:g}"
        added = getattr(training_args, "added_embedding_lr", None)
        if added is not None:
            lr += f" (added side {added:g})"
        schedule = ", ".join(
            (
                _every(training_args.eval_strategy, training_args.eval_steps, "evaluation"),
                _every(training_args.save_strategy, training_args.save_steps, "checkpoint"),
            )
        )
        batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        lines.append(f"steps   {steps:,} of batch {batch}, {lr}; {schedule}")
    else:
        lines.append("steps   none (evaluation only)")
    if resume_from is not None:
        lines.append(f"resume  from {resume_from}")
    lines.append(f"output  {training_args.output_dir}")
    return lines


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if key.endswith("loss") else f"{value:.2f}"
    return str(value)


def metrics_line(label: str, metrics: dict[str, Any], prefix: str) -> str:
    """``label: accuracy 66.67, loss 0.6931`` from a Trainer metrics dict (keys ``<prefix>_<name>``)."""
    shown = []
    for key, value in metrics.items():
        name = key[len(prefix) + 1 :] if key.startswith(prefix + "_") else key
        if name in _TIMING_KEYS or not isinstance(value, (int, float)):
            continue
        shown.append(f"{name} {_format_value(name, value)}")
    return f"{label}: {', '.join(shown)}"


class ConsoleProgress(TrainerCallback):
    """One training progress bar (loss as its postfix) and one metrics line per evaluation, rank 0 only.

    Replaces the Trainer's ``ProgressCallback`` / ``PrinterCallback``, which print every log record and
    a second bar per evaluation; the records themselves go to ``output.log`` (``LogHistoryCallback``).
    """

    def __init__(self, show_bar: bool = True) -> None:
        self.show_bar = show_bar
        self.bar: tqdm | None = None
        self.shown_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.show_bar:
            # Redrawn ten times a second on a terminal; in a redirected file, every 30 s (a long run's
            # stderr file would otherwise grow by a redraw per 0.1 s).
            interval = 0.1 if sys.stderr.isatty() else 30.0
            self.bar = tqdm(total=state.max_steps, desc="train", dynamic_ncols=True, mininterval=interval)
            self.shown_step = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.shown_step)
            self.shown_step = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero and metrics:
            say("%s", metrics_line(f"step {state.global_step}/{state.max_steps} validation", metrics, "eval"))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the bar's line (also when training stops early, e.g. on Ctrl-C)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_console_progress(trainer: Any) -> ConsoleProgress:
    """Swap the Trainer's printing callbacks for one ``ConsoleProgress``; returns it."""
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    progress = ConsoleProgress(show_bar=not trainer.args.disable_tqdm)
    trainer.add_callback(progress)
    return progress


def interrupted_message(output_dir: str | Path, overwrite_output_dir: bool) -> str:
    """The line printed on Ctrl-C: where the last checkpoint is and how to resume from it."""
    last = last_complete_checkpoint(output_dir, warn=False)
    if last is None:
        return f"interrupted: no checkpoint was saved yet in {output_dir}; rerun the same command to start again."
    how = "the same command without --overwrite_output_dir" if overwrite_output_dir else "the same command"
    return f"interrupted: the last checkpoint is {last}; rerun {how} to resume from it."
