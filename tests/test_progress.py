"""On a terminal a run draws one progress bar (steps, rate, time left, losses, accuracy) that starts at the step a
resumed run goes on from; elsewhere it prints the plain lines, and its log file keeps them either way."""

from __future__ import annotations

import os
import signal

import pytest

from mpl_runner.loop import engine, progress
from conftest import TINY, cli_in_process

LINES = ["step 10/30", "step 20/30", "step 30/30"]


def bar_states(err: str) -> list[str]:
    """The bar's successive states, as tqdm drew them on stderr."""
    return [s.strip() for s in err.replace("\n", "\r").split("\r") if s.strip().startswith("train:")]


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)


def test_on_a_terminal_the_bar_replaces_the_lines_but_not_in_the_log_file(tmp_path, monkeypatch, capsys, terminal):
    status, out, err = cli_in_process([*TINY, "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    states = bar_states(err)
    assert states[0].startswith("train:   0%") and "0/30" in states[0]
    last = states[-1]
    assert last.startswith("train: 100%") and "30/30" in last and "step/s" in last  # steps, rate
    assert "<00:00" in last  # elapsed < time left
    assert "student/loss" in last and "teacher/loss" in last and "test/acc" in last
    assert not any(line in out + err for line in LINES[:2])  # the bar instead (the final line comes after it)
    log = (tmp_path / "run" / "run.log").read_text()
    assert all(line in log for line in LINES)


def test_off_a_terminal_the_plain_lines(tmp_path, monkeypatch, capsys):
    status, out, err = cli_in_process([*TINY, "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    assert bar_states(err) == [] and "%|" not in err
    console = [line.split(" - ", 1)[1] for line in out.splitlines() if "[mpl_runner.loop.engine]" in line]
    assert [line.split("  ")[0] for line in console if line.startswith("step ")] == LINES
    assert any(line.startswith("final evaluation: ") for line in console)


def test_trainer_progress_false_draws_no_bar(tmp_path, monkeypatch, capsys, terminal):
    status, out, err = cli_in_process([*TINY, "trainer.progress=false", "hydra.run.dir=run"], tmp_path, monkeypatch,
                                      capsys)
    assert status == 0, err
    assert bar_states(err) == [] and not any(line in out for line in LINES)


def test_a_resumed_run_starts_its_bar_at_its_step(tmp_path, monkeypatch, capsys, terminal):
    after_step = engine._StepLog.after_step

    def sigterm_after_step_20(self, step, stats):
        after_step(self, step, stats)
        if step == 20:
            os.kill(os.getpid(), signal.SIGTERM)  # (the loop saves after the next step and stops)

    monkeypatch.setattr(engine._StepLog, "after_step", sigterm_after_step_20)
    status, _, err = cli_in_process([*TINY, "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert status == 128 + signal.SIGTERM and "stopped by SIGTERM after step 21" in err
    monkeypatch.setattr(engine._StepLog, "after_step", after_step)
    status, _, err = cli_in_process([*TINY, "trainer.resume=run"], tmp_path, monkeypatch, capsys)
    assert status == 0, err
    states = bar_states(err)
    assert states[0].startswith("train:  70%") and "21/30" in states[0]
    assert "30/30" in states[-1]
