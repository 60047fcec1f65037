"""SIGTERM (what a cluster sends before pre-emption) and Ctrl-C, turned into a request to stop after the step."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """The run stopped early on a signal, after saving a checkpoint at ``step``."""

    def __init__(self, step: int, signum: signal.Signals):
        self.step, self.signum = step, signum
        super().__init__(f"{signum.name} after step {step}")


class StopSignals:
    """While active, SIGTERM and SIGINT set :attr:`received` instead of ending the process, so the loop can finish
    its step and save. A second signal acts as it would have without us (a second Ctrl-C stops at once).

    Handlers can only be installed from the main thread; elsewhere this does nothing.
    """

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.received = signal.Signals(signum)
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: workers leave SIGTERM and Ctrl-C to the main process, which saves and then
    shuts them down (a worker killed by them would make the main process fail mid-step instead)."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
