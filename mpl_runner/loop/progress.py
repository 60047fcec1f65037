"""Progress a person can read: a bar on a terminal, plain log lines elsewhere.

Where stderr is a terminal, :func:`bar` draws a tqdm bar there, and :func:`drawn_above` keeps the console's log
records above it and leaves out the lines the bar replaces (those logged with ``extra=LINE``): the log file
(Hydra's ``run.log``) keeps every line. Anywhere else (a log file, SLURM, joblib's workers, pytest) :func:`bar`
is a no-op and the lines are printed as they always were, so logs stay greppable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: ``log.info(..., extra=LINE)``: a progress line, which a drawn bar replaces on the terminal (not in the log file)
LINE = {"progress_line": True}


def on_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stderr, where bars are drawn) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # (no isatty, or a closed stream)
        return False


class NoBar:
    """What :func:`bar` returns off a terminal: takes the calls a tqdm bar takes and draws nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int, desc: str = "", initial: int = 0, unit: str = "step", enabled: bool = True):
    """A tqdm bar on stderr counting from ``initial`` to ``total`` (its rate and time left count from
    ``initial``), where stderr is a terminal and ``enabled``; else a :class:`NoBar`."""
    if not (enabled and on_terminal()):
        return NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                leave=True)


def _console_handlers() -> list[logging.Handler]:
    """The root logger's handlers that print to a terminal (Hydra's console handler; not its log file)."""
    return [h for h in logging.root.handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler) and on_terminal(h.stream)]


@contextmanager
def drawn_above(progress) -> Iterator[None]:
    """While ``progress`` (a bar from :func:`bar`) is drawn: log records on the terminal print above it, and
    progress lines (``extra=LINE``) are left to the log file. Nothing changes for a :class:`NoBar`."""
    if isinstance(progress, NoBar):
        yield
        return
    handlers = _console_handlers()

    def above(handler: logging.Handler):
        emit = type(handler).emit

        def emit_above(record: logging.LogRecord) -> None:
            if getattr(record, "progress_line", False):
                return
            with progress.external_write_mode(file=sys.stderr):  # (clears the bar, prints, draws it again)
                emit(handler, record)

        return emit_above

    for handler in handlers:
        handler.emit = above(handler)
    try:
        yield
    finally:
        for handler in handlers:
            del handler.emit
