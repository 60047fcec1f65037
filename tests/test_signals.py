"""Signals at the edges of a run, in-process (the signal is sent to this process at a chosen point): after the last
step (final evaluation, figures, HParams, the record) and submitit's SIGUSR2 before a SLURM time-out."""

from __future__ import annotations

import json
import os
import shlex
import signal

import pytest
import torch

from conftest import TINY
from mpl_runner.loop import engine, run_record as record_module, run as run_module
from mpl_runner.record.logging import Tracker
from mpl_runner.core.signals import ignore_stop_signals
from test_config_warnings import run_cli

ARGS = [*TINY, "trainer.checkpoint_interval=10", "trainer.progress=false", "device=cpu"]


@pytest.fixture
def fallback():
    """Handlers for SIGTERM and SIGUSR2 that record instead of ending pytest, should one get past mpl-run (they are
    what mpl-run finds installed, and puts back)."""
    received = []
    previous = {s: signal.signal(s, lambda signum, _frame: received.append(signal.Signals(signum)))
                for s in (signal.SIGTERM, signal.SIGUSR2)}
    yield received
    for s, handler in previous.items():
        signal.signal(s, handler)


def send_during(monkeypatch, owner, name: str, signum=signal.SIGTERM, when=lambda *a, **k: True) -> None:
    """Send ``signum`` to this process when ``owner.name`` is called (and ``when`` says so), then let it run."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def record(run_dir):
    """metrics.json without its provenance (which code and machine: tested in test_cli.py)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.startswith("provenance/")}


WHERE = {  # where the signal comes, after the last step
    "final evaluation": (engine, "evaluate", lambda *a, splits=("test",), **k: "val" in splits),
    "figures": (record_module, "confusion_figure", lambda *a, **k: True),
    "HParams": (Tracker, "hparams", lambda *a, **k: True),
}


@pytest.mark.parametrize("where", list(WHERE))
def test_a_signal_after_the_last_step_leaves_a_record_and_the_resume_hint(where, tmp_path, monkeypatch, capsys,
                                                                          fallback):
    owner, name, when = WHERE[where]
    send_during(monkeypatch, owner, name, when=when)
    run_dir = tmp_path / "run"
    status, _, stderr = run_cli([*ARGS, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 128 + signal.SIGTERM and fallback == []
    assert record(run_dir) == {"status": "interrupted", "signal": "SIGTERM", "checkpoint_step": 30}
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("mpl-run: stopped by SIGTERM after step 30; checkpoint in ")
    command = shlex.split(message.split("Resume with: ")[1])
    assert command[0] == "mpl-run" and command[-1] == f"trainer.resume={run_dir}"

    monkeypatch.undo()  # (the signal sender too)
    status, _, stderr = run_cli(command[1:], tmp_path, monkeypatch, capsys)
    assert status == 0, stderr
    assert record(run_dir)["status"] == "completed" and record(run_dir)["steps"] == 30
    assert (run_dir / "confusion_matrix.png").exists()


def test_a_signal_while_the_completed_record_is_written_leaves_it_completed(tmp_path, monkeypatch, capsys, fallback):
    send_during(monkeypatch, record_module, "atomic_write_json",
                when=lambda path, value: path.name == "metrics.json" and value.get("status") == "completed")
    run_dir = tmp_path / "run"
    status, _, stderr = run_cli([*ARGS, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert status == 128 + signal.SIGTERM and fallback == []
    assert record(run_dir)["status"] == "completed"
    assert stderr.strip().splitlines()[-1] == (
        f"mpl-run: SIGTERM came after the last step (30); the run is complete: {run_dir / 'metrics.json'}")


def at_step(step: int):
    return lambda _self, done, _raw: done == step


def test_sigusr2_in_a_submitit_job_saves_then_hands_over_to_submitit(tmp_path, monkeypatch, capsys, fallback):
    """submitit's handler (here a fake one) requeues the job; it is called once the step's checkpoint and the
    record are written."""
    run_dir = tmp_path / "run"
    handed_over = []

    def submitit_handler(signum, _frame):
        state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
        handed_over.append((signal.Signals(signum), state["step"], record(run_dir)["status"]))

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    signal.signal(signal.SIGUSR2, submitit_handler)
    send_during(monkeypatch, engine.NonFiniteWatch, "observe", signal.SIGUSR2, when=at_step(7))
    status, _, stderr = run_cli([*ARGS, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    assert handed_over == [(signal.SIGUSR2, 7, "interrupted")]
    assert status == 128 + signal.SIGUSR2
    assert record(run_dir) == {"status": "interrupted", "signal": "SIGUSR2", "checkpoint_step": 7}
    assert "mpl-run: stopped by SIGUSR2 after step 7" in stderr
    assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # put back


def test_sigusr2_outside_submitit_is_left_to_its_own_handler(tmp_path, monkeypatch, capsys, fallback):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    send_during(monkeypatch, engine.NonFiniteWatch, "observe", signal.SIGUSR2, when=at_step(7))
    status, _, _ = run_cli([*ARGS, "hydra.run.dir=run"], tmp_path, monkeypatch, capsys)
    assert status == 0 and fallback == [signal.SIGUSR2]  # at once, and the run went on
    assert record(tmp_path / "run")["status"] == "completed"


def test_data_loader_workers_ignore_submitits_signal_too():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    try:
        ignore_stop_signals()
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in before)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_signal_during_the_final_evaluation_stops_it_within_a_batch():
    """It went through every evaluation batch first (23 s on CIFAR): the stop flag is checked before each."""
    from mpl_runner.core.signals import Interrupted, StopSignals

    stop, seen = StopSignals(), []

    def batches():
        for i in range(10):
            seen.append(i)
            if i == 2:
                stop.received = signal.SIGTERM
            yield torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)

    with pytest.raises(Interrupted, match="SIGTERM after step 30"):
        engine.confusion_matrix(torch.nn.Linear(2, 3), batches(), torch.device("cpu"), 3,
                                check=lambda: stop.check(30))
    assert seen == [0, 1, 2]
