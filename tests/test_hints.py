"""Every command ``mpl-run`` prints for the user to paste, pasted as a shell would split it and run: the resume line
of an interrupted run and of an interrupted sweep job, and the ``trainer.resume=`` a refused resume target points
at. Dirs are named with what Hydra's grammar and the shell give a meaning (``=``, ``,``, spaces, quotes), as a sweep's
job dirs are (``0_seed=0,trainer.steps=30``). ``mpl-run`` runs in-process."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import time

import pytest
from conftest import TINY, cli_in_process, job_dirs
from mpl_runner.record.logging import Tracker
from test_bad_inputs import finished  # noqa: F401 - the fixture
from test_signals import fallback, send_during  # noqa: F401 - fallback: the fixture

ARGS = [*TINY, "trainer.checkpoint_interval=10", "trainer.progress=false", "device=cpu"]


def at_step(step: int):
    """Once, when the run logs ``step`` (a SIGTERM while it trains)."""
    sent = []

    def when(_tracker, at, *a, **k):
        if at == step and not sent:
            sent.append(at)
            return True
        return False

    return when


def pasted(hint: str) -> list[str]:
    """The arguments of a printed ``mpl-run ...`` command, as the shell hands them over."""
    words = shlex.split(hint)
    assert words[0] == "mpl-run", hint
    return words[1:]


def status(run_dir) -> str:
    return json.loads((run_dir / "metrics.json").read_text())["status"]


def test_the_resume_line_of_a_run_pasted_finishes_it_and_its_seconds_add_up(tmp_path, monkeypatch, capsys,
                                                                            fallback):
    """Also: train_seconds and wall_seconds both sum every attempt (wall_seconds was the last attempt's alone: 13.1
    s of wall time holding 19.4 s of training). The first attempt trains slowly here (0.3 s at each scalars call)."""
    run_dir = tmp_path / "my run,seed=0 'a'"
    slow = Tracker.scalars
    monkeypatch.setattr(Tracker, "scalars", lambda self, step, *a, **k: (time.sleep(0.3), slow(self, step, *a, **k)))
    send_during(monkeypatch, Tracker, "scalars", when=at_step(20))
    code, _, err = cli_in_process([*ARGS, f"hydra.run.dir='{run_dir}'".replace("'a'", "\\'a\\'")], tmp_path,
                                  monkeypatch, capsys)
    assert code == 128 + signal.SIGTERM and fallback == [], err
    assert status(run_dir) == "interrupted"
    monkeypatch.undo()
    code, _, err = cli_in_process(pasted(err.strip().splitlines()[-1].split("Resume with: ")[1]), tmp_path,
                                  monkeypatch, capsys)
    assert code == 0, err
    assert status(run_dir) == "completed" and "resuming" in (run_dir / "run.log").read_text()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["wall_seconds"] >= record["train_seconds"] > 1.0, record


def test_the_resume_line_of_a_sweep_job_pasted_resumes_the_sweep(tmp_path, monkeypatch, capsys, fallback):
    """It was the job's own command with trainer.resume=<its dir>, which holds "=" and "," and did not parse."""
    sweep = tmp_path / "sweep"
    send_during(monkeypatch, Tracker, "scalars", when=at_step(20))
    code, _, err = cli_in_process(["-m", "seed=0,1", *ARGS, f"hydra.sweep.dir={sweep}"], tmp_path, monkeypatch,
                                  capsys)
    assert code == 128 + signal.SIGTERM and fallback == [], err
    hint = err.strip().splitlines()[-1].split("Resume with: ")[1]
    assert shlex.split(hint) == ["mpl-run", "-m", "seed=0,1", *ARGS, f"hydra.sweep.dir={sweep}"]
    assert [j.name.split("_")[0] for j in job_dirs(sweep)] == ["0"]  # (the sweep stopped with its first job)
    monkeypatch.undo()
    code, _, err = cli_in_process(pasted(hint), tmp_path, monkeypatch, capsys)
    assert code == 0, err
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and all(status(job) == "completed" for job in jobs)
    assert "resuming" in (jobs[0] / "run.log").read_text()


def test_the_run_dir_a_refused_resume_target_points_at_pasted_resumes_it(tmp_path, finished, monkeypatch,  # noqa: F811
                                                                         capsys):
    run_dir = shutil.copytree(finished, tmp_path / "run,seed=0 a=b")
    code, _, err = cli_in_process([*ARGS, f"trainer.resume='{run_dir}/checkpoints'"], tmp_path, monkeypatch, capsys)
    assert code == 2, err
    hint = re.search(r"\(the folder that holds checkpoints/: (.*)\); ", err)[1]
    code, _, err = cli_in_process([*ARGS, *shlex.split(hint)], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert "already finished" in (run_dir / "run.log").read_text()


@pytest.mark.parametrize("override", ["hydra.run.dir=runé", "hydra.run.dir=run(1)", "hydra.run.dir=~/run",
                                      "hydra.run.dir=run[1]"])
def test_the_override_an_unreadable_one_is_told_to_be_pasted_reads(override, tmp_path, monkeypatch, capsys):
    code, _, err = cli_in_process(["--dry-run", override], tmp_path, monkeypatch, capsys)
    assert code == 2 and ("quote it for Hydra and the shell: " in err or "write the path out, e.g. " in err), err
    hint = err.split("quote it for Hydra and the shell: ")[-1].split("write the path out, e.g. ")[-1]
    hint = hint.split(" (the shell expands $HOME)")[0].strip()
    words = shlex.split(os.path.expandvars(hint.replace("$HOME", str(tmp_path))))
    code, out, err = cli_in_process([*TINY, *words, "--dry-run"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert f"-> {override.split('=', 1)[1].replace('~', str(tmp_path))}\n" in out and list(tmp_path.iterdir()) == []
