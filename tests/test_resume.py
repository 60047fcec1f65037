"""Kill real runs (SIGKILL, SIGTERM, Ctrl-C) at an arbitrary step, resume them, and get what an uninterrupted run
gets: the same metrics.json to the bit, the same TensorBoard scalars, every step once."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import completed_run, mpl_run
from test_cifar10_data import write_fake_cifar10

TIMING = {"train_seconds", "wall_seconds"}
TWO_MOONS = [
    "trainer.steps=600", "trainer.eval_interval=200", "trainer.log_interval=20", "trainer.checkpoint_interval=20",
    "trainer.progress=false", "device=cpu",
]


def stable(run_dir: Path) -> dict:
    """metrics.json without the timings and the command line (the resumed one names trainer.resume)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING and k != "provenance/command"}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard shows for the run (timings aside), as TensorBoard reads it: files in order, with
    what a resumed attempt purged left out."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
            if not tag.startswith("perf/") and tag.rpartition("/")[2] not in TIMING}  # (zz_final/train_seconds)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mpl_runner", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def interrupt(proc: subprocess.Popen, run_dir: Path, signum: int) -> tuple[int, str]:
    """Send ``signum`` at an arbitrary step after the first checkpoint; returns (exit status, stderr)."""
    checkpoint = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(random.uniform(0.0, 0.3))
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < step < int(next(a for a in proc.args if a.startswith("trainer.steps=")).split("=")[1]), step
    return proc.returncode, stderr


def assert_same_run(resumed: Path, baseline: Path) -> None:
    assert stable(resumed)["status"] == "completed"
    assert stable(resumed) == stable(baseline)
    got, expected = scalars(resumed), scalars(baseline)
    assert got.keys() == expected.keys()
    for tag in expected:
        assert got[tag] == expected[tag], tag  # same steps, each once, same values


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """Two moons, uninterrupted."""
    return completed_run(tmp_path_factory.mktemp("baseline"), *TWO_MOONS)


def test_sigkill_then_trainer_resume_gives_the_same_run(tmp_path, baseline):
    run_dir = tmp_path / "run"
    status, _ = interrupt(start([*TWO_MOONS, f"hydra.run.dir={run_dir}"], tmp_path), run_dir, signal.SIGKILL)
    assert status == -signal.SIGKILL and not (run_dir / "metrics.json").exists()
    result = mpl_run(*TWO_MOONS, f"trainer.resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_same_run(run_dir, baseline)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 2  # appended to the same TensorBoard run
    assert (run_dir / ".hydra" / "config.yaml").exists() and list((run_dir / ".hydra").glob("resumed_*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "Ctrl-C"])  # (Ctrl-C takes the same path; slow: the suite's 10 minutes)
def test_signal_saves_and_says_how_to_resume(tmp_path, baseline, signum):
    run_dir = tmp_path / "run"
    status, stderr = interrupt(start([*TWO_MOONS, f"hydra.run.dir={run_dir}"], tmp_path), run_dir, signum)
    assert status == 128 + signum and "Traceback" not in stderr
    message = stderr.strip().splitlines()[-1]
    assert message.startswith(f"mpl-run: stopped by {signal.Signals(signum).name} after step ")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and f"after step {record['checkpoint_step']};" in message
    command = shlex.split(message.split("Resume with: ")[1])
    assert command[0] == "mpl-run" and command[-1] == f"trainer.resume={run_dir}"
    result = subprocess.run([sys.executable, "-m", "mpl_runner", *command[1:]], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_run(run_dir, baseline)


def test_a_finished_run_dir_reused_is_left_as_it_is(tmp_path, baseline):
    before = {p: p.stat().st_mtime_ns for p in baseline.rglob("*") if p.is_file() and p.name != "run.log"}
    result = mpl_run(*TWO_MOONS, f"hydra.run.dir={baseline}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already finished" in (baseline / "run.log").read_text()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # its results and Hydra's record of it included


TINY_CIFAR = [
    "dataset=cifar10_4k", "dataset.num_labeled=20", "dataset.num_val=20", "dataset.labeled_batch_size=4",
    "dataset.unlabeled_ratio=2", "dataset.eval_batch_size=10", "model=wrn28_2", "model.depth=10",
    "model.widen_factor=1", "model.dropout=0.3", "method.ema_decay=0.9", "method.finetune.steps=4",
    "method.finetune.batch_size=6", "method.student_wait_steps=2", "trainer.steps=60",
    "trainer.eval_interval=20", "trainer.log_interval=2", "trainer.checkpoint_interval=3", "trainer.progress=false",
    "device=cpu",
]


@pytest.mark.parametrize("pipeline", ["workers", pytest.param("device", marks=pytest.mark.slow)])
def test_tiny_cifar_killed_and_requeued_gives_the_same_run(tmp_path, pipeline):
    """A cluster requeue: the same command and run dir again; it goes on by itself. The worker pipeline goes on with
    another number of data-loader workers, which the seeded data streams make no difference to; the device
    pipeline's batches and views are a function of (seed, batch) through its own generator."""
    write_fake_cifar10(tmp_path / "data")
    args = [*TINY_CIFAR, f"dataset.root={tmp_path / 'data'}", f"dataset.pipeline={pipeline}"]
    baseline = mpl_run(*args, "dataset.num_workers=0", "hydra.run.dir=baseline", cwd=tmp_path)
    assert baseline.returncode == 0, baseline.stderr

    run_dir = tmp_path / "run"
    workers = start([*args, f"dataset.num_workers={2 if pipeline == 'workers' else 0}", f"hydra.run.dir={run_dir}"],
                    tmp_path)
    status, _ = interrupt(workers, run_dir, signal.SIGKILL)
    assert status == -signal.SIGKILL
    result = mpl_run(*args, "dataset.num_workers=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout + result.stderr
    assert_same_run(run_dir, tmp_path / "baseline")
