"""Training/evaluation speed of PT, DePT and ACCEPT with fixed (L) and dynamic padding, in one run.

The backbone is a randomly initialised T5 built from a config (no weights are downloaded): T5-small
widths by default (d=512, 6+6 layers, 8 heads, d_ff 2048, vocab 32128), ``--size base`` for T5-base.
Input lengths come from real task data (``--data_dir`` with ``<task>/train.jsonl``, formatted by
``data.loading`` and tokenised with the T5 tokenizer at ``--tokenizer``); without data or tokenizer
(or with ``--synthetic``) lengths are drawn from a log-normal with the task's mean length.

Measured, side by side (all methods share one frozen backbone; configurations are interleaved step by
step so that load from other processes hits all of them alike; medians over ``--steps`` after
``--warmup`` steps):

* training step (forward + backward + AdamW) in ms, real tokens/s and examples/s, for PT (m=100),
  DePT (m=60, r=30) and ACCEPT SCPP / SCAP / both (codebooks fitted to the paper's budget at width d),
  with fixed padding to L and dynamic padding (random batches, and length-grouped batches from the
  Trainer's own ``get_length_grouped_indices``);
* peak memory per step (CPU: RSS sampled during the step above the RSS before it; GPU: max allocated);
* evaluation throughput (examples/s; greedy generation of the task's max target length + the loss
  forward, as the trainer does) with ``model.materialized()``, and the codebook work it does: adapter
  composition calls (forward hooks) and ``aten::einsum`` events (torch.profiler);
* scaling: step time vs prompt length m (DePT, fixed L) and vs L (DePT m=60).

Usage::

    python scripts/benchmark.py                                   # T5-small widths, sst2 + rte lengths
    python scripts/benchmark.py --num_layers 1 --json out.json --markdown out.md
    python scripts/benchmark.py --quick --synthetic               # seconds; CI smoke run, no timings
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from param_budget import PAPER_SCAP, PAPER_SCPP, default_codebook  # noqa: E402

from peft import PromptTuningConfig, get_peft_model  # noqa: E402
from peft.budget import feasible_codebooks, paper_budget  # noqa: E402
from peft.config import BudgetWarning  # noqa: E402

logger = logging.getLogger("benchmark")

SIZES = {
    # name -> T5Config widths
    "tiny": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4},
    "small": {"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8},
    "base": {"d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12},
}
T5_VOCAB = 32128
SYNTHETIC_MEAN_LENGTH = {"sst2": 17, "cola": 16, "mnli": 47, "qnli": 57, "mrpc": 67, "rte": 82}
"""Mean T5-tokenised source length of the real GLUE training sets (used when no data is available)."""
PADDINGS = ("fixed", "dynamic", "dynamic+grouped")


# ---- inputs -------------------------------------------------------------------------------------
@dataclass
class TaskRows:
    """Tokenised rows of one task (``input_ids``/``attention_mask``/``labels`` lists) and their source."""

    name: str
    train: list[dict[str, list[int]]]
    validation: list[dict[str, list[int]]]
    target_length: int
    source: str

    @property
    def lengths(self) -> list[int]:
        return [len(row["input_ids"]) for row in self.train]


def real_rows(task: str, data_dir: Path, tokenizer: Any, max_len: int, limit: int) -> TaskRows:
    """Rows formatted by ``data.loading`` and tokenised by ``data.preprocess`` without padding."""
    from data.loading import load_task_splits
    from data.preprocess import max_target_length, tokenize_splits

    splits = load_task_splits(task, data_dir=str(data_dir), splits=("train", "validation"))
    target = max_target_length(task, tokenizer)
    tokenized = tokenize_splits(splits, tokenizer, "seq2seq", max_len, target, pad_to_max_length=False)
    keys = ("input_ids", "attention_mask", "labels")
    train = tokenized["train"].select(range(min(limit, len(tokenized["train"]))))
    to_rows = lambda ds: [{k: row[k] for k in keys} for row in ds]  # noqa: E731
    return TaskRows(task, to_rows(train), to_rows(tokenized["validation"]), target, f"real ({data_dir.name})")


def synthetic_rows(task: str, max_len: int, n: int, seed: int) -> TaskRows:
    """Log-normal lengths (sigma 0.6) with the task's real mean, random ids, 2-token targets."""
    rng = np.random.default_rng(seed)
    mean = SYNTHETIC_MEAN_LENGTH.get(task, 50)
    sigma = 0.6
    lengths = np.clip(np.rint(rng.lognormal(math.log(mean) - sigma**2 / 2, sigma, n)), 3, max_len).astype(int)

    def row(length: int) -> dict[str, list[int]]:
        ids = rng.integers(3, 32000, length - 1).tolist() + [1]
        return {"input_ids": ids, "attention_mask": [1] * length, "labels": [int(rng.integers(3, 32000)), 1]}

    rows = [row(int(x)) for x in lengths]
    split = max(n // 10, 1)
    return TaskRows(task, rows[split:], rows[:split], 3, "synthetic (log-normal)")


def load_rows(args: argparse.Namespace) -> dict[str, TaskRows]:
    """Per task: real rows when the data folder and tokenizer exist (and not ``--synthetic``), else synthetic."""
    tokenizer = None
    if not args.synthetic and Path(args.tokenizer).is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    out = {}
    for task in args.tasks:
        folder = Path(args.data_dir) / task if args.data_dir else None
        if tokenizer is not None and folder is not None and folder.is_dir():
            out[task] = real_rows(task, Path(args.data_dir), tokenizer, args.max_seq_length, args.max_rows)
        else:
            out[task] = synthetic_rows(task, args.max_seq_length, args.max_rows, args.seed)
        logger.info("%s: %d train rows, %s lengths", task, len(out[task].train), out[task].source)
    return out


def collate(rows: list[dict[str, list[int]]], fixed_length: int | None) -> dict[str, torch.Tensor]:
    """The project's ``PaddingCollator`` (T5 pad id 0): to ``fixed_length`` or to the batch's longest row."""
    from data.preprocess import PaddingCollator

    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    return PaddingCollator(tokenizer, "seq2seq", max_seq_length=fixed_length)(rows)


def batch_indices(
    lengths: list[int], batch_size: int, count: int, grouped: bool, seed: int
) -> list[list[int]]:
    """``count`` batches: random ones, or drawn at random from a length-grouped epoch (the Trainer's sampler)."""
    rng = np.random.default_rng(seed)
    if not grouped:
        return [rng.choice(len(lengths), batch_size, replace=False).tolist() for _ in range(count)]
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = get_length_grouped_indices(lengths, batch_size, generator=torch.Generator().manual_seed(seed))
    epoch = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return [epoch[i] for i in rng.choice(len(epoch), count, replace=count > len(epoch))]


def epoch_mean_batch_length(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> float:
    """Mean padded length over a whole epoch of batches (what the sampled steps estimate)."""
    n_batches = len(lengths) // batch_size
    batches = batch_indices(lengths, batch_size, n_batches, grouped, seed) if grouped else None
    if batches is None:
        order = np.random.default_rng(seed).permutation(len(lengths))
        batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
    return float(np.mean([max(lengths[i] for i in b) for b in batches]))


# ---- methods ------------------------------------------------------------------------------------
def method_configs(d: int, max_len: int) -> dict[str, dict[str, Any]]:
    """PT m=100; DePT m=60 r=30; ACCEPT codebooks fitted to the paper's budget split at width d."""
    m = 60
    budget = paper_budget(d, m)
    scpp = default_codebook(feasible_codebooks(m, d, budget.prepended), PAPER_SCPP)
    scap = default_codebook(feasible_codebooks(max_len, d, budget.added), PAPER_SCAP)
    scpp_kw = {"scpp": True, "sub_dim_scpp": scpp[0], "codebook_size_scpp": scpp[1]}
    scap_kw = {"scap": True, "sub_dim_scap": scap[0], "codebook_size_scap": scap[1]}
    dept = {"peft_type": "PROMPT_TUNING_LORA", "num_virtual_tokens": m, "r": 30}
    return {
        "PT": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 100},
        "DePT": dept,
        "ACCEPT-SCPP": {**dept, **scpp_kw},
        "ACCEPT-SCAP": {**dept, **scap_kw},
        "ACCEPT": {**dept, **scpp_kw, **scap_kw},
    }


def build_backbone(size: str, num_layers: int | None, device: torch.device) -> torch.nn.Module:
    """A random T5ForConditionalGeneration with the named widths (dropout 0.1 like T5)."""
    from transformers import T5Config, T5ForConditionalGeneration

    widths = dict(SIZES[size])
    if num_layers:
        widths["num_layers"] = num_layers
    config = T5Config(
        vocab_size=T5_VOCAB,
        num_decoder_layers=widths["num_layers"],
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        **widths,
    )
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).to(device)


@dataclass
class Trainee:
    """One adapter on the shared backbone, with its optimizer."""

    name: str
    model: Any
    optimizer: torch.optim.Optimizer
    params: int


def wrap(backbone: torch.nn.Module, name: str, kwargs: dict[str, Any], max_len: int) -> Trainee:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BudgetWarning)
        model = get_peft_model(backbone, PromptTuningConfig(max_length=max_len, **kwargs))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return Trainee(name, model, torch.optim.AdamW(params, lr=1e-3), sum(p.numel() for p in params))


# ---- measuring ----------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of one step: GPU max allocated, or CPU RSS sampled every 5 ms above the RSS before."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._libc = None
        if device.type == "cpu":
            with contextlib.suppress(OSError):
                self._libc = ctypes.CDLL("libc.so.6")

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @contextlib.contextmanager
    def measure(self, out: list[float]) -> Iterator[None]:
        """Appends the step's peak (MiB) to ``out``."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            out.append(torch.cuda.max_memory_allocated(self.device) / 2**20)
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # hand freed heap back so that the baseline is the live memory
        base = peak = self._rss()
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.005):
                peak = max(peak, self._rss())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            out.append((max(peak, self._rss()) - base) / 2**20)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(trainee: Trainee, batch: dict[str, torch.Tensor]) -> None:
    loss = trainee.model(**batch).loss
    loss.backward()
    trainee.optimizer.step()
    trainee.optimizer.zero_grad(set_to_none=True)


@dataclass
class Series:
    """Timings of one configuration."""

    method: str
    task: str
    padding: str
    batches: list[dict[str, torch.Tensor]]
    seconds: list[float] = field(default_factory=list)
    memory_mib: list[float] = field(default_factory=list)

    def row(self, warmup: int, params: int) -> dict[str, Any]:
        timed, batches = self.seconds[warmup:], self.batches[warmup:]
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        padded = [int(b["input_ids"].shape[1]) for b in batches]
        batch_size = int(batches[0]["input_ids"].shape[0])
        return {
            "method": self.method,
            "task": self.task,
            "padding": self.padding,
            "trainable_params": params,
            "steps": len(timed),
            "ms_per_step": 1000 * statistics.median(timed),
            "tokens_per_s": real / sum(timed),
            "examples_per_s": batch_size * len(timed) / sum(timed),
            "mean_batch_length": float(np.mean(padded)),
            "peak_memory_mib": max(self.memory_mib),
        }


def run_interleaved(
    series: list[Series], trainees: dict[str, Trainee], device: torch.device, memory: PeakMemory
) -> None:
    """Round r runs step r of every configuration, so that slow phases of a shared machine hit all alike."""
    rounds = len(series[0].batches)
    for r in range(rounds):
        for s in series:
            batch = {k: v.to(device) for k, v in s.batches[r].items()}
            with memory.measure(s.memory_mib):
                synchronize(device)
                start = time.perf_counter()
                train_step(trainees[s.method], batch)
                synchronize(device)
                s.seconds.append(time.perf_counter() - start)
        logger.info("round %d/%d done", r + 1, rounds)


@contextlib.contextmanager
def count_calls(modules: list[torch.nn.Module]) -> Iterator[list[int]]:
    """Forward calls of ``modules`` (adapter composition: prompt / added update) while active."""
    counter = [0]
    hooks = [m.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 1)) for m in modules]
    try:
        yield counter
    finally:
        for hook in hooks:
            hook.remove()


def evaluate(
    trainee: Trainee,
    rows: TaskRows,
    batch_size: int,
    n_examples: int,
    device: torch.device,
    materialized: bool,
) -> tuple[float, int]:
    """(examples/s, adapter composition calls inside the loop) for generation + loss, dynamic padding."""
    model = trainee.model
    model.eval()
    adapter = model.adapter
    modules = [adapter.prompt] + ([adapter.added] if adapter.added is not None else [])
    examples = rows.validation[:n_examples]
    batches = [collate(examples[i : i + batch_size], None) for i in range(0, len(examples), batch_size)]
    context = model.materialized() if materialized else contextlib.nullcontext()
    with torch.no_grad(), context, count_calls(modules) as calls:
        synchronize(device)
        start = time.perf_counter()
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                max_new_tokens=rows.target_length,
                do_sample=False,
                num_beams=1,
            )
            model(**batch)
        synchronize(device)
        elapsed = time.perf_counter() - start
    model.train()
    return len(examples) / elapsed, calls[0]


def einsum_events(trainee: Trainee, rows: TaskRows, batch_size: int, materialized: bool) -> int:
    """``aten::einsum`` events (the codebook composition) in a profile of one evaluation batch."""
    from torch.profiler import ProfilerActivity, profile

    model = trainee.model
    model.eval()
    batch = collate(rows.validation[:batch_size], None)
    batch = {k: v.to(model.base_model.device) for k, v in batch.items()}
    context = model.materialized() if materialized else contextlib.nullcontext()
    with torch.no_grad(), context:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           max_new_tokens=rows.target_length, do_sample=False)  # fmt: skip
            model(**batch)
    model.train()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::einsum")


def scaling(
    backbone: torch.nn.Module,
    rows: TaskRows,
    args: argparse.Namespace,
    device: torch.device,
    memory: PeakMemory,
) -> dict[str, list[dict[str, Any]]]:
    """DePT step time vs m at fixed L, and vs L at m=60 (fixed padding to each L), interleaved."""
    trainees, series = {}, []
    count = args.warmup + args.scaling_steps
    idx = batch_indices(rows.lengths, args.batch_size, count, False, args.seed)
    for m in args.m_values:
        name = f"m={m}"
        trainees[name] = wrap(backbone, name, {"num_virtual_tokens": m, "r": 30}, args.max_seq_length)
        batches = [collate([rows.train[i] for i in b], args.max_seq_length) for b in idx]
        series.append(Series(name, rows.name, f"fixed L={args.max_seq_length}", batches))
    for length in args.l_values:
        name = f"L={length}"
        trainees[name] = wrap(backbone, name, {"num_virtual_tokens": 60, "r": 30}, length)
        truncated = [[_truncate(rows.train[i], length) for i in b] for b in idx]
        series.append(Series(name, rows.name, f"fixed L={length}", [collate(b, length) for b in truncated]))
    run_interleaved(series, trainees, device, memory)
    out: dict[str, list[dict[str, Any]]] = {"m": [], "L": []}
    for s in series:
        row = s.row(args.warmup, trainees[s.method].params)
        key, value = s.method.split("=")
        out[key].append(
            {key: int(value), **{k: row[k] for k in ("ms_per_step", "tokens_per_s", "peak_memory_mib")}}
        )
    return out


def _truncate(row: dict[str, list[int]], length: int) -> dict[str, list[int]]:
    ids = row["input_ids"]
    if len(ids) <= length:
        return row
    return {
        "input_ids": ids[: length - 1] + [ids[-1]],
        "attention_mask": [1] * length,
        "labels": row["labels"],
    }


# ---- report -------------------------------------------------------------------------------------
def ratio(rows: list[dict[str, Any]], num: tuple[str, str, str], den: tuple[str, str, str]) -> float | None:
    """ms_per_step(num) / ms_per_step(den); keys are (method, task, padding)."""
    find = {(r["method"], r["task"], r["padding"]): r["ms_per_step"] for r in rows}
    if num not in find or den not in find:
        return None
    return find[num] / find[den]


def targets(
    train: list[dict[str, Any]], tasks: list[str], evaluation: dict[str, Any]
) -> list[dict[str, Any]]:
    """The issue's targets as measured ratios (speed-ups as fixed / dynamic; cost ratios as a / b)."""
    out = []
    fixed_task = tasks[0]
    accept_family = ("DePT", "ACCEPT-SCPP", "ACCEPT-SCAP", "ACCEPT")
    for task, goal, paddings in (
        ("sst2", 4.0, ("dynamic", "dynamic+grouped")),
        ("rte", 2.0, ("dynamic+grouped",)),
    ):
        if task not in tasks:
            continue
        for padding in paddings:
            for method in accept_family:
                value = ratio(train, (method, fixed_task, "fixed"), (method, task, padding))
                out.append({"target": f"{task}: fixed L / {padding} speed-up >= {goal}", "method": method,
                            "value": value, "met": value is not None and value >= goal})  # fmt: skip
    for task, padding in [(fixed_task, "fixed")] + [(t, "dynamic+grouped") for t in tasks]:
        for method in ("ACCEPT", "ACCEPT-SCPP", "ACCEPT-SCAP"):
            value = ratio(train, (method, task, padding), ("DePT", task, padding))
            out.append({"target": f"{method} / DePT step <= 1.03 ({task}, {padding})", "method": method,
                        "value": value, "met": value is not None and value <= 1.03})  # fmt: skip
    for method in accept_family:
        value = ratio(train, (method, fixed_task, "fixed"), ("PT", fixed_task, "fixed"))
        out.append({"target": "m=60 / PT m=100 step <= 0.85 (fixed L)", "method": method,
                    "value": value, "met": value is not None and value <= 0.85})  # fmt: skip
    calls = {r["method"]: r["composition_calls_in_loop"] for r in evaluation["rows"]}
    for method, value in calls.items():
        out.append({"target": "materialised evaluation: composition calls = 0", "method": method,
                    "value": value, "met": value == 0})  # fmt: skip
    einsum = evaluation["profile"]["einsum_events_materialized"]
    out.append({"target": "materialised evaluation: aten::einsum events = 0 (ACCEPT profile)", "method": "ACCEPT",
                "value": einsum, "met": einsum == 0})  # fmt: skip
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    cfg = report["config"]
    lines = [
        f"Backbone: random T5 d={cfg['d_model']}, {cfg['num_layers']}+{cfg['num_layers']} layers, "
        f"{cfg['num_heads']} heads, d_ff {cfg['d_ff']}, vocab {T5_VOCAB}; device {cfg['device']} "
        f"({cfg['threads']} threads); batch {cfg['batch_size']}, L={cfg['max_seq_length']}; "
        f"median of {cfg['steps']} steps after {cfg['warmup']} warm-up, configurations interleaved.",
        "Lengths: " + ", ".join(f"{t} {s}" for t, s in report["data"].items()) + ".",
        "",
        "### Training step",
        "",
        "| method | params | task | padding | mean batch len | ms/step | tokens/s | examples/s | peak mem MiB |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["train"]:
        lines.append(
            f"| {r['method']} | {r['trainable_params']:,} | {r['task']} | {r['padding']} | "
            f"{r['mean_batch_length']:.1f} | {r['ms_per_step']:,.0f} | {r['tokens_per_s']:,.0f} | "
            f"{r['examples_per_s']:.1f} | {r['peak_memory_mib']:,.0f} |"
        )
    lines += ["", "Epoch-mean padded batch length (whole training set, no model):", ""]
    for task, stats in report["epoch_batch_length"].items():
        lines.append(f"- {task}: " + ", ".join(f"{k} {v:.1f}" for k, v in stats.items()))
    ev = report["evaluation"]
    lines += [
        "",
        f"### Evaluation ({ev['task']}, {ev['examples']} examples, dynamic padding, generation + loss)",
        "",
        "| method | examples/s (materialised) | composition calls in loop |",
        "|---|---:|---:|",
    ]
    for r in ev["rows"]:
        lines.append(f"| {r['method']} | {r['examples_per_s']:.1f} | {r['composition_calls_in_loop']} |")
    prof = ev["profile"]
    lines += [
        "",
        f"Profile of one ACCEPT evaluation batch: aten::einsum events {prof['einsum_events_materialized']} "
        f"materialised vs {prof['einsum_events_not_materialized']} without materialisation.",
        "",
        "### Scaling (DePT r=30, fixed padding)",
        "",
        f"| m (L={cfg['max_seq_length']}) | ms/step |",
        "|---:|---:|",
    ]
    lines += [f"| {r['m']} | {r['ms_per_step']:,.0f} |" for r in report["scaling"]["m"]]
    lines += ["", "| L (m=60) | ms/step |", "|---:|---:|"]
    lines += [f"| {r['L']} | {r['ms_per_step']:,.0f} |" for r in report["scaling"]["L"]]
    lines += ["", "### Targets", "", "| target | method | measured | met |", "|---|---|---:|---|"]
    for t in report["targets"]:
        lines.append(
            f"| {t['target']} | {t['method']} | {_fmt(t['value'])} | {'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", choices=list(SIZES), default="small", help="backbone widths (default T5-small)"
    )
    parser.add_argument("--num_layers", type=int, default=None, help="override encoder/decoder depth")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "rte"])
    parser.add_argument("--data_dir", default=str(REPO_ROOT.parent / "shared" / "data-real"))
    parser.add_argument("--tokenizer", default=str(REPO_ROOT.parent / "shared" / "t5-tokenizer"))
    parser.add_argument("--synthetic", action="store_true", help="synthetic lengths even when data exists")
    parser.add_argument("--max_rows", type=int, default=20000, help="training rows per task to sample from")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    parser.add_argument("--scaling_steps", type=int, default=3)
    parser.add_argument("--m_values", type=int, nargs="+", help="default 1 20 40 60 80 100 (quick: 1 100)")
    parser.add_argument("--l_values", type=int, nargs="+", help="default 32 64 128 256 (quick: 32 64)")
    parser.add_argument("--eval_examples", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps per configuration (CI)")
    parser.add_argument("--json", default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", default=None, help="write the Markdown tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.batch_size, args.max_seq_length = "tiny", 4, 64
        args.steps, args.warmup, args.scaling_steps, args.max_rows, args.eval_examples = 2, 0, 2, 200, 8
    args.m_values = args.m_values or ([1, 100] if args.quick else [1, 20, 40, 60, 80, 100])
    args.l_values = args.l_values or ([32, 64] if args.quick else [32, 64, 128, 256])
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to --json / --markdown, tables printed)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    logging.getLogger("peft").setLevel(logging.ERROR)
    started = time.perf_counter()
    rows = load_rows(args)
    backbone = build_backbone(args.size, args.num_layers, device)
    d = backbone.config.d_model
    configs = method_configs(d, args.max_seq_length)
    trainees = {name: wrap(backbone, name, kw, args.max_seq_length) for name, kw in configs.items()}
    memory = PeakMemory(device)

    count = args.warmup + args.steps
    first = args.tasks[0]
    series = []
    fixed_idx = batch_indices(rows[first].lengths, args.batch_size, count, False, args.seed)
    plans: list[tuple[str, str, list[dict[str, torch.Tensor]]]] = [
        (first, "fixed", [collate([rows[first].train[i] for i in b], args.max_seq_length) for b in fixed_idx])
    ]
    for task in args.tasks:
        for padding, grouped in (("dynamic", False), ("dynamic+grouped", True)):
            idx = batch_indices(rows[task].lengths, args.batch_size, count, grouped, args.seed)
            plans.append((task, padding, [collate([rows[task].train[i] for i in b], None) for b in idx]))
    for task, padding, batches in plans:
        series += [Series(name, task, padding, batches) for name in trainees]
    logger.info("%d configurations x %d steps, interleaved", len(series), count)
    run_interleaved(series, trainees, device, memory)
    train_rows = [s.row(args.warmup, trainees[s.method].params) for s in series]

    eval_rows = []
    for name, trainee in trainees.items():
        speed, calls = evaluate(trainee, rows[first], args.batch_size, args.eval_examples, device, True)
        eval_rows.append({"method": name, "examples_per_s": speed, "composition_calls_in_loop": calls})
    profile_info = {
        "einsum_events_materialized": einsum_events(trainees["ACCEPT"], rows[first], args.batch_size, True),
        "einsum_events_not_materialized": einsum_events(
            trainees["ACCEPT"], rows[first], args.batch_size, False
        ),
    }
    evaluation = {"task": first, "examples": min(args.eval_examples, len(rows[first].validation)),
                  "rows": eval_rows, "profile": profile_info}  # fmt: skip
    scale = scaling(backbone, rows[first], args, device, memory)

    widths = {k: getattr(backbone.config, k) for k in ("d_model", "num_layers", "num_heads", "d_ff")}
    report = {
        "config": {
            **widths,
            "size": args.size,
            "batch_size": args.batch_size,
            "max_seq_length": args.max_seq_length,
            "steps": args.steps,
            "warmup": args.warmup,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "quick": args.quick,
            "methods": configs,
        },  # fmt: skip
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },  # fmt: skip
        "data": {t: r.source for t, r in rows.items()},
        "epoch_batch_length": {
            t: {
                "random": epoch_mean_batch_length(r.lengths, args.batch_size, False, args.seed),
                "grouped": epoch_mean_batch_length(r.lengths, args.batch_size, True, args.seed),
                "mean example": float(np.mean(r.lengths)),
            }
            for t, r in rows.items()
        },  # fmt: skip
        "train": train_rows,
        "evaluation": evaluation,
        "scaling": scale,
    }
    report["targets"] = targets(train_rows, args.tasks, evaluation)
    report["wall_seconds"] = time.perf_counter() - started
    text = markdown(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return report


if __name__ == "__main__":
    main()
