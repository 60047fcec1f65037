"""What ``mpl-run`` may do to a run dir it did not create: nothing.

- ``trainer.resume`` must name a run dir of ours, checked while Hydra resolves ``hydra.run.dir``, before Hydra
  creates the dir or opens its log there (:func:`resume_dir`).
- What a run dir held before Hydra touched it is noted when the run starts (:class:`NoteRunDir`), so that a
  command refused later removes only what it created, by name (:func:`found_before`).
- One process at a time in a run dir: ``<run dir>/.lock``, held with ``flock`` for the whole run (:func:`locked`);
  the kernel releases it when the process dies, however it dies.
- ``hydra.run.dir``, ``hydra.sweep.dir`` and every job dir of a sweep: new, empty or one of ours, checked before
  anything is written there (:func:`check_run_dir`, :func:`check_sweep_dir`); one sweep at a time in a sweep dir
  (its own ``.lock``).
- Temp files a killed atomic write left (``.<name>.<random>.tmp``, :mod:`mpl_runner.core.files`) are removed when a run
  goes on in that dir (:func:`remove_orphans`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from mpl_runner.record.checkpoint import RELATIVE_PATH as CHECKPOINT
from mpl_runner.core.distributed import world_from_env
from mpl_runner.core.errors import ConfigError, Refused, UserError
from mpl_runner.core.files import FILE_MODE, temp_target

#: Hydra's record of a run (what makes a dir a run dir of ours, with a checkpoint)
RECORD = Path(".hydra") / "config.yaml"
#: the files Hydra writes into a job's record dir (``hydra.output_subdir``)
RECORD_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")
LOCK_NAME = ".lock"


#: what Hydra's override grammar takes unquoted in a value (a path): anything else is quoted
_PLAIN = re.compile(r"[\w./@%+-]*", re.ASCII)


def hydra_quote(value) -> str:
    """``value`` as Hydra's override grammar reads it back as it is: quoted where it holds ``=``, ``,``, spaces,
    ``~`` or anything else the grammar gives a meaning."""
    text = str(value)
    if _PLAIN.fullmatch(text) and not text.startswith("~"):
        return text
    # (inside quotes the grammar takes a backslash as it is, but before a quote or at the end, where it is doubled)
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), text) + "'"


def shell_word(word: str) -> str:
    """``word`` quoted for the shell: as it is where it can be, in double quotes where they suffice (a Hydra-quoted
    value reads better so), else as :func:`shlex.quote` does."""
    if shlex.quote(word) == word or re.search(r'["$`\\!]', word):
        return shlex.quote(word)
    return f'"{word}"'


def is_run_dir(path: Path) -> bool:
    return (path / RECORD).is_file() or (path / CHECKPOINT).is_file()


def resume_dir(resume: str | None, new_dir: str) -> str:
    """``${mpl.run_dir:${trainer.resume},<new dir>}``: ``hydra.run.dir``, a new dir, or the run dir
    ``trainer.resume`` names, which must be one of ours (it holds ``.hydra/config.yaml`` or
    ``checkpoints/last.pt``). Anything else is refused here, before Hydra creates or writes anything there."""
    if resume is None:
        return new_dir
    path = Path(resume)
    try:
        found = is_run_dir(path)
    except OSError as err:  # (a folder this user may not search: is_file() raises)
        raise ConfigError("trainer.resume", resume, f"a run dir this user can read and write; {err.filename}: "
                                                    f"{err.strerror}") from err
    if found and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError("trainer.resume", resume, f"a run dir this user can read and write (the run writes its "
                                                    f"log, record and checkpoints there); {path.resolve()}: "
                                                    "permission denied")
    if found:
        return resume
    where = path.resolve()
    if not path.exists():
        problem = f"there is no {where}"
    elif not path.is_dir():
        problem = f"{where} is a file"
    else:
        problem = f"{where} holds no {CHECKPOINT} and no {RECORD}"
    parent = next((p for p in where.parents if is_run_dir(p)), None)
    hint = f": {shell_word(f'trainer.resume={hydra_quote(parent)}')}" if parent is not None else ""
    raise ConfigError("trainer.resume", resume, f"a run dir of mpl-run (the folder that holds checkpoints/{hint}); "
                                                f"{problem}")


def _entries(path: Path) -> list[str] | None:
    """The names in ``path`` (sorted), or None where it is no dir this user can list (Hydra reports that)."""
    try:
        return sorted(os.listdir(path)) if path.is_dir() else None
    except OSError:
        return None


def check_run_dir(directory: str, key: str | None = "hydra.run.dir") -> None:
    """A run writes only into a dir that is new, empty or a run dir of ours (:func:`is_run_dir`): anything else is
    the user's, refused before anything is written there (naming the first entry that no run wrote). ``key``: the
    setting that named the dir; None for a job of a sweep. ("a/../b" is taken as b: where a does not exist yet,
    mkdir makes it and then finds b.)"""
    path = Path(os.path.abspath(directory))
    names = _entries(path)
    if names and world_from_env().distributed:  # (torchrun's other ranks log into the same new dir as this one)
        names = [n for n in names if n not in ("run.log", ".hydra")]
    try:
        if not names or is_run_dir(path):
            return
    except OSError:
        return
    found = f"{path} holds {names[0]}, which no run wrote"
    if key is None:
        raise UserError(f"the job dir {found}: a job writes only into a new or empty dir or a run dir of mpl-run "
                        "(see hydra.sweep.dir and hydra.sweep.subdir)")
    raise ConfigError(key, directory, f"a new or empty dir, or a run dir of mpl-run; {found} (leave {key} unset "
                                      "for a new dir under outputs/)")


#: what a sweep writes into its dir beside the job dirs (Hydra, submitit, the report, the search)
SWEEP_FILES = ("multirun.yaml", "report.md", "report.csv", "report.png", "optimization_results.yaml", ".submitit",
               LOCK_NAME, "search_history.png", "search_importances.png", "search_parallel.png")  # (search_report)


def check_sweep_dir(directory: str, own: tuple[str, ...] = ()) -> None:
    """A sweep writes only into a dir that is new, empty or a sweep dir of ours: job dirs (run dirs of ours, or
    empty), :data:`SWEEP_FILES` and ``own`` (names a file of the sweep's starts with: its search storage)."""
    path = Path(os.path.abspath(directory))
    for name in _entries(path) or ():
        if name in SWEEP_FILES or any(name.startswith(o) for o in own):
            continue
        sub = path / name
        try:
            if sub.is_dir() and not sub.is_symlink() and (is_run_dir(sub) or not any(sub.iterdir())):
                continue
        except OSError:
            pass
        raise ConfigError("hydra.sweep.dir", directory, f"a new or empty dir, or a sweep dir of mpl-run (job dirs and "
                                                        f"its own files); {path.resolve()} holds {name}, which no "
                                                        "sweep wrote (leave hydra.sweep.dir unset for a new dir "
                                                        "under outputs/)")


# --- what was there before ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A run dir as it was before Hydra created or wrote anything in it."""

    existed: bool
    names: frozenset[str] = frozenset()  # its entries and those of its .hydra/, e.g. "run.log", ".hydra/config.yaml"
    top: str | None = None  # where it did not exist: the highest folder of its path that did not either

    def made(self, relative: str) -> bool:
        """Whether ``relative`` (an entry of the run dir or of its .hydra/) is new since then."""
        return not self.existed or relative not in self.names


_FOUND: dict[str, Found] = {}  # absolute path -> what it held; noted anew by every command


def _note(directory: str, jobs: bool = False) -> None:
    """Note what ``directory`` holds; with ``jobs`` (a sweep dir), also what each of its folders (jobs) holds."""
    path = Path(os.path.abspath(directory))
    if not path.is_dir():
        top = path
        while not top.parent.exists() and top.parent != top:
            top = top.parent
        _FOUND[str(path)] = Found(False, top=str(top))
        return
    names = {p.name for p in path.iterdir()}
    if (path / ".hydra").is_dir():
        names |= {f".hydra/{p.name}" for p in (path / ".hydra").iterdir()}
    _FOUND[str(path)] = Found(True, frozenset(names))
    for name in names if jobs else ():
        if "/" not in name and (path / name).is_dir() and not (path / name).is_symlink():
            _note(str(path / name))


def found_before(run_dir: Path) -> Found | None:
    """What ``run_dir`` held when this command started, or None where nobody noted it (then nothing in it may be
    taken for this command's own)."""
    key = os.path.abspath(run_dir)
    if key in _FOUND:
        return _FOUND[key]
    sweep = _FOUND.get(os.path.dirname(key))  # a multirun job's dir, new since the sweep dir was noted
    return Found(False) if sweep is not None and sweep.made(os.path.basename(key)) else None


class NoteRunDir(Callback):
    """Notes what the run dir (a multirun: the sweep dir) holds before Hydra creates it, opens its log there or
    writes its record (``conf/config.yaml`` registers it under ``hydra.callbacks``).
    It also refuses a dir that is not ours (:func:`check_run_dir`, :func:`check_sweep_dir`): with
    :class:`mpl_runner.core.errors.Refused`, which Hydra does not turn into a warning as it does an Exception."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        directory = self._note(config, "hydra.run.dir")
        if directory is not None and world_from_env().is_main:  # (under torchrun rank 0 may have made it already)
            refuse(check_run_dir, directory)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        directory = self._note(config, "hydra.sweep.dir", jobs=True)
        if directory is not None:
            refuse(check_sweep_dir, directory, sweep_files(config))

    @staticmethod
    def _note(config: Any, key: str, jobs: bool = False) -> str | None:
        """Note what the dir at ``key`` holds; returns the dir (None where the config cannot say)."""
        _FOUND.clear()
        directory = resolved_dir(config, key)
        if directory is not None:
            _note(directory, jobs)
        return directory


def resolved_dir(config: Any, key: str) -> str | None:
    """The dir at ``key`` (``hydra.run.dir``, ``hydra.sweep.dir``) of a Hydra config before Hydra made it; None where
    the config cannot say (a bad config: Hydra reports it when it resolves the dir itself)."""
    before = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(config)  # (what run_job does next; ${hydra:...} in the dir needs it)
        return str(OmegaConf.select(config, key))
    except Exception:  # noqa: BLE001
        return None
    finally:
        HydraConfig.instance().cfg = before


def refuse(check, *args) -> None:
    """Run ``check``; its UserError becomes :class:`Refused`, which passes through Hydra's callbacks to cli()."""
    try:
        check(*args)
    except UserError as err:
        raise Refused(err) from err


def sweep_files(config: Any) -> tuple[str, ...]:
    """The names of the files a search keeps in its sweep dir (its storage there), as :func:`check_sweep_dir` takes
    them."""
    before = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(config)
        storage = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
        sweep_dir = os.path.abspath(str(OmegaConf.select(config, "hydra.sweep.dir")))
    except Exception:  # noqa: BLE001 - the sweeper reports a bad storage
        return ()
    finally:
        HydraConfig.instance().cfg = before
    path = storage_path(storage) if isinstance(storage, str) else None
    return (path.name,) if path is not None and os.path.dirname(os.path.abspath(path)) == sweep_dir else ()


def storage_path(storage: str) -> Path | None:
    """The file of a search's storage (``journal:<file>``, ``sqlite:///<file>``), or None (a database server)."""
    if storage.startswith("journal:"):
        return Path(storage[len("journal:"):].strip()).expanduser()
    if storage.startswith("sqlite:///") and storage[len("sqlite:///"):] not in ("", ":memory:"):
        return Path(storage[len("sqlite:///"):].split("?")[0]).expanduser()
    return None


# --- one process at a time -------------------------------------------------------------------------------------


class RunDirInUse(UserError):
    """Another ``mpl-run`` holds the run dir's lock."""


def _lock_holder(fd: int) -> int | None:
    """The pid holding an flock on ``fd``'s file, from /proc/locks (Linux); None where it cannot be told."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 9215 fe:00:2146559 0 EOF" (waiters show "->" after "1:")
        fields = line.split()
        if ident in fields and "FLOCK" in fields and "->" not in fields:
            pid = fields[fields.index(ident) - 1]
            return int(pid) if pid.isdigit() and int(pid) > 0 else None
    return None


@contextlib.contextmanager
def locked(run_dir: Path, enabled: bool = True, holder: str = "mpl-run") -> Iterator[None]:
    """Hold ``run_dir/.lock`` while the block runs; another process holding it raises :class:`RunDirInUse`,
    having written nothing. The lock file is left in place (removing it would race with a process opening it).
    ``holder``: what the message calls the other process (a sweep dir's lock: "mpl-run sweep")."""
    if not enabled:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)  # (Hydra made it already; :func:`mpl_runner.loop.run.run` may not have)
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        yield  # a dir nobody can write in: nothing to guard (a finished run requeued read-only)
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _lock_holder(fd)
            raise RunDirInUse(
                f"{run_dir} is in use by another {holder}{f' (pid {pid})' if pid else ''}; wait until it ends"
            ) from None
        yield
    finally:
        os.close(fd)  # (releases the lock)


# --- a run dir that goes away mid-run ----------------------------------------------------------------------------


class RunDirGone(Exception):
    """The run dir was deleted or became unwritable while the run went on: a fault (exit status 1), not a user
    mistake; nothing more is written (a record there could point at a checkpoint that is gone)."""


def require_usable(run_dir: Path) -> None:
    """Raise :class:`RunDirGone` where ``run_dir`` is no longer a dir this process can write in."""
    if not run_dir.is_dir():
        raise RunDirGone(f"the run dir {run_dir} was deleted while the run went on; it stopped, writing nothing more")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirGone(f"the run dir {run_dir} became unwritable while the run went on; it stopped, writing "
                         "nothing more")


# --- temp files of killed writes -------------------------------------------------------------------------------


def _written_here(folder: str, name: str) -> bool:
    """Whether a run writes ``name`` atomically in ``folder`` ("" for the run dir itself)."""
    if folder == "":
        return name in ("metrics.json", "labeled_indices.json") or name.endswith(".png")
    return Path(folder, name) == CHECKPOINT


def remove_orphans(run_dir: Path) -> list[str]:
    """Remove the temp files an atomic write killed midway left in ``run_dir`` and its ``checkpoints/``: only
    ``.<name>.<8 random characters>.tmp`` beside a file a run writes there. Call it holding the run dir's lock
    (no write of ours is under way then). Returns what it removed, relative to ``run_dir``."""
    removed = []
    for folder in ("", str(CHECKPOINT.parent)):
        directory = run_dir / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            target = temp_target(path.name)
            if target is None or not _written_here(folder, target) or path.is_symlink() or not path.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(str(path.relative_to(run_dir)))
    return removed


# --- after a refused command ------------------------------------------------------------------------------


def discard_if_unused(run_dir: Path) -> None:
    """After a user error: remove what this command created in ``run_dir``, by name, and nothing else: the record
    Hydra wrote for this job, its log file and lock file if this command made them, and the run dir if this
    command made it and it is empty then (a resume that failed leaves the resumed run as it was; a dir of the
    user's keeps every file). What the run dir held before is what :class:`mpl_runner.record.run_dirs.NoteRunDir` saw;
    where nothing was noted, nothing is taken for this command's own. Every rank may call it."""
    hydra_cfg = HydraConfig.get()
    found = found_before(run_dir)
    if found is None:
        return
    with contextlib.suppress(OSError):  # (another rank may be removing the same things)
        record = hydra_cfg.output_subdir
        if record is not None and found.made(str(Path(record))):
            shutil.rmtree(run_dir / record)  # a record dir this command made holds nothing but its record
        elif record is not None and Path(record) == Path(".hydra"):
            for name in RECORD_FILES:
                if found.made(f".hydra/{name}"):
                    (run_dir / ".hydra" / name).unlink(missing_ok=True)
        if found.made(".hydra") and (run_dir / ".hydra").is_dir() and not any((run_dir / ".hydra").iterdir()):
            (run_dir / ".hydra").rmdir()
        for name in (f"{hydra_cfg.job.name}.log", LOCK_NAME):
            if found.made(name):
                (run_dir / name).unlink(missing_ok=True)
        if not found.existed and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
            # and the folders Hydra made above it (outputs/runs/), where nothing else is in them now
            folder = Path(os.path.abspath(run_dir))
            while found.top is not None and folder != Path(found.top) and Path(found.top) in folder.parents:
                folder = folder.parent
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
                else:
                    break


def _stat(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.exists() else None


def written(run_dir: Path) -> tuple:
    """What tells whether a run wrote its record or trained: its ``metrics.json`` and checkpoint, as they are."""
    return _stat(run_dir / "metrics.json"), _stat(run_dir / CHECKPOINT)
