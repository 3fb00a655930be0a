"""The output-folder rules never destroy or repeat work.

Moving a run aside keeps every file (generated folder layouts), a folder of runs is never one run's
folder, other files do not block a run, a run stopped before its first checkpoint restarts by itself,
the lock is taken before any look at the folder (two real processes), a finished run on a read-only
folder is "nothing to do", Ctrl-C during tokenisation stops the run, and a write cut off by a file-size
limit leaves nothing that a rerun trusts.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_support import read_json, train_argv

from train import main
from training import run_dir
from training.interrupts import interrupts_kept
from training.run_dir import (
    RunDirError,
    is_run_file,
    prepare_output_dir,
    previous_run_dir,
    refuse_nested_runs,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

RUN_ENTRIES = (
    "run_config.json", "output.log", "all_results.json", "train_results.json", "eval_results.json",
    "predictions_test.jsonl", "adapter_model.safetensors", "trainer_state.json", "tokenizer.json",
    "checkpoint-2/optimizer.pt", "checkpoint-4/adapter_model.safetensors", "runs/events.out",
    ".all_results.json.x1.tmp",
)  # fmt: skip
OTHER_ENTRIES = ("train.out", "notes.txt", "data/rte/train.jsonl", "model/config.json")
NESTED_RUNS = ("seed1/all_results.json", "rte/seed2/run_config.json", "lr0.1/output.log")
EARLIER = {"none": (), "folder": (".run.previous/",), "file": (".run.previous",),
           "two folders": (".run.previous/", ".run.previous.2/")}  # fmt: skip


def files_below(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file below ``folder`` (lock file aside)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != run_dir.LOCK_NAME
    }


def lay_out(root: Path, entries: list[str], earlier: tuple[str, ...]) -> Path:
    out = root / "run"
    out.mkdir()
    for entry in entries:
        (out / entry).parent.mkdir(parents=True, exist_ok=True)
        (out / entry).write_text(f"content of {entry}")
    for name in earlier:
        if name.endswith("/"):
            (root / name / "kept.txt").parent.mkdir(parents=True)
            (root / name / "kept.txt").write_text(f"earlier run {name}")
        else:
            (root / name).write_text("a plain file")
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.sampled_from(RUN_ENTRIES + OTHER_ENTRIES + NESTED_RUNS), unique=True, max_size=10),
    earlier=st.sampled_from(sorted(EARLIER)),
    overwrite=st.booleans(),
    times=st.integers(min_value=1, max_value=3),
)
def test_moving_a_run_aside_keeps_every_file(entries, earlier, overwrite, times):
    """Generated folders: a run's files (top level), other files, runs in subfolders, earlier .previous
    folders or a plain file of that name. Whatever is done, repeatedly: no file is lost or changed, only a
    run's files move, into a new numbered folder, and a folder of runs is refused untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = lay_out(root, entries, EARLIER[earlier])
        before = files_below(root)
        for _ in range(times):
            try:
                refuse_nested_runs(out)
            except RunDirError as exc:
                assert any(entry in NESTED_RUNS for entry in entries)
                assert "holds other runs in its subfolders" in str(exc)
                assert files_below(root) == before
                return
            prepare_output_dir(out, overwrite=overwrite, starts_training=True, inputs={})
        assert not any(entry in NESTED_RUNS for entry in entries)
        after = files_below(root)
        moved = {k: v for k, v in after.items() if not k.startswith("run/")}
        assert sorted(after.values()) == sorted(before.values())  # nothing lost, nothing changed
        stays = {entry: f"run/{entry}" in after for entry in entries}
        ours = [entry for entry in entries if is_run_file(entry.split("/")[0])]
        assert all(stays[entry] for entry in entries if entry not in ours)  # other files never move
        if overwrite:
            assert not any(stays[entry] for entry in ours)
        else:  # moved together (nothing to keep) or not at all
            assert len({stays[entry] for entry in ours}) <= 1
        for name in EARLIER[earlier]:  # earlier ones untouched
            key = f"{name}kept.txt" if name.endswith("/") else name
            assert after[key] == before[key]
        if overwrite and any(is_run_file(e.split("/")[0]) for e in entries):
            new = [k for k in moved if k not in before]
            assert new and all(k.startswith(".run.previous") for k in new)


def test_previous_names_are_numbered_and_never_reused(tmp_path):
    out = tmp_path / "run"
    assert previous_run_dir(out) == tmp_path / ".run.previous"
    (tmp_path / ".run.previous").write_text("a plain file")  # used to end in a traceback
    assert previous_run_dir(out) == tmp_path / ".run.previous.2"
    (tmp_path / ".run.previous.2").mkdir()
    assert previous_run_dir(out) == tmp_path / ".run.previous.3"


@pytest.mark.parametrize("flag", ["--model_name_or_path", "--peft_model_id"])
def test_a_runs_own_inputs_are_never_moved_aside(flag, tmp_path):
    """A model saved into --output_dir itself (a baseline continued), or a checkpoint of the run being
    replaced, would be moved before it loads: refused, nothing moved."""
    out = lay_out(tmp_path, ["config.json", "model.safetensors", "output.log", "checkpoint-2/adapter_model.safetensors"], ())
    source = out if flag == "--model_name_or_path" else out / "checkpoint-2"
    before = files_below(tmp_path)
    with pytest.raises(RunDirError, match=f"would move {flag} {source} aside"):
        prepare_output_dir(out, overwrite=True, starts_training=True, inputs={flag: str(source)})
    assert files_below(tmp_path) == before


def test_runs_are_found_at_any_depth_of_a_sweep_root(tmp_path):
    """TensorBoard's folder name is no exception: `--output_dir .` above runs/rte/seed1 is a sweep root."""
    out = lay_out(tmp_path, ["runs/rte/seed1/all_results.json", "checkpoint-2/output.log", "notes.txt"], ())
    with pytest.raises(RunDirError, match=r"holds other runs in its subfolders \(runs/rte/seed1\)"):
        refuse_nested_runs(out)
    shutil.rmtree(out / "runs")
    refuse_nested_runs(out)  # a checkpoint is part of the run, not a run


def test_overwrite_on_a_folder_of_runs_is_refused_twice_and_loses_nothing(small_t5_dir, rte_data, tmp_path, capsys):
    """--overwrite_output_dir on a sweep root moved every run into .<root>.previous; the second time deleted
    them all. A run into a sweep root, with or without the flag, is refused before anything is written."""
    root = tmp_path / "sweep"
    for name in ("rte-seed1", "rte-seed2"):
        (root / name).mkdir(parents=True)
        (root / name / "all_results.json").write_text('{"eval_accuracy": 70.0}')
    before = files_below(tmp_path)
    for extra in ([], ["--overwrite_output_dir"], ["--overwrite_output_dir"]):
        capsys.readouterr()
        assert main([*train_argv(small_t5_dir, rte_data, root, "--max_steps", "2"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds other runs in its subfolders (rte-seed1, rte-seed2)" in err[0], err
        assert files_below(tmp_path) == before


@pytest.mark.slow
def test_a_finished_run_on_a_read_only_folder_is_nothing_to_do(small_t5_dir, rte_data, tmp_path, capsys, monkeypatch):
    """In-process: the lock file cannot be created (EROFS, as on an archive mount; permission bits do not
    stop root, so the lock's open is made to fail). Finished: exit 0; not finished: one line, exit 2."""
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2")
    assert main(argv) == 0
    before = files_below(out)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(out / run_dir.LOCK_NAME))

    monkeypatch.setattr(run_dir.FileLock, "acquire", read_only)
    capsys.readouterr()
    assert main(argv) == 0
    assert "holds a finished run" in capsys.readouterr().out
    assert files_below(out) == before
    assert main([*argv, "--overwrite_output_dir"]) == 2  # starting over needs a writable folder
    other = train_argv(small_t5_dir, rte_data, tmp_path / "unfinished", "--max_steps", "2")
    capsys.readouterr()
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--output_dir {tmp_path / 'unfinished'} is read-only" in err[0], err
    assert not (tmp_path / "unfinished").exists()  # a refused start leaves no folder behind


def can_mount_read_only(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", f"mount --bind -o ro {probe} {probe} && ! touch {probe}/x"],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.mark.slow
def test_a_finished_run_on_a_read_only_mount_is_nothing_to_do(small_t5_dir, rte_data, tmp_path):
    """A real read-only bind mount (an unprivileged user+mount namespace), where the system allows one."""
    if not can_mount_read_only(tmp_path):
        pytest.skip("no unprivileged read-only bind mount here (unshare -r -m)")
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2")
    assert main(argv) == 0
    before = files_below(out)
    command = " ".join(
        [f"mount --bind -o ro {out} {out} &&", sys.executable, str(REPO_ROOT / "train.py"), *argv]
    )
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", command], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "holds a finished run" in done.stdout
    assert files_below(out) == before


KILL_DURING_TRAINING = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train
step = train.PromptTrainer.training_step
def killed_step(self, *args, **kwargs):
    if self.state.global_step == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # before the first checkpoint (--save_steps 2)
    return step(self, *args, **kwargs)
train.PromptTrainer.training_step = killed_step
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_restarts_by_itself(small_t5_dir, rte_data, tmp_path):
    """Chaos: kill -9 before any checkpoint, with the console redirected into the output folder (mkdir -p
    $OUT; train.py > $OUT/train.out): the same command then starts over without --overwrite_output_dir,
    keeps train.out, and moves the killed run's files aside with one line saying so."""
    out = tmp_path / "run"
    out.mkdir()
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "4", "--save_steps", "2", "--do_eval")
    script = KILL_DURING_TRAINING.format(repo=str(REPO_ROOT))
    with (out / "train.out").open("w") as console:
        done = subprocess.run([sys.executable, "-c", script, *argv], stdout=console, stderr=console, env=ENV)
    assert done.returncode == -signal.SIGKILL
    assert (out / "output.log").is_file() and not list(out.glob("checkpoint-*"))
    with (out / "train.out").open("a") as console:
        done = subprocess.run(
            [sys.executable, "train.py", *argv], cwd=REPO_ROOT, stdout=console, stderr=subprocess.PIPE,
            text=True, env=ENV,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    moved = [line for line in done.stderr.splitlines() if "starting over" in line]
    assert len(moved) == 1 and "no complete checkpoint and no results" in moved[0], done.stderr
    assert read_json(out / "trainer_state.json")["global_step"] == 4
    assert (out / "train.out").read_text().count("results in") == 1
    previous = tmp_path / ".run.previous"
    assert (previous / "output.log").is_file() and not (previous / "train.out").exists()


WAIT_IN_DATA_LOADING = """
import os, sys, time
sys.path.insert(0, {repo!r})
import train
load_data = train.load_data
def waiting_load_data(*args, **kwargs):
    open({waiting!r}, "w").close()
    deadline = time.time() + 120
    while not os.path.exists({release!r}) and time.time() < deadline:
        time.sleep(0.1)
    return load_data(*args, **kwargs)
train.load_data = waiting_load_data
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_lock_is_taken_before_the_folder_is_looked_at(small_t5_dir, rte_data, tmp_path):
    """Two real processes, the first paused while loading data before its folder existed: the second is
    refused at once (75) instead of training; after the first finishes the second finds nothing to do.
    (The lock used to be taken after the data loaded: both trained the whole run.)"""
    out = tmp_path / "run"
    waiting, release = tmp_path / "waiting", tmp_path / "release"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--save_steps", "2")
    script = WAIT_IN_DATA_LOADING.format(repo=str(REPO_ROOT), waiting=str(waiting), release=str(release))
    first = subprocess.Popen([sys.executable, "-c", script, *argv], env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not waiting.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, first.stdout.read()[-2000:]
        second = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, capture_output=True,
                                text=True, env=ENV, timeout=300)  # fmt: skip
        assert second.returncode == 75, second.stderr[-2000:]
        assert "in use by another running train.py" in second.stderr
    finally:
        release.touch()
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output[-2000:]
    again = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                           env=ENV, timeout=300)  # fmt: skip
    assert again.returncode == 0 and "holds a finished run" in again.stdout, again.stderr[-2000:]
    assert (out / "output.log").read_text().count("trained 2 steps") == 1


SLOW_FINGERPRINT = """
import os, sys, time
sys.path.insert(0, {repo!r})
import datasets.fingerprint
import train
tokenize_splits = train.tokenize_splits
def tokenizing(*args, **kwargs):
    datasets.fingerprint.tokenizing = True
    return tokenize_splits(*args, **kwargs)
train.tokenize_splits = tokenizing
update = datasets.fingerprint.Hasher.update
def slow_update(self, value):
    if callable(value) and getattr(datasets.fingerprint, "tokenizing", False) and not os.path.exists({hashing!r}):
        open({hashing!r}, "w").close()  # hashing the map function: inside the library's bare try/except
        time.sleep(20)
    return update(self, value)
datasets.fingerprint.Hasher.update = slow_update
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_ctrl_c_during_tokenisation_stops_the_run(small_t5_dir, rte_data, tmp_path):
    """The datasets library's fingerprinting swallowed the KeyboardInterrupt (a bare except) and the run
    trained to the end."""
    out = tmp_path / "run"
    hashing = tmp_path / "hashing"
    argv = train_argv(small_t5_dir, rte_data, out, "--max_steps", "2", "--overwrite_cache", "True")
    script = SLOW_FINGERPRINT.format(repo=str(REPO_ROOT), hashing=str(hashing))
    process = subprocess.Popen([sys.executable, "-c", script, *argv], env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not hashing.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    assert len([line for line in stderr.splitlines() if "interrupted" in line]) == 1, stderr
    assert not (out / "trainer_state.json").exists() and not list(out.glob("checkpoint-*"))


def test_a_ctrl_c_that_a_library_swallows_is_raised_when_the_block_ends():
    """In-process: a bare ``except:`` (as in the datasets library's fingerprinting) catches the interrupt;
    the block still ends in KeyboardInterrupt. Outside the block Ctrl-C is Python's own again."""
    reached_the_end = []
    with pytest.raises(KeyboardInterrupt), interrupts_kept():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except:  # noqa: E722 - what the library does
            pass
        reached_the_end.append(True)
    assert reached_the_end == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with interrupts_kept():  # no interrupt: nothing raised
        pass


KILL_AT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import train
import training.trainer
phase = {phase!r}

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

def killing(owner, name, when=lambda *args, **kwargs: True, after=False):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if not after and when(*args, **kwargs):
            kill()
        result = original(*args, **kwargs)
        if after and when(*args, **kwargs):
            kill()
        return result
    setattr(owner, name, wrapper)

if phase == "data loading":
    killing(train, "load_data")
elif phase == "tokenisation":
    killing(train, "tokenize_splits")
elif phase == "a training step":
    killing(train.PromptTrainer, "training_step", lambda self, *a, **k: self.state.global_step == 3)
elif phase == "a checkpoint's manifest":
    killing(training.trainer, "write_manifest", lambda folder: str(folder).endswith("checkpoint-4"))
elif phase == "the final adapter":
    killing(train.PromptTrainer, "save_model", lambda self, output_dir=None, **k: output_dir is None, after=True)
elif phase == "the final evaluation":
    killing(train.PromptTrainer, "predict_split")
elif phase == "all_results.json":
    killing(train, "write_all_results")
sys.exit(train.main(sys.argv[1:]))
"""
PHASES = ("data loading", "tokenisation", "a training step", "a checkpoint's manifest", "the final adapter",
          "the final evaluation", "all_results.json")  # fmt: skip


@pytest.fixture(scope="module")
def straight_run(small_t5_dir, rte_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    argv = train_argv(small_t5_dir, rte_data, out, *CHAOS_FLAGS)
    # a process of its own, with the killed runs' thread count: the adapter bytes are compared
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return out


CHAOS_FLAGS = ("--max_steps", "6", "--save_steps", "2", "--do_eval")


@pytest.mark.slow
@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_in_any_phase_then_the_same_command_finishes_the_same_run(
    phase, straight_run, small_t5_dir, rte_data, tmp_path
):
    """Chaos, one kill -9 per phase: the same command (no --overwrite_output_dir) always ends with the
    uninterrupted run's numbers and keys, and repeats no finished work."""
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, *CHAOS_FLAGS)
    script = KILL_AT.format(repo=str(REPO_ROOT), phase=phase)
    killed = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=ENV)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                           env=ENV)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    expected, results = read_json(straight_run / "all_results.json"), read_json(out / "all_results.json")
    assert results.keys() == expected.keys()
    for key in ("eval_loss", "eval_accuracy", "epoch", "trainable_params"):
        assert results[key] == expected[key], key
    assert results["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-6)
    assert (out / "adapter_model.safetensors").read_bytes() == (
        straight_run / "adapter_model.safetensors"
    ).read_bytes()
    assert read_json(out / "trainer_state.json")["global_step"] == 6
    assert "Traceback" not in again.stderr


def limit_file_size(limit: int):
    """preexec_fn: files larger than ``limit`` bytes cannot be written; write() fails with EFBIG instead
    of the process being killed by SIGXFSZ."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("limit", [6_000, 10_000])
def test_a_write_cut_off_by_a_file_size_limit_leaves_nothing_trusted(limit, small_t5_dir, rte_data, tmp_path):
    """EFBIG while writing run_config.json (6 kB, atomic) or the first checkpoint's RNG state (14 kB): no
    half-written file is trusted, and the same command without the limit ends with the uninterrupted run's
    numbers."""
    flags = ("--max_steps", "4", "--save_steps", "2", "--do_eval")
    straight = tmp_path / "straight"
    assert main(train_argv(small_t5_dir, rte_data, straight, *flags)) == 0
    out = tmp_path / "run"
    argv = train_argv(small_t5_dir, rte_data, out, *flags)
    done = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=ENV, preexec_fn=limit_file_size(limit))  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]  # torch words EFBIG its own way; the one line is train.py's
    big = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size >= limit and p.name != "output.log"]
    assert all(run_dir.checkpoint_problem(p.parent) is not None for p in big), big  # cut off, not trusted
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*_results.json"))
    assert run_dir.last_complete_checkpoint(out) is None
    assert main(argv) == 0
    expected = read_json(straight / "all_results.json")
    results = read_json(out / "all_results.json")
    assert results.keys() == expected.keys()
    for key in ("train_loss", "eval_loss", "eval_accuracy", "epoch"):
        assert results[key] == expected[key], key
