"""Bad configs, data files and checkpoints: each stops ``mpl-run`` with one line naming the cause, exit status 2,
no traceback, and leaves every file as it was (no run dir that could pass for a finished run).

``mpl-run``'s entry point runs in-process here (it takes 0.3 s instead of 5 s for a fresh interpreter);
tests/test_cli.py runs the console script itself for one of these cases.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, cli_in_process, finished_in_process
from mpl_runner.record import run_dirs
from test_cifar10_data import write_fake_cifar10
from test_cifar10_run import TINY_CIFAR


def run_cli(args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str]:
    """``mpl-run *args`` in ``cwd``: (exit status, stderr)."""
    status, _out, err = cli_in_process(args, cwd, monkeypatch, capsys)
    return status, err


def tree(root: Path) -> dict[Path, tuple[int, int] | None]:
    """Every folder (None) and file (size, modification time) under ``root``."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None for p in root.rglob("*")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished two-moons run dir with its checkpoint."""
    return finished_in_process(tmp_path_factory.mktemp("finished"), *TINY, "trainer.checkpoint_interval=10")


# --- the cases: each prepares tmp_path and returns the arguments ------------------------------------------------


def config(*overrides: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, _finished: [*overrides, f"hydra.run.dir={tmp / 'run'}"]


def cifar(damage: Callable[[Path], None] = lambda folder: None, *overrides: str):
    def setup(tmp: Path, _finished) -> list[str]:
        write_fake_cifar10(tmp / "data")
        damage(tmp / "data" / "cifar-10-batches-py")
        return [*TINY_CIFAR, f"dataset.root={tmp / 'data'}", *overrides, f"hydra.run.dir={tmp / 'run'}"]

    return setup


def truncate(name: str):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:100])


def repickle(name: str, entry) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


class RunsCode:
    def __reduce__(self):
        return os.system, ("echo this should never run",)


def resume(change: Callable[[Path], None] = lambda checkpoint: None, *overrides: str, how: str = "resume"):
    """A copy of the finished run with ``change`` applied to its checkpoint, resumed (or reused: auto-resume)."""
    def setup(tmp: Path, finished: Path) -> list[str]:
        run_dir = tmp / "run"
        shutil.copytree(finished, run_dir)
        change(run_dir / "checkpoints" / "last.pt")
        target = f"trainer.resume={run_dir}" if how == "resume" else f"hydra.run.dir={run_dir}"
        return [*TINY, "trainer.checkpoint_interval=10", *overrides, target]

    return setup


def torch_file(obj) -> Callable[[Path], None]:
    return lambda path: torch.save(obj, path)


def user_files(folder: Path) -> Path:
    """A dir of the user's: notes, and a log of their own under the name Hydra gives its log file."""
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    (folder / "run.log").write_text("my own log\n")
    return folder


def in_dir(make: Callable[[Path, Path], Path], *overrides: str, run_dir: bool = False, cwd: bool = False):
    """``overrides`` with ``{dir}`` standing for the dir ``make(tmp, finished)`` prepares, also the run dir
    (``hydra.run.dir``) or the working dir if asked (then the setup returns it too: the arguments run there)."""
    def setup(tmp: Path, finished: Path):
        folder = make(tmp, finished)
        args = [*(o.format(dir=folder) for o in overrides), *([f"hydra.run.dir={folder}"] if run_dir else [])]
        return (args, folder) if cwd else args

    return setup


def mine(tmp: Path, _finished) -> Path:
    return user_files(tmp / "mine")


def empty(tmp: Path, _finished) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def results(tmp: Path, _finished) -> Path:
    """A dir of the user's results, under the names a run gives its own."""
    folder = user_files(tmp / "results")
    (folder / "metrics.json").write_text('{"mine": true}\n')
    (folder / "confusion_matrix.png").write_bytes(b"my figure")
    return folder


def sweep_with_users_job(tmp: Path, _finished) -> Path:
    """A sweep dir whose first job dir (by the name the sweep below gives it) holds a file of the user's."""
    job = tmp / "sweep" / "0_seed=0,trainer.eval_interval=10,trainer.log_interval=10,trainer.steps=30"
    job.mkdir(parents=True)
    (job / "notes.txt").write_text("mine\n")
    return tmp / "sweep"


def broken_yaml(tmp: Path, _finished) -> list[str]:
    (tmp / "mine" / "experiment").mkdir(parents=True)
    (tmp / "mine" / "experiment" / "broken.yaml").write_text("foo: [1, 2\nbar: : :\n")
    return ["--config-dir", str(tmp / "mine"), "experiment=broken", f"hydra.run.dir={tmp / 'run'}"]


def sweep(*overrides: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, _finished: ["-m", *overrides, f"hydra.sweep.dir={tmp / 'sweep'}"]


def finished_copy(tmp: Path, finished: Path) -> Path:
    return Path(shutil.copytree(finished, tmp / "run"))


CASES = {
    # config values
    "unknown option": (config("method=foo"), "method=foo is not an option; choose one of: mpl, pseudo_labels, supervised, uda"),
    "unknown key": (config("trainer.stepz=3"), "trainer.stepz is not a config key"),
    "added unknown key": (config("+trainer.stepz=3"), "trainer.stepz is not a config key"),
    "labels not per class": (config("dataset.num_labeled=7"), "dataset.num_labeled=7 is not allowed"),
    "too many labels": (config("dataset.num_labeled=2002"), "dataset.num_labeled=2002 is not allowed"),
    "zero steps": (config("trainer.steps=0"), "trainer.steps=0 is not allowed"),
    "steps not a number": (config("trainer.steps=ten"), "trainer.steps='ten'"),
    "zero lr": (config("optim.lr=0"), "optim.lr=0.0 is not allowed"),
    "unknown variant": (config("method.variant=second_order"), "one of first_order, exact"),
    "unknown device": (config("device=tpu"), "device='tpu' is not allowed"),
    "unknown precision": (config("trainer.amp=fp8"), "trainer.amp='fp8' is not allowed"),
    "zero checkpoint interval": (config("trainer.checkpoint_interval=0"), "trainer.checkpoint_interval=0"),
    "resume in a multirun": (lambda tmp, _: ["-m", "trainer.resume=run"],
                             "trainer.resume='run' is not allowed: null in a multirun"),
    # data
    "no data": (cifar(lambda folder: shutil.rmtree(folder)), "dataset.root"),
    "truncated batch": (cifar(truncate("data_batch_3")), "data_batch_3 is truncated or not a CIFAR-10 pickle"),
    "missing batch": (cifar(lambda folder: (folder / "test_batch").unlink()), "test_batch is missing"),
    "batch of wrong shape": (cifar(repickle("data_batch_1", {b"data": np.zeros((5, 10), np.uint8), b"labels": [0]})),
                             "data_batch_1 holds data of shape (5, 10)"),
    "batch that runs code": (cifar(repickle("data_batch_2", RunsCode())), "data_batch_2 is truncated or not a"),
    "cifar labels not per class": (cifar(lambda folder: None, "dataset.num_labeled=25"),
                                   "dataset.num_labeled=25 is not allowed: a multiple of 10"),
    # checkpoints
    "resume from nowhere": (lambda tmp, _: [*TINY, f"trainer.resume={tmp / 'nowhere'}"], "there is no"),
    "resume without checkpoint": (resume(lambda path: path.unlink()), "there is no"),
    "truncated checkpoint": (resume(lambda path: path.write_bytes(path.read_bytes()[:1000])),
                             "is truncated or not a checkpoint"),
    "text as checkpoint": (resume(lambda path: path.write_text("not a checkpoint\n")),
                           "is truncated or not a checkpoint"),
    "state dict as checkpoint": (resume(torch_file({"weight": torch.zeros(3)})), "is not an mpl-runner checkpoint"),
    "checkpoint with objects": (resume(torch_file(argparse.Namespace(step=3))),
                                "holds objects other than tensors and plain data (argparse.Namespace)"),
    "checkpoint of another config": (resume(lambda path: None, "optim.lr=0.05"),
                                     "was written by another config: optim.lr=0.05 here but 0.1 there"),
    "reused dir, truncated checkpoint": (resume(lambda path: path.write_bytes(path.read_bytes()[:1000]), how="reuse"),
                                         "is truncated or not a checkpoint"),
    "resume into another dir": (lambda tmp, finished: [*TINY, f"trainer.resume={finished}",
                                                       f"hydra.run.dir={tmp / 'elsewhere'}"],
                                "trainer.resume="),
    # run dirs: never delete or write into what the run did not create
    "resume a dir of the user's files": (lambda tmp, finished: [*TINY, f"trainer.resume={mine(tmp, finished).name}"],
                                         "trainer.resume='mine' is not allowed: a run dir of mpl-run"),
    "resume an empty dir": (in_dir(empty, *TINY, "trainer.resume={dir}"),
                            "empty holds no checkpoints/last.pt and no .hydra/config.yaml"),
    "resume the working dir": (in_dir(mine, *TINY, "trainer.resume=.", cwd=True),
                               "trainer.resume='.' is not allowed: a run dir of mpl-run"),
    "resume the checkpoints folder": (in_dir(finished_copy, *TINY, "trainer.resume={dir}/checkpoints"),
                                      "(the folder that holds checkpoints/: trainer.resume="),
    "resume the checkpoint file": (in_dir(finished_copy, *TINY, "trainer.resume={dir}/checkpoints/last.pt"),
                                   "last.pt is a file"),
    "resume a dir of the user's files as the run dir": (in_dir(mine, *TINY, "trainer.resume={dir}", run_dir=True),
                                                        "mine holds notes.txt, which no run wrote"),
    "bad config in a dir of the user's files": (in_dir(mine, "trainer.steps=0", run_dir=True),
                                                "mine holds notes.txt, which no run wrote"),
    "bad config in an empty dir": (in_dir(empty, "trainer.steps=0", run_dir=True), "trainer.steps=0 is not allowed"),
    # output dirs: a run or sweep writes only into a dir that is new, empty or one of ours (issue 22, item 1)
    "a run dir of the user's results": (in_dir(results, *TINY, run_dir=True),
                                        "hydra.run.dir='{tmp}/results' is not allowed: a new or empty dir, or a run "
                                        "dir of mpl-run; {tmp}/results holds confusion_matrix.png, which no run "
                                        "wrote"),
    "the working dir as the run dir": (in_dir(mine, *TINY, "hydra.run.dir=.", cwd=True),
                                       "hydra.run.dir='.' is not allowed: a new or empty dir, or a run dir"),
    "a sweep dir of the user's files": (in_dir(mine, "-m", "seed=0,1", *TINY, "hydra.sweep.dir={dir}"),
                                        "hydra.sweep.dir='{tmp}/mine' is not allowed: a new or empty dir, or a sweep "
                                        "dir of mpl-run (job dirs and its own files); {tmp}/mine holds notes.txt"),
    "a job dir of the user's files in a sweep dir": (
        in_dir(sweep_with_users_job, "-m", "seed=0,1", *TINY, "hydra.sweep.dir={dir}"),
        "sweep holds 0_seed=0,trainer.eval_interval=10,trainer.log_interval=10,trainer.steps=30, which no sweep wrote"),
    "a job dir of the user's files outside the sweep dir": (
        in_dir(mine, "-m", "seed=0,1", *TINY, "hydra.sweep.dir={dir}/../sweep", "hydra.sweep.subdir=../mine"),
        "job 0 (seed=0 trainer.steps=30 trainer.eval_interval=10 trainer.log_interval=10) cannot run: the job dir "
        "{tmp}/mine holds notes.txt, which no run wrote"),
    # sweeps: every job composed and checked before the first starts (item 2); none runs twice or shares a dir
    "a bad job in the middle of a sweep": (
        sweep("experiment=digits_supervised,digits_uda,digits_mpl", "seed=0,1", "trainer.steps=30"),
        "job 4 (experiment=digits_mpl seed=0 trainer.steps=30) cannot run: method.student_wait_steps=100 is not "
        "allowed: 0 to 29"),
    "a bad job last in a sweep": (sweep("trainer.steps=30,0"),
                                  "job 1 (trainer.steps=0) cannot run: trainer.steps=0 is not allowed"),
    "a bad job, parallel launcher": (sweep("trainer.steps=30,0", "hydra/launcher=local_parallel"),
                                     "job 1 (trainer.steps=0) cannot run: trainer.steps=0 is not allowed"),
    "a bad job, submitit launcher": (sweep("trainer.steps=30,0", "hydra/launcher=local_submitit"),
                                     "job 1 (trainer.steps=0) cannot run: trainer.steps=0 is not allowed"),
    "an unknown option in a sweep": (sweep("method=mpl,foo"), "job 1 (method=foo) cannot run: method=foo is not an "
                                                             "option"),
    "a seed twice": (sweep("seed=0,0", *TINY), "job 1 (seed=0 trainer.steps=30 trainer.eval_interval=10 "
                                                "trainer.log_interval=10) is job 0 again"),
    "a constant job dir": (sweep("seed=0,1", *TINY, "hydra.sweep.subdir=job"),
                           "hydra.sweep.subdir='job' is not allowed: a dir of its own for each job, e.g. with "
                           "${{hydra.job.num}}: jobs 0 and 1 would share {tmp}/sweep/job"),
    # launchers and sweep syntax (item 3)
    "slurm without SLURM": (sweep("seed=0,1", "hydra/launcher=slurm"),
                            "hydra/launcher=slurm needs SLURM, and there is none here (no sbatch on PATH)"),
    "no parallel jobs": (sweep("seed=0,1", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=0"),
                         "hydra.launcher.n_jobs=0 is not allowed: the number of jobs at a time, >= 1"),
    "no time for submitit": (sweep("seed=0,1", "hydra/launcher=local_submitit", "hydra.launcher.timeout_min=0"),
                             "hydra.launcher.timeout_min=0 is not allowed: the minutes a job may run, >= 1"),
    "an interval without a search": (sweep("optim.lr=interval(0.01, 0.1)"),
                                     "optim.lr=interval(0.01, 0.1): interval(a, b) is a search range, for a search"),
    "a preset for another method": (config("experiment=digits_mpl", "method=supervised"),
                                     "experiment=digits_mpl sets method.variant, a key that SupervisedConfig (the "
                                     "method chosen) does not have: the preset is made for another method; leave "
                                     "method=... out"),
    "a path that is not ASCII": (config("dataset.root=/data/é"), "cannot read the override 'dataset.root=/data/é': "
                                 "its value holds characters other than ASCII; if it is text or a path, quote it for "
                                 "Hydra and the shell: \"dataset.root='/data/é'\""),
    "a path with parentheses": (config("dataset.root=/data/a(b)"), "quote it for Hydra and the shell: "
                                                                   "\"dataset.root='/data/a(b)'\""),
    "a path with ~": (config("dataset.root=~/data"), "~ is not expanded in an override; write the path out, e.g. "
                                                     "dataset.root=$HOME/data (the shell expands $HOME)"),
    "a broken YAML under --config-dir": (broken_yaml, "experiment/broken.yaml, line 2, column 4: not valid YAML: "
                                                      "while parsing a flow sequence expected ',' or ']', but got ':'"),
    "a sweep list ending with a comma": (sweep("seed=0,1,"), "a sweep list ends with a comma; leave the last one out: "
                                                             "seed=0,1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, finished, monkeypatch, capsys):
    setup, message = CASES[case]
    args = setup(tmp_path, finished)
    args, cwd = args if isinstance(args, tuple) else (args, tmp_path)  # (a case may run in a dir of its own)
    before, finished_before = tree(tmp_path), tree(finished)
    status, stderr = run_cli(args, cwd, monkeypatch, capsys)
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mpl-run: error: "), stderr
    assert message.format(tmp=tmp_path) in lines[0]
    assert "Traceback" not in stderr
    assert tree(tmp_path) == before  # nothing written, nothing changed: no run dir, no half record
    assert tree(finished) == finished_before


@pytest.mark.parametrize("case", ["resume from nowhere", "resume a dir of the user's files", "resume an empty dir",
                                  "resume the working dir", "resume the checkpoints folder",
                                  "resume the checkpoint file"])
def test_a_resume_target_that_is_no_run_dir_is_refused_before_hydra_makes_anything(case, tmp_path, finished,
                                                                                   monkeypatch, capsys):
    """Refused while Hydra resolves hydra.run.dir: no run dir made, no log opened there, nothing to clean up."""
    monkeypatch.setattr(run_dirs, "discard_if_unused", lambda run_dir: pytest.fail(f"had to clean up {run_dir}"))
    setup, message = CASES[case]
    args = setup(tmp_path, finished)
    args, cwd = args if isinstance(args, tuple) else (args, tmp_path)
    before = tree(tmp_path)
    status, stderr = run_cli(args, cwd, monkeypatch, capsys)
    assert status == 2 and stderr.startswith("mpl-run: error: trainer.resume=") and message in stderr, stderr
    assert tree(tmp_path) == before


def test_a_refused_command_leaves_no_folder_above_its_default_run_dir(tmp_path, monkeypatch, capsys):
    """The default run dir is outputs/runs/<date>_<time>: Hydra makes outputs/ and runs/ too, and a refused command
    removes them again where it made them and they are empty; a user's outputs/ and what it holds stay."""
    status, _, err = cli_in_process(["model=wrn28_2"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "model='wide_resnet' is not allowed" in err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "outputs" / "runs" / "mine").mkdir(parents=True)
    status, _, _ = cli_in_process(["model=wrn28_2"], tmp_path, monkeypatch, capsys)
    assert status == 2 and [p.name for p in (tmp_path / "outputs" / "runs").iterdir()] == ["mine"]
