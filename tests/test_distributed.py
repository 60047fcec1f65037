"""``torchrun --nproc_per_node=2 -m mpl_runner`` on the CPU (gloo): one run dir, rank 0 alone writes, the same
training as one process at the same global batch, and resume across a change in the number of processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import completed_run, job_dirs, mpl_run
from test_cifar10_data import write_fake_cifar10
from test_resume import interrupt, scalars, start
from test_cifar10_run import TINY_CIFAR

TWO_MOONS = ["trainer.steps=300", "trainer.eval_interval=100", "trainer.log_interval=10",
             "trainer.checkpoint_interval=20", "trainer.progress=false", "device=cpu", "trainer.num_threads=1"]
#: largest difference allowed between a logged loss with 2 processes and with 1 (float32 sums in another order)
TOLERANCE = 1e-5


def torchrun(*args: str, cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         "-m", "mpl_runner", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def only_run_dir(cwd: Path) -> Path:
    runs = list((cwd / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs  # every rank named the same dir
    return runs[0]


def assert_close(run: Path, reference: Path) -> None:
    got, expected = scalars(run), scalars(reference)
    train = [tag for tag in expected if tag.startswith("train/")]
    assert train and got.keys() == expected.keys()
    for tag in train:
        assert [s for s, _ in got[tag]] == [s for s, _ in expected[tag]], tag
        assert max(abs(a - b) for (_, a), (_, b) in zip(got[tag], expected[tag])) < TOLERANCE, tag
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (run, reference))
    assert {k: v for k, v in a.items() if k.endswith("/acc")} == {k: v for k, v in b.items() if k.endswith("/acc")}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    return completed_run(tmp_path_factory.mktemp("one"), *TWO_MOONS)


def test_two_processes_train_as_one_does_at_the_same_global_batch(tmp_path, one_process):
    result = torchrun(*TWO_MOONS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["world_size"] == 2
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1  # rank 0 alone writes
    assert not list((run_dir / ".hydra").glob("resumed_*"))
    assert_close(run_dir, one_process)


@pytest.mark.slow  # (~14 s; the suite's 10 minutes)
def test_a_run_killed_on_one_process_resumes_on_two(tmp_path, one_process):
    run_dir = tmp_path / "run"
    status, _ = interrupt(start([*TWO_MOONS, f"hydra.run.dir={run_dir}"], tmp_path), run_dir, signal.SIGKILL)
    assert status == -signal.SIGKILL
    result = torchrun(*TWO_MOONS, f"trainer.resume={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_close(run_dir, one_process)


def test_tiny_cifar_on_two_processes(tmp_path):
    write_fake_cifar10(tmp_path / "data")
    overrides = [o for o in TINY_CIFAR if not o.startswith("trainer.steps")]
    result = torchrun(*overrides, "trainer.steps=6", "method=mpl", "method.ema_decay=0.9", "dataset.num_workers=1",
                      f"dataset.root={tmp_path / 'data'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir(tmp_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    assert (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "pseudo_labels.png").exists()


def test_a_submitit_job_with_two_tasks_trains_with_ddp(tmp_path):
    """What hydra/launcher=slurm_ddp does on a cluster, with submitit's local executor: one job, two tasks."""
    sweep = tmp_path / "sweep"
    result = mpl_run("-m", "hydra/launcher=local_submitit", "hydra.launcher.tasks_per_node=2", *TWO_MOONS,
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [job] = job_dirs(sweep)
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["world_size"] == 2
    assert len(list(job.glob("events.out.tfevents.*"))) == 1 and not list((job / ".hydra").glob("resumed_*"))
    assert len(list(sweep.glob(".submitit/*/*_1_log.out"))) == 1  # the second task ran
