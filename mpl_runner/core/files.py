"""Writing files so that a crash never leaves a half-written one: temp file, fsync, rename."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path

from mpl_runner.core.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: what ``open()`` would give a new file (mkstemp's temp files are private, 0600)
FILE_MODE = 0o666 & ~_umask()


#: the temp file :func:`atomic_write_bytes` writes beside ``<name>``: ``.<name>.<mkstemp's 8 characters>.tmp``
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def temp_target(name: str) -> str | None:
    """The file a temp file named ``name`` was to become, or None if ``name`` is not one of our temp files."""
    match = _TEMP_NAME.fullmatch(name)
    return match.group("name") if match else None


class WriteError(UserError):
    """A file that cannot be written: the disk is full, the place is read-only or not this user's."""


class DiskFull(WriteError):
    """No space left (or the quota is used up) where a file is written."""


_WRITE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                 errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied"}


def write_error(err: BaseException, where, denied: bool = True) -> WriteError | None:
    """``err``, raised while writing ``where`` (the file, or the folder when the error names none: write() and
    fsync() report a full disk without a name), as one line a user can act on; None if it is not such an error.
    ``denied=False``: not permission errors (where ``err`` may come from a read as well)."""
    if not isinstance(err, OSError) or err.errno not in _WRITE_ERRNOS:
        return None
    if not denied and err.errno in (errno.EACCES, errno.EPERM):
        return None
    kind = DiskFull if err.errno in (errno.ENOSPC, errno.EDQUOT) else WriteError
    return kind(f"{_WRITE_ERRNOS[err.errno]}: could not write {where}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    try:
        _atomic_write_bytes(Path(path), data)
    except OSError as err:
        user_error = write_error(err, path)
        if user_error is None:
            raise
        raise user_error from err


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # (see _TEMP_NAME)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
