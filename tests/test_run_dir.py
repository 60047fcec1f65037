"""One mpl-run at a time in a run dir, and the temp files a killed write left: removed when a run goes on there,
and nothing but them. ``mpl-run`` runs in-process, as in tests/test_bad_inputs.py."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import TINY
from mpl_runner.core.distributed import STAMP_ENV
from mpl_runner.core.files import temp_target
from mpl_runner.record.run_dirs import LOCK_NAME, RunDirInUse, locked
from test_bad_inputs import finished, run_cli, tree  # noqa: F401 - finished: the fixture

RESUME = [*TINY, "trainer.checkpoint_interval=10"]


def unfinished_copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run that has not written its metrics yet (killed after its last checkpoint)."""
    run_dir = Path(shutil.copytree(finished, tmp_path / "run"))
    (run_dir / "metrics.json").unlink()
    return run_dir


@pytest.mark.parametrize("how", ["resume", "reuse"])
def test_a_run_dir_in_use_stops_a_second_mpl_run_which_changes_nothing(how, tmp_path, finished, monkeypatch, capsys):
    run_dir = unfinished_copy(finished, tmp_path)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (this process stands for the mpl-run that goes on there)
    try:
        before = tree(tmp_path)
        target = f"trainer.resume={run_dir}" if how == "resume" else f"hydra.run.dir={run_dir}"
        status, stderr = run_cli([*RESUME, target], tmp_path, monkeypatch, capsys)
    finally:
        os.close(fd)
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0] == f"mpl-run: error: {run_dir} is in use by another mpl-run (pid {os.getpid()}); wait until it ends"
    assert tree(tmp_path) == before  # no record of its own left, no log line, no metrics.json


def test_the_lock_is_held_for_the_block_and_released_after(tmp_path):
    with locked(tmp_path):
        with pytest.raises(RunDirInUse, match=rf"in use by another mpl-run \(pid {os.getpid()}\)"):
            with locked(tmp_path):
                pass
        with locked(tmp_path, enabled=False):  # (ranks other than 0 under torchrun)
            pass
    with locked(tmp_path):
        pass


def test_temp_target_knows_the_temp_files_of_atomic_writes(tmp_path):
    fd, name = tempfile.mkstemp(dir=tmp_path, prefix=".last.pt.", suffix=".tmp")  # (as files.atomic_write_bytes)
    os.close(fd)
    assert temp_target(Path(name).name) == "last.pt"
    for other in (".last.pt.tmp", ".last.pt.notes.tmp", "last.pt.abcd1234.tmp", ".last.pt.abcd1234.tmp.bak",
                  ".last.pt.ABCD1234.tmp"):
        assert temp_target(other) is None, other


def test_a_run_going_on_removes_the_temp_files_of_killed_writes_and_nothing_else(tmp_path, finished, monkeypatch,
                                                                                capsys):
    run_dir = unfinished_copy(finished, tmp_path)
    orphans = [run_dir / "checkpoints" / ".last.pt.k1ll3d_x.tmp", run_dir / ".metrics.json.abcd1234.tmp",
               run_dir / ".decision_boundary.png.zz_00099.tmp"]
    kept = [run_dir / "checkpoints" / ".last.pt.notes.tmp",  # the user's, with names like ours
            run_dir / "checkpoints" / ".last.pt.k1ll3d_x.tmp.bak",
            run_dir / "checkpoints" / ".other.pt.abcd1234.tmp",
            run_dir / ".notes.txt.abcd1234.tmp",
            run_dir / ".labeled_indices.json.dir_0000.tmp" / "inside"]  # (a folder of that name)
    for path in orphans + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half a file")
    status, stderr = run_cli([*RESUME, f"trainer.resume={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, stderr
    assert not any(path.exists() for path in orphans)
    assert all(path.read_bytes() == b"half a file" for path in kept)
    log = (run_dir / "run.log").read_text()
    assert log.count("temp file(s) that a killed write left") == 1
    assert "removed 3 temp file(s)" in log and "checkpoints/.last.pt.k1ll3d_x.tmp" in log
    assert (run_dir / "metrics.json").exists()


def test_a_sweep_dir_in_use_stops_a_second_sweep_which_changes_nothing(tmp_path, monkeypatch, capsys):
    """Two sweeps in one hydra.sweep.dir overwrote each other's multirun.yaml and mixed their report: the second is
    refused in one line naming the pid of the first."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("the first sweep's\n")
    fd = os.open(sweep / LOCK_NAME, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (this process stands for the sweep that runs there)
    try:
        before = tree(tmp_path)
        status, stderr = run_cli(["-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch, capsys)
    finally:
        os.close(fd)
    assert status == 2, stderr
    assert stderr.strip().splitlines() == [
        f"mpl-run: error: {sweep} is in use by another mpl-run sweep (pid {os.getpid()}); wait until it ends"]
    assert tree(tmp_path) == before


def test_dry_run_lists_and_checks_every_job_and_runs_none(tmp_path, monkeypatch, capsys):
    from conftest import cli_in_process

    args = ["-m", "method=supervised,mpl", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", "--dry-run"]
    status, out, err = cli_in_process(args, tmp_path, monkeypatch, capsys)
    assert status == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == (f"job 0: method=supervised seed=0 {' '.join(TINY)} -> {tmp_path}/sweep/0_method=supervised,"
                        "seed=0,trainer.eval_interval=10,trainer.log_interval=10,trainer.steps=30")
    assert len(lines) == 5 and lines[-1] == "4 job(s) checked; none run (--dry-run)"
    assert list(tmp_path.iterdir()) == []  # nothing written: no sweep dir, no report
    status, out, err = cli_in_process([*args, "trainer.steps=0"], tmp_path, monkeypatch, capsys)
    assert status == 2 and "job 0 (method=supervised seed=0 trainer.steps=0 " in err and out == ""
    status, out, err = cli_in_process([*TINY, "hydra.run.dir=run", "--dry-run"], tmp_path, monkeypatch, capsys)
    assert status == 0 and out.splitlines()[-1] == "checked; not run (--dry-run)", err
    assert list(tmp_path.iterdir()) == []


def test_a_run_dir_deleted_mid_run_stops_with_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    """Deleted while training: it was a TensorBoard writer-thread traceback, then the dir made again holding a
    metrics.json that claimed a checkpoint that was gone. Now: one line, exit status 1, nothing made again."""
    from mpl_runner.record.logging import Tracker

    scalars = Tracker.scalars

    def deletes_the_run_dir(self, step, values, prefix=""):
        if step >= 15 and self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        scalars(self, step, values, prefix)

    monkeypatch.setattr(Tracker, "scalars", deletes_the_run_dir)
    status, stderr = run_cli([*RESUME, "trainer.log_interval=1", "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert status == 1, stderr
    assert stderr.strip().splitlines() == [
        f"mpl-run: error: the run dir {tmp_path / 'run'} was deleted while the run went on; it stopped, writing "
        "nothing more"]
    assert not (tmp_path / "run").exists()


def test_a_refused_resume_in_the_same_second_leaves_the_last_resume_record_as_it_was(tmp_path, finished, monkeypatch,
                                                                                       capsys):
    monkeypatch.setenv(STAMP_ENV, "2026-12-07T04:42:27")  # every command below starts in the same second
    run_dir = Path(shutil.copytree(finished, tmp_path / "run"))
    status, stderr = run_cli([*RESUME, f"trainer.resume={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 0, stderr
    assert [p.name for p in (run_dir / ".hydra").glob("resumed_*")] == ["resumed_2026-12-07_04-42-27"]
    before = tree(tmp_path)
    status, stderr = run_cli([*RESUME, "model.hidden_sizes=[4]", f"trainer.resume={run_dir}"], tmp_path, monkeypatch,
                             capsys)
    assert status == 2 and "model.hidden_sizes" in stderr, stderr
    assert tree(tmp_path) == before  # the first resume's record is not overwritten, and the refused one left none
