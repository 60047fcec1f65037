"""Errors a user can act on. The CLI prints them as one line, without a traceback, and exits non-zero."""


def one_line(err: BaseException) -> str:
    """``err`` as ``"Type: message"`` on one line (library messages often span several)."""
    return " ".join(f"{type(err).__name__}: {err}".split())


class UserError(Exception):
    """A mistake in the config or the files a run was given; the message says what is allowed."""


class ConfigError(UserError):
    def __init__(self, key: str, value: object, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: {allowed}")


class DataError(UserError):
    """A data set that is missing, truncated or not in the expected layout."""


class JobFailed(Exception):
    """A multirun job that crashed on something other than a user's mistake. The sweep ends with this one line
    (exit status 2); the traceback is in that job's log."""


class Refused(BaseException):
    """A :class:`UserError` (its ``args[0]``) raised where Hydra turns an Exception into a warning (a callback):
    a BaseException passes through Hydra to ``mpl-run``'s entry point, which prints it as one line."""
