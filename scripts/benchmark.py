"""Training/evaluation speed of PT, DePT and ACCEPT with fixed (L) and dynamic padding, in one run.

The backbone is a random T5 built from a config (nothing downloaded): T5-small widths by default,
``--size base`` for T5-base. Input lengths come from real rows with ``--data_dir`` (``<task>/train.jsonl``)
and ``--tokenizer`` (a T5 tokenizer folder), else from a log-normal with the task's mean length.

Each case is a function ``case_<name>(bench) -> Section`` (``--cases`` picks among ``CASES``). All
methods (the grid of ``scripts/_grid.py``: PT m=100, DePT m=60 r=30, ACCEPT SCPP / SCAP / both within
the paper's budget) share one frozen backbone; configurations are interleaved step by step so that load
from other processes hits all alike; medians over ``--steps`` after ``--warmup`` steps:

* ``train``: training step (forward + backward + AdamW) in ms, real tokens/s, examples/s and peak
  memory, with fixed padding to L and dynamic padding (random batches, and the Trainer's length-grouped
  batches), and the step-time ratios between them;
* ``evaluation``: examples/s of materialised greedy generation + the loss forward, the adapter
  composition calls inside the loop and the ``aten::einsum`` events of one ACCEPT batch;
* ``scaling``: step time vs prompt length m (DePT, fixed L) and vs L (DePT m=60);
* ``decoder_train`` / ``decoder_evaluation`` (run when named): the same on a random Llama-shaped decoder
  (``--decoder_width``, ``--decoder_layers``), left-padded to L against exact dynamic padding, and
  whether both paddings generated the same tokens;
* ``serving`` (run when named): 8 adapters x 4 rows, greedy generation as one mixed batch (per-row
  ``adapter_names``), as length-grouped mixed batches (``peft/serving.py``), as 8 per-adapter calls,
  and the limit (one adapter, one call): rows/s of each and its ratio to the per-adapter calls.

The targets these numbers are judged against are in docs/benchmarks.md.

Usage::

    python scripts/benchmark.py --data_dir DATA --tokenizer T5_TOKENIZER   # T5-small widths, sst2 + rte
    python scripts/benchmark.py --num_layers 1 --json out.json --markdown out.md   # synthetic lengths
    python scripts/benchmark.py --quick                                      # seconds; smoke run
    python scripts/benchmark.py --cases decoder_train decoder_evaluation --tasks sst2 rte superglue-boolq \
        --data_dir DATA --tokenizer T5_TOKENIZER                            # Llama-shaped d=256, 4 layers
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from functools import cached_property  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from peft import PromptTuningConfig, get_peft_model  # noqa: E402
from peft.config import METHOD_NAMES  # noqa: E402
from peft.family import CAUSAL, SEQ2SEQ, Family, new_tokens  # noqa: E402
from peft.serving import generate_in_batches  # noqa: E402
from scripts._grid import method_grid  # noqa: E402
from scripts._tables import markdown_table  # noqa: E402
from training.budget_notice import library_budget_warnings_off  # noqa: E402

logger = logging.getLogger("benchmark")

SIZES = {
    # name -> T5Config widths
    "tiny": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4},
    "small": {"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8},
    "base": {"d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12},
}
T5_VOCAB = 32128
SYNTHETIC_MEAN_LENGTH = {"sst2": 17, "cola": 16, "mnli": 47, "qnli": 57, "mrpc": 67, "rte": 82}
"""Mean T5-tokenised source length of the real GLUE training sets (used when no data is given)."""
PROMPT_LENGTH, DEPT_RANK = 60, 30
"""m and r of DePT / ACCEPT in every case (PT has the budget's 100 tokens)."""


# ---- inputs -------------------------------------------------------------------------------------
@dataclass
class TaskRows:
    """Tokenised rows of one task (``input_ids``/``attention_mask``/``labels`` lists) and their source."""

    name: str
    train: list[dict[str, list[int]]]
    validation: list[dict[str, list[int]]]
    target_length: int
    source: str
    family: Family = SEQ2SEQ

    @property
    def lengths(self) -> list[int]:
        return [len(row["input_ids"]) for row in self.train]


def real_rows(task: str, data_dir: Path, tokenizer: Any, max_len: int, limit: int,
              family: Family = SEQ2SEQ) -> TaskRows:  # fmt: skip
    """Rows formatted by ``data.loading`` and tokenised by ``data.preprocess`` for ``family``, unpadded."""
    from data.loading import load_task_splits
    from data.preprocess import max_target_length, tokenize_splits

    splits = load_task_splits(task, data_dir=str(data_dir), splits=("train", "validation"))
    target = max_target_length(task, tokenizer)
    tokenized = tokenize_splits(splits, tokenizer, family, max_len, target, pad_to_max_length=False)
    keys = ("input_ids", "attention_mask", "labels")
    train = tokenized["train"].select(range(min(limit, len(tokenized["train"]))))
    to_rows = lambda ds: [{k: row[k] for k in keys} for row in ds]  # noqa: E731
    rows = to_rows(train), to_rows(tokenized["validation"])
    return TaskRows(task, *rows, target, f"real ({data_dir.name})", family)


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


def as_decoder_rows(rows: TaskRows, max_len: int) -> TaskRows:
    """Synthetic rows in the decoder-only layout: training = source + target with labels on the target
    (cut to the last ``max_len`` tokens), evaluation = the source alone with the target's first token."""

    def train_row(row: dict[str, list[int]]) -> dict[str, list[int]]:
        ids = (row["input_ids"] + row["labels"])[-max_len:]
        labels = ([-100] * len(row["input_ids"]) + row["labels"])[-max_len:]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    validation = [{**row, "labels": row["labels"][:1]} for row in rows.validation]
    return replace(rows, train=[train_row(r) for r in rows.train], validation=validation, family=CAUSAL)


def load_rows(args: argparse.Namespace, decoder_only: bool = False) -> dict[str, TaskRows]:
    """Per task: real rows from ``--data_dir`` (tokenised with ``--tokenizer``), else synthetic lengths;
    ``decoder_only``: in the decoder-only layout (prompt + target, left-padded by the collator)."""
    from transformers import AutoTokenizer

    out = {}
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer) if args.data_dir else None
    for task in args.tasks:
        if tokenizer is not None:
            family = CAUSAL if decoder_only else SEQ2SEQ
            out[task] = real_rows(task, Path(args.data_dir), tokenizer, args.max_seq_length, args.max_rows, family)
        else:
            out[task] = synthetic_rows(task, args.max_seq_length, args.max_rows, args.seed)
            if decoder_only:
                out[task] = as_decoder_rows(out[task], args.max_seq_length)
        logger.info("%s: %d train rows, %s lengths", task, len(out[task].train), out[task].source)
    return out


def collate(rows: list[dict[str, list[int]]], fixed_length: int | None,
            family: Family = SEQ2SEQ) -> dict[str, torch.Tensor]:  # fmt: skip
    """The project's ``PaddingCollator`` (T5 pad id 0): to ``fixed_length`` or to the batch's longest row."""
    from data.preprocess import PaddingCollator

    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    return PaddingCollator(tokenizer, family, max_seq_length=fixed_length)(rows)


def batch_indices(lengths: list[int], batch_size: int, count: int, grouped: bool, seed: int) -> list[list[int]]:
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
    if grouped:
        batches = batch_indices(lengths, batch_size, n_batches, grouped, seed)
    else:
        order = np.random.default_rng(seed).permutation(len(lengths))
        batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
    return float(np.mean([max(lengths[i] for i in b) for b in batches]))


# ---- backbone and adapters ----------------------------------------------------------------------
def build_backbone(size: str, num_layers: int | None, device: torch.device) -> torch.nn.Module:
    """A random T5ForConditionalGeneration with the named widths (dropout 0.1 like T5)."""
    from transformers import T5Config, T5ForConditionalGeneration

    widths = {**SIZES[size], **({"num_layers": num_layers} if num_layers else {})}
    config = T5Config(vocab_size=T5_VOCAB, num_decoder_layers=widths["num_layers"], dropout_rate=0.1,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **widths)  # fmt: skip
    torch.manual_seed(0)
    return T5ForConditionalGeneration(config).to(device)


def build_decoder(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """A random LlamaForCausalLM of width ``--decoder_width`` and ``--decoder_layers`` layers: head size 64,
    SwiGLU width 8d/3 rounded up to a multiple of 8 (Llama's shape), T5's vocabulary (the data's ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = args.decoder_width
    heads = max(d // 64, 1)
    config = LlamaConfig(
        vocab_size=T5_VOCAB, hidden_size=d, intermediate_size=-(-8 * d // 24) * 8,
        num_hidden_layers=args.decoder_layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=args.max_seq_length + 128, pad_token_id=0, bos_token_id=None, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device)


@dataclass
class DecoderSetup:
    """The decoder-only cases' backbone, task rows (decoder-only layout) and adapters."""

    backbone: torch.nn.Module
    rows: dict[str, TaskRows]
    trainees: dict[str, Trainee]

    @property
    def shape(self) -> dict[str, int]:
        c = self.backbone.config
        return {"d_model": c.hidden_size, "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
                "d_ff": c.intermediate_size, "vocab": c.vocab_size}  # fmt: skip


@dataclass
class Trainee:
    """One adapter on the shared backbone, with its optimizer."""

    name: str
    model: Any
    optimizer: torch.optim.Optimizer
    params: int

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        """One training step: forward, backward, AdamW."""
        self.model(**batch).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def wrap(backbone: torch.nn.Module, name: str, kwargs: dict[str, Any], max_len: int) -> Trainee:
    """``get_peft_model`` with ``PromptTuningConfig(**kwargs)`` in training mode, and its AdamW."""
    with library_budget_warnings_off():  # the grid is counted already
        model = get_peft_model(backbone, PromptTuningConfig(max_length=max_len, **kwargs))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return Trainee(name, model, torch.optim.AdamW(params, lr=1e-3), sum(p.numel() for p in params))


# ---- measuring (shared by every case) ------------------------------------------------------------
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


@contextlib.contextmanager
def stopwatch(device: torch.device) -> Iterator[list[float]]:
    """Wall seconds of the block (device synchronised at both ends), appended to the yielded list."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda _: None
    out: list[float] = []
    sync(device)
    start = time.perf_counter()
    yield out
    sync(device)
    out.append(time.perf_counter() - start)


@dataclass
class Series:
    """One configuration: its batches, the step that consumes one, and the measured seconds and memory."""

    method: str
    task: str
    padding: str
    batches: list[dict[str, torch.Tensor]]
    step: Callable[[dict[str, torch.Tensor]], None]
    params: int
    seconds: list[float] = field(default_factory=list)
    memory_mib: list[float] = field(default_factory=list)

    def row(self, warmup: int) -> dict[str, Any]:
        """Median step time, throughput and peak memory over the steps after ``warmup``."""
        timed, batches = self.seconds[warmup:], self.batches[warmup:]
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        padded = [int(b["input_ids"].shape[1]) for b in batches]
        batch_size = int(batches[0]["input_ids"].shape[0])
        return {"method": self.method, "task": self.task, "padding": self.padding, "trainable_params": self.params,
                "steps": len(timed), "ms_per_step": 1000 * statistics.median(timed), "tokens_per_s": real / sum(timed),
                "examples_per_s": batch_size * len(timed) / sum(timed), "mean_batch_length": float(np.mean(padded)),
                "peak_memory_mib": max(self.memory_mib)}  # fmt: skip


def run_interleaved(series: list[Series], bench: Bench) -> list[dict[str, Any]]:
    """Round r runs step r of every configuration (a shared machine's slow phases hit all alike); rows."""
    rounds = len(series[0].batches)
    for r in range(rounds):
        for s in series:
            batch = to_device(s.batches[r], bench.device)
            with bench.memory.measure(s.memory_mib), stopwatch(bench.device) as seconds:
                s.step(batch)
            s.seconds += seconds
        logger.info("round %d/%d done", r + 1, rounds)
    return [s.row(bench.args.warmup) for s in series]


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


# ---- reporting (shared by every case) -----------------------------------------------------------
@dataclass
class Section:
    """What a case adds to the report: JSON entries and Markdown lines."""

    data: dict[str, Any]
    markdown: list[str]


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: n/a for None, thousands separators and ``digits`` decimals for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(title: str, columns: list[tuple[str, str, int]], rows: list[dict[str, Any]]) -> list[str]:
    """A Markdown table under ``title``: ``columns`` are (header, row key, decimals)."""
    body = [[fmt(r[key], digits) for _, key, digits in columns] for r in rows]
    return ([title, ""] if title else []) + markdown_table([c[0] for c in columns], body) + [""]


# ---- the run's shared state ----------------------------------------------------------------------
@dataclass
class Bench:
    """What every case reads: the flags, the device, the task rows and the shared backbone."""

    args: argparse.Namespace
    device: torch.device
    rows: dict[str, TaskRows]
    backbone: torch.nn.Module
    memory: PeakMemory

    @property
    def first(self) -> TaskRows:
        """The first task's rows (fixed padding, evaluation and scaling use it)."""
        return self.rows[self.args.tasks[0]]

    @cached_property
    def methods(self) -> dict[str, dict[str, Any]]:
        """Method name -> ``PromptTuningConfig`` fields, from the grid at this backbone's width."""
        d = self.backbone.config.d_model
        grid = method_grid(d, self.args.max_seq_length, PROMPT_LENGTH, r=DEPT_RANK)
        return {g.name: g.config for g in grid}

    @cached_property
    def trainees(self) -> dict[str, Trainee]:
        """One adapter per grid method on the shared backbone."""
        return {n: wrap(self.backbone, n, kw, self.args.max_seq_length) for n, kw in self.methods.items()}

    @cached_property
    def decoder(self) -> DecoderSetup:
        """A Llama-shaped backbone with one adapter per grid method at its width, and the rows it trains on."""
        args = self.args
        backbone = build_decoder(args, self.device)
        grid = method_grid(args.decoder_width, args.max_seq_length, PROMPT_LENGTH, r=DEPT_RANK)
        trainees = {g.name: wrap(backbone, g.name, g.config, args.max_seq_length) for g in grid}
        return DecoderSetup(backbone, load_rows(args, decoder_only=True), trainees)

    def batches(self, rows: TaskRows, grouped: bool, fixed_length: int | None) -> list[dict[str, torch.Tensor]]:
        """``--warmup`` + ``--steps`` collated batches of ``rows``."""
        count = self.args.warmup + self.args.steps
        idx = batch_indices(rows.lengths, self.args.batch_size, count, grouped, self.args.seed)
        return [collate([rows.train[i] for i in b], fixed_length, rows.family) for b in idx]


# ---- cases --------------------------------------------------------------------------------------
def step_ratios(train: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """Measured step-time ratios: fixed-L over dynamic padding per method, ACCEPT over DePT, m=60 over PT."""
    ms = {(r["method"], r["task"], r["padding"]): r["ms_per_step"] for r in train}
    fixed = tasks[0]
    out = []

    def add(name: str, method: str, num: tuple[str, str, str], den: tuple[str, str, str]) -> None:
        if num in ms and den in ms:
            out.append({"ratio": name, "method": method, "value": ms[num] / ms[den]})

    dept_and_accept = METHOD_NAMES[1:]
    for task in tasks:
        for padding in ("dynamic", "dynamic+grouped"):
            for method in dept_and_accept:
                add(f"{task}: fixed L / {padding} step", method, (method, fixed, "fixed"), (method, task, padding))
    for task, padding in [(fixed, "fixed")] + [(t, "dynamic+grouped") for t in tasks]:
        for method in METHOD_NAMES[2:]:
            add(f"{method} / DePT step ({task}, {padding})", method, (method, task, padding), ("DePT", task, padding))
    for method in dept_and_accept:
        add("m=60 / PT m=100 step (fixed L)", method, (method, fixed, "fixed"), ("PT", fixed, "fixed"))
    return out


def training_section(bench: Bench, task_rows: dict[str, TaskRows], trainees: dict[str, Trainee],
                     prefix: str = "") -> Section:  # fmt: skip
    """Training steps of every method: fixed padding on the first task, dynamic (random / grouped) on all.
    JSON keys and the heading start with ``prefix`` (the decoder-only case's "decoder_")."""
    args = bench.args
    first = next(iter(task_rows.values()))
    plans = [(first.name, "fixed", bench.batches(first, False, args.max_seq_length))]
    for task, rows in task_rows.items():
        plans += [(task, "dynamic", bench.batches(rows, False, None)),
                  (task, "dynamic+grouped", bench.batches(rows, True, None))]  # fmt: skip
    series = [Series(n, task, padding, batches, t.step, t.params)
              for task, padding, batches in plans for n, t in trainees.items()]  # fmt: skip
    logger.info("%d configurations x %d steps, interleaved", len(series), args.warmup + args.steps)
    train = run_interleaved(series, bench)
    epoch = {t: {"random": epoch_mean_batch_length(r.lengths, args.batch_size, False, args.seed),
                 "grouped": epoch_mean_batch_length(r.lengths, args.batch_size, True, args.seed),
                 "mean example": float(np.mean(r.lengths))} for t, r in task_rows.items()}  # fmt: skip
    ratios = step_ratios(train, list(task_rows))
    columns = [("method", "method", 0), ("params", "trainable_params", 0), ("task", "task", 0),
               ("padding", "padding", 0), ("mean batch len", "mean_batch_length", 1), ("ms/step", "ms_per_step", 0),
               ("tokens/s", "tokens_per_s", 0), ("examples/s", "examples_per_s", 1),
               ("peak mem MiB", "peak_memory_mib", 0)]  # fmt: skip
    heading = "### " + ("Decoder-only training step" if prefix else "Training step")
    lines = table(heading, columns, train)
    lines += ["Epoch-mean padded batch length (whole training set, no model):", ""]
    lines += [f"- {t}: " + ", ".join(f"{k} {v:.1f}" for k, v in s.items()) for t, s in epoch.items()] + [""]
    lines += table("### Step-time ratios", [("ratio", "ratio", 0), ("method", "method", 0), ("measured", "value", 2)],
                   ratios)  # fmt: skip
    return Section({prefix + "train": train, prefix + "epoch_batch_length": epoch, prefix + "ratios": ratios}, lines)


def case_train(bench: Bench) -> Section:
    """Training steps of the T5 backbone (``training_section``)."""
    return training_section(bench, bench.rows, bench.trainees)


def case_decoder_train(bench: Bench) -> Section:
    """Training steps of the Llama-shaped backbone: left padding to L against exact dynamic padding."""
    decoder = bench.decoder
    section = training_section(bench, decoder.rows, decoder.trainees, "decoder_")
    s = decoder.shape
    description = (f"Decoder-only backbone: random Llama d={s['d_model']}, {s['num_layers']} layers, "
                   f"{s['num_heads']} heads, d_ff {s['d_ff']}, vocab {s['vocab']}.")  # fmt: skip
    return Section({**section.data, "decoder_config": s}, [description, ""] + section.markdown)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def generate_and_score(model: Any, batch: dict[str, torch.Tensor], new_tokens: int) -> torch.Tensor:
    """One evaluation step: greedy generation of ``new_tokens`` then the loss forward; the generated rows."""
    out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         max_new_tokens=new_tokens, do_sample=False, num_beams=1)  # fmt: skip
    model(**batch)
    return out


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model`` in eval mode and without gradients for the block, back in training mode after it."""
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train()


def evaluate(trainee: Trainee, rows: TaskRows, bench: Bench, fixed_length: int | None = None) -> dict[str, Any]:
    """Materialised generation + loss over ``--eval_examples`` (dynamic padding, or padding to ``fixed_length``):
    examples/s, composition calls, and a digest of the generated tokens (decoder-only: the new ones)."""
    model, size = trainee.model, bench.args.batch_size
    adapter = model.adapter
    modules = [adapter.prompt] + ([adapter.added] if adapter.added is not None else [])
    examples = rows.validation[: bench.args.eval_examples]
    batches = [collate(examples[i : i + size], fixed_length, rows.family) for i in range(0, len(examples), size)]
    digest = hashlib.sha1()
    with eval_mode(model), model.materialized(), count_calls(modules) as calls, stopwatch(bench.device) as seconds:
        for batch in batches:
            batch = to_device(batch, bench.device)
            out = generate_and_score(model, batch, rows.target_length)
            new = new_tokens(out, batch["input_ids"], rows.family)
            digest.update(repr(new.tolist()).encode())
    return {"method": trainee.name, "examples_per_s": len(examples) / seconds[0],
            "composition_calls_in_loop": calls[0], "predictions_sha1": digest.hexdigest()}  # fmt: skip


def einsum_events(trainee: Trainee, rows: TaskRows, bench: Bench, materialized: bool) -> int:
    """``aten::einsum`` events (the codebook composition) in a profile of one evaluation batch."""
    from torch.profiler import ProfilerActivity, profile

    model = trainee.model
    batch = to_device(collate(rows.validation[: bench.args.batch_size], None), bench.device)
    context = model.materialized() if materialized else contextlib.nullcontext()
    with eval_mode(model), context, profile(activities=[ProfilerActivity.CPU]) as prof:
        generate_and_score(model, batch, rows.target_length)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::einsum")


def case_evaluation(bench: Bench) -> Section:
    """Materialised evaluation speed of every method, and the codebook work it still does."""
    rows = bench.first
    results = [evaluate(t, rows, bench) for t in bench.trainees.values()]
    on, off = (einsum_events(bench.trainees["ACCEPT"], rows, bench, materialized) for materialized in (True, False))
    examples = min(bench.args.eval_examples, len(rows.validation))
    title = f"### Evaluation ({rows.name}, {examples} examples, dynamic padding, generation + loss)"
    columns = [("method", "method", 0), ("examples/s (materialised)", "examples_per_s", 1),
               ("composition calls in loop", "composition_calls_in_loop", 0)]  # fmt: skip
    lines = table(title, columns, results)
    lines += [f"Profile of one ACCEPT evaluation batch: aten::einsum events {on} materialised vs {off} without "
              "materialisation.", ""]  # fmt: skip
    profile_info = {"einsum_events_materialized": on, "einsum_events_not_materialized": off}
    data = {"task": rows.name, "examples": examples, "rows": results, "profile": profile_info}
    return Section({"evaluation": data}, lines)


def case_decoder_evaluation(bench: Bench) -> Section:
    """Decoder-only materialised evaluation (generation + loss) with left padding to L and dynamic padding."""
    decoder = bench.decoder
    rows = next(iter(decoder.rows.values()))
    results = []
    for trainee in decoder.trainees.values():
        fixed = evaluate(trainee, rows, bench, bench.args.max_seq_length)
        dynamic = evaluate(trainee, rows, bench)
        results.append({
            "method": trainee.name, "fixed_examples_per_s": fixed["examples_per_s"],
            "dynamic_examples_per_s": dynamic["examples_per_s"],
            "speedup": dynamic["examples_per_s"] / fixed["examples_per_s"],
            "same_predictions": "yes" if dynamic["predictions_sha1"] == fixed["predictions_sha1"] else "NO",
        })  # fmt: skip
    examples = min(bench.args.eval_examples, len(rows.validation))
    title = f"### Decoder-only evaluation ({rows.name}, {examples} examples, generation + loss, materialised)"
    columns = [("method", "method", 0), ("fixed L examples/s", "fixed_examples_per_s", 1),
               ("dynamic examples/s", "dynamic_examples_per_s", 1), ("speed-up", "speedup", 2),
               ("same predictions", "same_predictions", 0)]  # fmt: skip
    data = {"task": rows.name, "examples": examples, "rows": results}
    return Section({"decoder_evaluation": data}, table(title, columns, results))


def _truncate(row: dict[str, list[int]], length: int) -> dict[str, list[int]]:
    """``row`` cut to ``length`` tokens, its last (EOS) token kept."""
    ids = row["input_ids"]
    if len(ids) <= length:
        return row
    return {"input_ids": ids[: length - 1] + [ids[-1]], "attention_mask": [1] * length, "labels": row["labels"]}


def case_scaling(bench: Bench) -> Section:
    """DePT step time vs m at fixed L, and vs L at m=60 (fixed padding to each L), interleaved."""
    args, rows = bench.args, bench.first
    idx = batch_indices(rows.lengths, args.batch_size, args.warmup + args.scaling_steps, False, args.seed)
    series = []
    for key, values in (("m", args.m_values), ("L", args.l_values)):
        for value in values:
            m, length = (value, args.max_seq_length) if key == "m" else (PROMPT_LENGTH, value)
            trainee = wrap(bench.backbone, f"{key}={value}", {"num_virtual_tokens": m, "r": DEPT_RANK}, length)
            batches = [collate([_truncate(rows.train[i], length) for i in b], length) for b in idx]
            series.append(Series(trainee.name, rows.name, f"fixed L={length}", batches, trainee.step, trainee.params))
    out: dict[str, list[dict[str, Any]]] = {"m": [], "L": []}
    for row in run_interleaved(series, bench):
        key, value = row["method"].split("=")
        out[key].append({key: int(value), **{k: row[k] for k in ("ms_per_step", "tokens_per_s", "peak_memory_mib")}})
    lines = ["### Scaling (DePT r=30, fixed padding)", ""]
    lines += table("", [(f"m (L={args.max_seq_length})", "m", 0), ("ms/step", "ms_per_step", 0)], out["m"])
    lines += table("", [(f"L (m={PROMPT_LENGTH})", "L", 0), ("ms/step", "ms_per_step", 0)], out["L"])
    return Section({"scaling": out}, lines)


SERVING_ADAPTERS, SERVING_ROWS = 8, 4
"""The serving case: this many adapters (the grid's methods in turn, tasks in turn) x rows each."""


def serving_model(bench: Bench, names: list[str]) -> Any:
    """One adapter per name on the shared backbone (the grid's methods in turn), random weights, eval mode."""
    methods = list(bench.methods.values())
    configs = [PromptTuningConfig(max_length=bench.args.max_seq_length, **methods[i % len(methods)])
               for i in range(len(names))]  # fmt: skip
    with library_budget_warnings_off():  # the grid is counted already
        model = get_peft_model(bench.backbone, configs[0])
        for name, config in zip(names[1:], configs[1:], strict=True):
            model.add_adapter(name, config)
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    return model


def case_serving(bench: Bench) -> Section:
    """Many adapters on one frozen model, greedy generation of the task's target length, every adapter
    materialised once, the ways interleaved per round:

    * one mixed batch of all rows (``adapter_names``, one exact call padded to the longest row);
    * the same rows in batches of similar length formed by ``peft/serving.py`` (one call per batch);
    * one call per adapter (``set_adapter``);
    * the limit: the same rows served by one adapter in one call (what a mixed batch can at best match).

    The first three must give identical tokens (checked); the table counts the backbone calls.
    """
    args, tasks = bench.args, bench.args.tasks
    names = ["default"] + [f"adapter{i}" for i in range(1, SERVING_ADAPTERS)]
    model = serving_model(bench, names)
    groups = {}  # adapter -> its rows (tasks in turn, distinct validation rows)
    for i, name in enumerate(names):
        rows = bench.rows[tasks[i % len(tasks)]].validation
        start = (i // len(tasks)) * SERVING_ROWS
        groups[name] = [rows[(start + k) % len(rows)] for k in range(SERVING_ROWS)]
    settings = {"max_new_tokens": max(r.target_length for r in bench.rows.values()), "do_sample": False}
    mixed_rows = [row for rows in groups.values() for row in rows]
    mixed_names = [name for name in names for _ in range(SERVING_ROWS)]
    batch = to_device(collate(mixed_rows, None), bench.device)
    ids, mask = batch["input_ids"], batch["attention_mask"]

    def one_call(adapter_names: list[str] | None) -> list[torch.Tensor]:
        return list(new_tokens(model.generate(input_ids=ids, attention_mask=mask, adapter_names=adapter_names,
                                              **settings), ids, model.family))  # fmt: skip

    def separate() -> list[torch.Tensor]:
        out = []
        for name, rows in groups.items():
            model.set_adapter(name)
            part = to_device(collate(rows, None), bench.device)
            generated = model.generate(input_ids=part["input_ids"], attention_mask=part["attention_mask"], **settings)
            out += list(new_tokens(generated, part["input_ids"], model.family))
        model.set_adapter("default")
        return out

    modes = {  # key -> (label, run)
        "mixed": (f"one mixed batch of {len(mixed_rows)}", lambda: one_call(mixed_names)),
        "grouped": ("mixed, length-grouped batches (peft/serving.py)",
                    lambda: generate_in_batches(model, ids, mask, mixed_names, **settings)),
        "separate": (f"{SERVING_ADAPTERS} separate calls of {SERVING_ROWS}", separate),
        "one_adapter": (f"one adapter, one call of {len(mixed_rows)} (the limit)", lambda: one_call(None)),
    }  # fmt: skip
    seconds: dict[str, list[float]] = {key: [] for key in modes}
    tokens: dict[str, list[torch.Tensor]] = {}
    calls: dict[str, int] = {}
    with eval_mode(model), model.materialized():
        for _ in range(args.warmup + args.steps):
            for key, (_, run) in modes.items():
                with stopwatch(bench.device) as elapsed:
                    tokens[key] = run()
                seconds[key] += elapsed
        for key, (_, run) in modes.items():
            with count_calls([model.base_model.get_encoder()]) as encoder_calls:
                run()
            calls[key] = encoder_calls[0]
    pad_id = model.base_model.config.pad_token_id
    identical = all(_same_tokens(tokens[key], tokens["mixed"], pad_id) for key in ("grouped", "separate"))
    total = len(mixed_rows)
    median = {k: statistics.median(v[args.warmup :]) for k, v in seconds.items()}
    results = [{"mode": label, "calls": calls[k], "ms": 1000 * median[k], "rows_per_s": total / median[k],
                "vs_separate": median["separate"] / median[k]} for k, (label, _) in modes.items()]  # fmt: skip
    title = (f"### Serving ({SERVING_ADAPTERS} adapters x {SERVING_ROWS} rows, {', '.join(tasks)} lengths, "
             f"greedy generation of {settings['max_new_tokens']} tokens)")  # fmt: skip
    columns = [("mode", "mode", 0), ("calls", "calls", 0), ("ms", "ms", 0), ("rows/s", "rows_per_s", 1),
               ("x separate", "vs_separate", 2)]  # fmt: skip
    lines = table(title, columns, results)
    lines += [f"Identical tokens (mixed, grouped, separate): {'yes' if identical else 'NO'}.", ""]
    data = {"rows": results, "identical_tokens": identical, "new_tokens": settings["max_new_tokens"],
            "throughput_ratio": median["separate"] / median["grouped"]}  # fmt: skip
    return Section({"serving": data}, lines)


def _same_tokens(rows: list[torch.Tensor], reference: list[torch.Tensor], pad_id: int) -> bool:
    """Row by row equal, where a row that ended early in a shorter call is padded by a longer one."""
    for row, ref in zip(rows, reference, strict=True):
        k = min(len(row), len(ref))
        longer = row if len(row) > k else ref
        if not torch.equal(row[:k], ref[:k]) or bool((longer[k:] != pad_id).any()):
            return False
    return True


CASES: dict[str, Callable[[Bench], Section]] = {
    "train": case_train,
    "evaluation": case_evaluation,
    "scaling": case_scaling,
    "decoder_train": case_decoder_train,
    "decoder_evaluation": case_decoder_evaluation,
    "serving": case_serving,
}
"""Every case, in report order (``--cases`` selects among them)."""
DEFAULT_CASES = ["train", "evaluation", "scaling"]
"""The T5 cases; the decoder-only and serving ones run when named."""


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Flags; ``--quick`` shrinks sizes and steps. A one-line error for missing data or tokenizer folders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="small", help="backbone widths (default T5-small)")
    parser.add_argument("--num_layers", type=int, default=None, help="override encoder/decoder depth")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=DEFAULT_CASES, help="cases to run")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "rte"])
    parser.add_argument("--data_dir", default=None, help="folder with <task>/train.jsonl (default: synthetic lengths)")
    parser.add_argument("--tokenizer", default=None, help="T5 tokenizer folder (needed with --data_dir)")
    parser.add_argument("--max_rows", type=int, default=20000, help="training rows per task to sample from")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    parser.add_argument("--scaling_steps", type=int, default=3)
    parser.add_argument("--m_values", type=int, nargs="+", help="default 1 20 40 60 80 100 (quick: 1 100)")
    parser.add_argument("--l_values", type=int, nargs="+", help="default 32 64 128 256 (quick: 32 64)")
    parser.add_argument("--eval_examples", type=int, default=64)
    parser.add_argument("--decoder_width", type=int, default=256, help="d of the decoder-only cases' Llama")
    parser.add_argument("--decoder_layers", type=int, default=4)
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps per configuration (smoke run)")
    parser.add_argument("--json", default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", default=None, help="write the Markdown tables here")
    args = parser.parse_args(argv)
    if args.data_dir:
        if not args.tokenizer or not Path(args.tokenizer).is_dir():
            parser.error(f"--data_dir needs --tokenizer with a T5 tokenizer folder (got {args.tokenizer!r})")
        missing = [t for t in args.tasks if not (Path(args.data_dir) / t).is_dir()]
        if missing:
            parser.error(f"--data_dir {args.data_dir} has no folder for {missing}; pass another --data_dir or --tasks")
    if args.quick:
        args.size, args.batch_size, args.max_seq_length = "tiny", 4, 64
        args.steps, args.warmup, args.scaling_steps, args.max_rows, args.eval_examples = 2, 0, 2, 200, 8
        args.decoder_width, args.decoder_layers = 64, 2
    args.m_values = args.m_values or ([1, 100] if args.quick else [1, 20, 40, 60, 80, 100])
    args.l_values = args.l_values or ([32, 64] if args.quick else [32, 64, 128, 256])
    return args


def header(bench: Bench, cases: list[str]) -> dict[str, Any]:
    """The run's configuration and environment (the report's first entries)."""
    import transformers

    args, config = bench.args, bench.backbone.config
    widths = {k: getattr(config, k) for k in ("d_model", "num_layers", "num_heads", "d_ff")}
    return {
        "config": {**widths, "size": args.size, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                   "steps": args.steps, "warmup": args.warmup, "device": str(bench.device),
                   "threads": torch.get_num_threads(), "quick": args.quick, "cases": cases,
                   "methods": bench.methods},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "machine": platform.machine(),
                        "cpu_count": os.cpu_count()},
        "data": {t: r.source for t, r in bench.rows.items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen cases; returns the report (also written to --json / --markdown, tables printed)."""
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
    bench = Bench(args, device, rows, build_backbone(args.size, args.num_layers, device), PeakMemory(device))
    report = header(bench, args.cases)
    cfg = report["config"]
    lines = [f"Backbone: random T5 d={cfg['d_model']}, {cfg['num_layers']}+{cfg['num_layers']} layers, "
             f"{cfg['num_heads']} heads, d_ff {cfg['d_ff']}, vocab {T5_VOCAB}; device {cfg['device']} "
             f"({cfg['threads']} threads); batch {cfg['batch_size']}, L={cfg['max_seq_length']}; "
             f"median of {cfg['steps']} steps after {cfg['warmup']} warm-up, configurations interleaved.",
             "Lengths: " + ", ".join(f"{t} {s}" for t, s in report["data"].items()) + ".", ""]  # fmt: skip
    for name in args.cases:
        section = CASES[name](bench)
        report.update(section.data)
        lines += section.markdown
    report["wall_seconds"] = time.perf_counter() - started
    text = "\n".join(lines).rstrip("\n") + "\n"
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return report


if __name__ == "__main__":
    main()
