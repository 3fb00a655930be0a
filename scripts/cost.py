"""Wall-clock and GPU-hour estimates of each paper table under the papers' schedule (docs/cost.md).

For every task of a table: the tokenised lengths of its real rows (``--data_dir``, T5 tokenizer at
``--tokenizer``; the seq2seq layout for T5, the decoder-only layout for Llama), the epoch-mean padded
batch length with padding to L, with dynamic padding over random batches and over length-grouped
batches (the Trainer's sampler), and from those a FLOP count per training step and per evaluation pass
(``row_flops``). Time = FLOPs / (peak x ``--utilisation``) + a fixed overhead per step and a latency
per generated token; every assumption is a flag and is printed with the table. With ``--benchmark``
(the JSON of ``scripts/benchmark.py``) the measured fixed/dynamic step-time ratios are shown next to
the FLOP model's and, for the measured tasks, also applied to the FLOP model's fixed-padding time.

    python scripts/cost.py --data_dir DATA --tokenizer T5_TOKENIZER --markdown cost_tables.md
    python scripts/cost.py --data_dir DATA --tokenizer T5_TOKENIZER --benchmark bench.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """A transformer's widths; ``encoder_layers`` = 0 for decoder-only; ``ffn`` = FFN matrices (2 ReLU, 3 SwiGLU)."""

    d: int
    d_ff: int
    vocab: int
    encoder_layers: int
    decoder_layers: int
    ffn: int

    def layer(self, cross: bool = False) -> int:
        """Weights one token meets in one layer: q, k, v, o (+ cross-attention) and the FFN."""
        return (8 if cross else 4) * self.d * self.d + self.ffn * self.d * self.d_ff


T5_BASE = Shape(768, 3072, 32128, 12, 12, 2)
LLAMA2_7B = Shape(4096, 11008, 32000, 0, 32, 3)


def row_flops(shape: Shape, s: float, t: int) -> float:
    """Forward FLOPs of one row: s = m + n input positions (prompt + padded input), t target tokens.

    Matmuls 2 FLOPs per weight per token, attention 4 s^2 d per layer (scores and weighted sum, full
    square); encoder-decoder: encoder over s, decoder over t with cross-attention to s, LM head over t;
    decoder-only: all layers and the LM head over s (the labels are inside the s positions).
    """
    if shape.encoder_layers == 0:
        return shape.decoder_layers * (2 * s * shape.layer() + 4 * s * s * shape.d) + 2 * s * shape.d * shape.vocab
    encoder = shape.encoder_layers * (2 * s * shape.layer() + 4 * s * s * shape.d)
    decoder = shape.decoder_layers * (2 * t * shape.layer(cross=True) + 4 * t * (t + s) * shape.d)
    return encoder + decoder + 2 * t * shape.d * shape.vocab


@dataclass(frozen=True)
class Table:
    """One paper table as ``examples/run_*.sh`` runs it (``runs``: runs per task = the script's grid)."""

    name: str
    shape: Shape
    tasks: dict[str, int]  # task -> optimizer steps
    batch: int
    accumulation: int
    max_len: int
    runs: int
    eval_steps: int
    peak_flops: str  # key of the --peak_* flag: "fp32" (T5: no fp16) or "bf16"


GLUE_STEPS = {t: 300_000 if t in ("mnli", "qqp", "qnli") else 30_000
              for t in "cola sst2 mrpc qqp stsb mnli qnli rte".split()}  # fmt: skip
SUPERGLUE = "superglue-multirc superglue-boolq superglue-wic superglue-wsc.fixed superglue-cb".split()
TABLES = [
    Table("GLUE (T5-base)", T5_BASE, GLUE_STEPS, 32, 1, 256, 12, 1000, "fp32"),
    Table("SuperGLUE (T5-base)", T5_BASE, dict.fromkeys(SUPERGLUE, 30_000), 32, 1, 256, 12, 1000, "fp32"),
    Table("MRQA (T5-base)", T5_BASE, dict.fromkeys(["newsqa", "hotpotqa", "searchqa", "nq"], 300_000), 16, 2, 512, 12,
          1000, "fp32"),
    Table("few-shot source: MNLI transfer (T5-base)", T5_BASE, {"mnli": 300_000}, 32, 1, 256, 1, 1000, "fp32"),
    Table("few-shot k = 4/16/32 (T5-base)", T5_BASE, dict.fromkeys(["superglue-boolq", "superglue-cb", "scitail"], 1000),
          32, 1, 256, 9, 100, "fp32"),
    Table("Llama-2-7B", LLAMA2_7B, dict.fromkeys(["sst2", "rte", "mrpc"], 30_000), 4, 8, 256, 2, 1000, "bf16"),
]  # fmt: skip
"""Steps, batch x accumulation, L, grid size (learning rates x added learning rates x seeds) and evaluation
interval from examples/run_glue.sh, run_superglue.sh, run_mrqa.sh, run_transfer.sh, run_fewshot.sh
(3 k x 3 seeds), run_llama.sh and examples/paper_schedule.sh."""

HF_VALIDATION_ROWS = {
    "cola": 1043, "sst2": 872, "mrpc": 408, "qqp": 40430, "stsb": 1500, "mnli": 9832, "qnli": 5463, "rte": 277,
    "superglue-multirc": 4848, "superglue-boolq": 3270, "superglue-wic": 638, "superglue-wsc.fixed": 104,
    "superglue-cb": 56, "newsqa": 4212, "hotpotqa": 5901, "searchqa": 16980, "nq": 12836, "scitail": 1304,
}  # fmt: skip
"""Rows of the HF split the evaluation splits come from (mnli: validation_mismatched)."""


def eval_rows(task: str) -> tuple[int, int]:
    """(validation, test) rows after the split rule (data/loading.py): small halves the HF validation split,
    large holds out 1,000 training rows and tests on the HF validation split."""
    from data.tasks import get_task

    n = HF_VALIDATION_ROWS[task]
    rule = get_task(task).split_rule
    return (n // 2, n - n // 2) if rule == "small" else (1000, n) if rule == "large" else (n, n)


def lengths(task: str, table: Table, args: argparse.Namespace, tokenizer, target: int) -> tuple[list, list] | None:
    """(training-row, evaluation-row) lengths of up to ``--max_rows`` real rows of the largest local split,
    tokenised for the table's model; None when there is no local data."""
    from data.loading import load_task_splits
    from data.preprocess import tokenize_splits

    best = None
    for split in ("train", "test"):
        try:
            rows = load_task_splits(task, args.data_dir, splits=(split,), max_train_samples=args.max_rows,
                                    max_predict_samples=args.max_rows)[split]  # fmt: skip
        except (FileNotFoundError, ValueError):
            continue
        best = rows if best is None or len(rows) > len(best) else best
    if best is None or len(best) < 2 * table.batch:
        return None
    import datasets

    from peft.family import CAUSAL, SEQ2SEQ  # torch: only for the tables, not for run_hours

    family = SEQ2SEQ if table.shape.encoder_layers else CAUSAL
    both = datasets.DatasetDict({"train": best, "validation": best})
    out = tokenize_splits(both, tokenizer, family, table.max_len, target, pad_to_max_length=False)
    return [len(r) for r in out["train"]["input_ids"]], [len(r) for r in out["validation"]["input_ids"]]


def task_cost(table: Table, task: str, args: argparse.Namespace, tokenizer) -> dict:
    """Training and evaluation hours of one run of ``task``, fixed / dynamic / dynamic + grouped."""
    from scripts.benchmark import epoch_mean_batch_length  # torch: only for the tables, not for run_hours
    steps, m, B = table.tasks[task], args.prompt_length, table.batch
    rate = getattr(args, f"peak_{table.peak_flops}") * 1e12 * args.utilisation
    from data.preprocess import max_target_length

    t = max_target_length(task, tokenizer)
    sample = lengths(task, table, args, tokenizer, t)
    train_len, eval_len = sample or ([table.max_len] * 2 * B, [table.max_len] * 2 * B)
    means = {"fixed": float(table.max_len), "dynamic": epoch_mean_batch_length(train_len, B, False, 0),
             "dynamic+grouped": epoch_mean_batch_length(train_len, B, True, 0)}  # fmt: skip
    eval_dynamic = epoch_mean_batch_length(eval_len, B, False, 0)  # evaluation keeps dataset order
    val, test = eval_rows(task)
    passes = steps // table.eval_steps * val + val + test  # periodic evaluations, final validation, test
    overhead = args.llama_step_overhead if table.peak_flops == "bf16" else args.t5_step_overhead
    latency = args.llama_token_latency if table.peak_flops == "bf16" else args.t5_token_latency
    out = {"task": task, "steps": steps, "data": "real" if sample else "none (all rows at L)", "target": t}
    for padding, n in means.items():
        n_eval = table.max_len if padding == "fixed" else eval_dynamic
        train_s = steps * table.accumulation * (2 * B * row_flops(table.shape, m + n, t) / rate + overhead)
        eval_s = eval_seconds(table.shape, passes, m + n_eval, t, B, rate, latency)
        out[padding] = {"batch_length": n, "train_h": train_s / 3600, "eval_h": eval_s / 3600}
    return out


def eval_seconds(shape: Shape, rows: int, s: float, t: int, batch: int, rate: float, latency: float) -> float:
    """Seconds to evaluate ``rows`` rows of s input positions: prefill and loss forwards, t decoding steps
    (FLOPs at ``rate`` FLOP/s) plus ``latency`` per generated token and batch."""
    flops = rows * (2 * row_flops(shape, s, t) + t * row_flops(shape, 1, 1))
    return flops / rate + rows / batch * t * latency


def model_shape(model: str) -> Shape:
    """Widths of ``--model_name_or_path``: a local folder's config.json (T5 or decoder-only keys), else
    Llama-2-7B for a name containing "llama" and T5-base for any other name."""
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        return LLAMA2_7B if "llama" in model.lower() else T5_BASE
    c = json.loads(config_file.read_text(encoding="utf-8"))
    if "d_model" in c:
        gated = "gated" in c.get("feed_forward_proj", "")
        return Shape(c["d_model"], c["d_ff"], c["vocab_size"], c["num_layers"],
                     c.get("num_decoder_layers") or c["num_layers"], 3 if gated else 2)  # fmt: skip
    return Shape(c["hidden_size"], c["intermediate_size"], c["vocab_size"], 0, c["num_hidden_layers"],
                 3 if c.get("model_type") in ("llama", "mistral", "qwen2") else 2)  # fmt: skip


def run_hours(flags: Mapping[str, Any], args: argparse.Namespace | None = None) -> float:
    """GPU-hours of one ``train.py`` run from its flags (``{"max_steps": "30000", ...}``), every row padded to
    ``--max_seq_length``: the fixed-L figure of docs/cost.md, an upper bound, without data or tokenizer.
    The target length is ``--generation_max_length`` (default 3, a T5 label); ``args``: the device
    assumptions (default: this script's defaults)."""
    args = args or parse_args(["--data_dir", "", "--tokenizer", ""])

    def number(key: str, default: float) -> float:
        value = flags.get(key)
        return default if value in (None, True) else float(value)

    shape = model_shape(str(flags.get("model_name_or_path", "t5-base")))
    bf16 = str(flags.get("bf16", False)) == "True"
    rate = (args.peak_bf16 if bf16 else args.peak_fp32) * 1e12 * args.utilisation
    overhead, latency = ((args.llama_step_overhead, args.llama_token_latency) if shape.encoder_layers == 0
                         else (args.t5_step_overhead, args.t5_token_latency))  # fmt: skip
    steps, batch = number("max_steps", 1000), number("per_device_train_batch_size", 8)
    s, t = number("max_seq_length", 256) + number("prefix_length", 100), int(number("generation_max_length", 3))
    train_s = steps * number("gradient_accumulation_steps", 1) * (2 * batch * row_flops(shape, s, t) / rate + overhead)
    try:
        val, test = eval_rows(str(flags.get("task_name")))
    except KeyError:  # a task without a known validation size
        val = test = 1000
    val, test = min(val, number("max_eval_samples", val)), min(test, number("max_predict_samples", test))
    periodic = steps // number("eval_steps", steps) if flags.get("eval_strategy") == "steps" else 0
    rows = (periodic + 1) * val * ("do_eval" in flags) + test * ("do_predict" in flags)
    return (train_s + eval_seconds(shape, int(rows), s, t, int(number("per_device_eval_batch_size", 8)), rate, latency)) / 3600


def measured_ratios(paths: list[str]) -> dict[tuple[str, str, str], float]:
    """(backbone, task, padding) -> measured fixed / dynamic step time of ACCEPT from benchmark JSONs."""
    out = {}
    for path, (key, backbone) in itertools.product(paths, (("ratios", "T5"), ("decoder_ratios", "Llama"))):
        for row in json.loads(Path(path).read_text()).get(key, []):
            if row["method"] == "ACCEPT" and ": fixed L / " in row["ratio"]:
                task, padding = row["ratio"].split(": fixed L / ")
                out[(backbone, task, padding.removesuffix(" step"))] = row["value"]
    return out


def render(results: list[tuple[Table, list[dict]]], ratios: dict, args: argparse.Namespace) -> str:
    """Markdown: one table per paper table (per run and the script's whole grid), then the assumptions."""
    lines, summary = [], []
    for table, rows in results:
        backbone = "Llama" if table.peak_flops == "bf16" else "T5"
        lines += [f"### {table.name}", "", f"L = {table.max_len}, batch {table.batch} x {table.accumulation}, "
                  f"{table.runs} runs per task, evaluation every {table.eval_steps} steps.", "",
                  "| task | steps | data | batch length fixed / random / grouped | hours per run fixed | random | grouped "
                  "| measured ACCEPT ratio random / grouped |", "|---|---:|---|---|---:|---:|---:|---|"]  # fmt: skip
        total = dict.fromkeys(("fixed", "dynamic", "dynamic+grouped"), 0.0)
        for r in rows:
            hours = {p: r[p]["train_h"] + r[p]["eval_h"] for p in total}
            for p in total:
                total[p] += hours[p] * table.runs
            dynamic = ("dynamic", "dynamic+grouped")
            measured = [ratios.get((backbone, r["task"], p)) for p in dynamic]
            cell = "not measured"
            if all(measured):  # the measured step-time ratio applied to the fixed-padding training time
                applied = [r["fixed"]["train_h"] / x + r[p]["eval_h"] for x, p in zip(measured, dynamic, strict=True)]
                cell = " / ".join(f"{x:.2f}x: {h:.1f} h" for x, h in zip(measured, applied, strict=True))
            lengths_cell = " / ".join(f"{r[p]['batch_length']:.0f}" for p in total)
            lines.append(f"| {r['task']} | {r['steps']:,} | {r['data']} | {lengths_cell} | {hours['fixed']:.1f} | "
                         f"{hours['dynamic']:.1f} | {hours['dynamic+grouped']:.1f} | {cell} |")  # fmt: skip
        runs = table.runs * len(rows)
        summary.append(f"| {table.name} | {runs} | {total['fixed']:,.0f} | {total['dynamic']:,.0f} | "
                       f"{total['dynamic+grouped']:,.0f} | {total['fixed'] / total['dynamic+grouped']:.1f}x |")  # fmt: skip
        lines += [""]
    head = ["| table | runs | GPU-hours fixed L | dynamic, random batches | dynamic, length-grouped | saving |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines = head + summary + [""] + lines
    assumptions = {k: v for k, v in vars(args).items() if k not in ("markdown", "json", "data_dir", "tokenizer")}
    return "\n".join(lines + ["Assumptions: " + ", ".join(f"{k} {v}" for k, v in assumptions.items()), ""])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="folder with <task>/<split>.jsonl")
    parser.add_argument("--tokenizer", required=True, help="T5 tokenizer folder")
    parser.add_argument("--max_rows", type=int, default=5000, help="rows per task for the length distribution")
    parser.add_argument("--prompt_length", type=int, default=60, help="m of the ACCEPT runs")
    parser.add_argument("--peak_fp32", type=float, default=19.5, help="TFLOP/s, fp32 without TF32 (A100)")
    parser.add_argument("--peak_bf16", type=float, default=312.0, help="TFLOP/s, bf16 dense (A100)")
    parser.add_argument("--utilisation", type=float, default=0.4, help="share of the peak reached by matmuls")
    parser.add_argument("--t5_step_overhead", type=float, default=0.03, help="s per micro-step (kernel launches)")
    parser.add_argument("--llama_step_overhead", type=float, default=0.05)
    parser.add_argument("--t5_token_latency", type=float, default=0.012, help="s per generated token and batch")
    parser.add_argument("--llama_token_latency", type=float, default=0.03)
    parser.add_argument("--benchmark", nargs="+", default=[], help="JSONs of scripts/benchmark.py (measured ratios)")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--json", default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Compute every table; returns the Markdown (also written to --markdown, JSON to --json)."""
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    results = [(table, [task_cost(table, task, args, tokenizer) for task in table.tasks]) for table in TABLES]
    ratios = measured_ratios(args.benchmark)
    text = render(results, ratios, args)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    if args.json:
        data = {table.name: rows for table, rows in results}
        Path(args.json).write_text(json.dumps(data, indent=2, default=float) + "\n", encoding="utf-8")
    sys.stdout.write(text)
    return text


if __name__ == "__main__":
    main()
