"""SIGTERM (what a cluster sends before pre-emption) and Ctrl-C, turned into a request to stop after the step; in a
submitit job also the signal submitit requeues on before a SLURM time-out (SIGUSR2), which is handed over to
submitit's own handler once the checkpoint is written."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def submitit_signal() -> signal.Signals | None:
    """In a submitit job (``SUBMITIT_EXECUTOR`` set): the signal its handler checkpoints and requeues on, SIGUSR2
    unless ``SUBMITIT_PREEMPT_SIGNAL`` names another (as submitit reads it)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


class Interrupted(Exception):
    """The run stopped early on a signal, after saving a checkpoint at ``step``; ``handover``: the handler that
    signal had before ours (submitit's requeue), to be called once the run's record is written; ``completed``: the
    signal came when the run's record said completed already."""

    def __init__(self, step: int, signum: signal.Signals, handover: Callable | None = None, completed: bool = False):
        self.step, self.signum, self.handover, self.completed = step, signum, handover, completed
        super().__init__(f"{signum.name} after step {step}")


class StopSignals:
    """While active, SIGTERM and SIGINT (and, in a submitit job, :func:`submitit_signal`) set :attr:`received`
    instead of ending the process, so the loop can finish its step and save. A second signal acts as it would have
    without us (a second Ctrl-C stops at once). The run goes on to the next check: every step in the loop, and
    between the pieces of work after it (:meth:`check`).

    Handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._handover: Callable | None = None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            timeout = submitit_signal()
            watched = SIGNALS + ((timeout,) if timeout is not None else ())
            self._previous = {s: signal.signal(s, self._handle) for s in watched}
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.received = signal.Signals(signum)
        previous = self._previous.get(self.received)
        if self.received == submitit_signal() and callable(previous):
            self._handover = previous
        self._restore()

    def interrupted(self, step: int, completed: bool = False) -> Interrupted:
        """What to raise after the checkpoint of ``step``, for the signal received (SIGTERM if none here: another
        rank's)."""
        return Interrupted(step, self.received or signal.SIGTERM, self._handover, completed)

    def check(self, step: int) -> None:
        """Raise :class:`Interrupted` if a signal came (work after the loop: the checkpoint of ``step`` exists)."""
        if self.received is not None:
            raise self.interrupted(step)

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: workers leave SIGTERM and Ctrl-C to the main process, which saves and then
    shuts them down (a worker killed by them would make the main process fail mid-step instead)."""
    for s in (*SIGNALS, signal.SIGUSR2):  # (SLURM sends submitit's SIGUSR2 to every process of the job)
        signal.signal(s, signal.SIG_IGN)
