"""Every key of the composed config, every config group and every path a run reads or writes, against the values
a user gets wrong. Each case is either accepted (a value the key allows) or ends like every user mistake: exit
status 2, one stderr line ``mpl-run: error: `` that names the key, no traceback, and nothing left behind.

The table walks the config ``mpl-run`` composes for two moons (MLP, MPL), digits (small CNN), CIFAR-10
(WideResNet, on a fake data set) and CIFAR-10 with a timm model, one case list per schema field
(``dataset.num_labeled`` is a field of each data set's schema; the root's ``student_model`` is null): a value of
the wrong type, out-of-range values (negative, huge, nan, inf), ``null``, an empty value (``key=`` and ``key=''``),
``???``, an interpolation that does not resolve, and for ``<group>.name`` another option's name. Accepted are
``null`` where the schema says Optional (or Any) and a huge count where :data:`HUGE_OK` says why; everything else
is refused. Config groups get null, empty, a number and an unknown name; ``dataset.root``, ``trainer.resume`` and
``hydra.run.dir`` a file, a missing path, an unreadable and an unwritable one: for real where permissions stop this
user, simulated (:func:`as_if_mode`) for root, whom they do not stop.

Size and speed: the table runs 1222 cases (115 schema fields, 96 keys) in about 20 s; with the groups (35), paths
(18), files and the rest (9) the module runs 1284 tests in about 35 s. Accepted values are not trained. A value is
applied to the composed config as Hydra applies an override (its own ``_apply_overrides_to_config``) and validated,
which yields the very line ``mpl-run`` prints for it; the real ``cli()`` (in-process, 44 times) runs for the first
refused case of each (data set, kind of value, stage that refuses it), for every value that only building the run
refuses, and for every case of a path key; and for every group, path and file case.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import errno
import io
import logging
import os
import shutil
import sys
import typing
from pathlib import Path

import pytest
import torch
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from conftest import TINY, finished_in_process
from mpl_runner.core import files
from mpl_runner.record import checkpoint
from mpl_runner.gates.messages import one_line_error
from mpl_runner.cli.config import compose_config
from mpl_runner.core.registry import entries
from mpl_runner.data import build_dataset
from mpl_runner.core.errors import UserError
from mpl_runner.gates.validate import validate, validate_overrides
from test_bad_inputs import run_cli, tree
from test_cifar10_data import write_fake_cifar10
from test_cifar10_run import TINY_CIFAR

ROOT = "{root}"  # stands for the fake CIFAR-10 folder (the fixture below) in the arguments of a case
QUICK = ["trainer.steps=1", "trainer.eval_interval=1", "trainer.log_interval=1", "trainer.progress=false",
         "device=cpu"]
BASES = {
    "two_moons": QUICK,
    "digits": [*QUICK, "dataset=digits", "model=small_cnn"],
    "cifar10": [*TINY_CIFAR, f"dataset.root={ROOT}", "trainer.steps=1", "trainer.progress=false"],
    "timm": [*(o for o in TINY_CIFAR if not o.startswith("model")), f"dataset.root={ROOT}", "trainer.steps=1",
             "trainer.progress=false", "model=timm", "model.name=test_resnet"],
}
HUGE = 2**40
#: counts that may be huge, and why (schema class.field); every other integer is bounded
HUGE_OK = {
    "TrainerConfig.steps": "a long run",
    "TrainerConfig.eval_interval": "longer than the run: at the end only",
    "TrainerConfig.log_interval": "longer than the run: at the end only",
    "TrainerConfig.checkpoint_interval": "longer than the run: at the end only",
    "TrainerConfig.progress_interval": "longer than the run: at evaluations only",
    "TwoMoonsConfig.unlabeled_batch_size": "above the set's size: the whole set each step",
    "DigitsConfig.unlabeled_batch_size": "above the set's size: the whole set each step",
    "Cifar10Config.eval_batch_size": "above the test set's size: one batch",
    "OptimConfig.warmup_steps": "a warmup longer than the run",
    "FinetuneConfig.warmup_steps": "a warmup longer than the run",
    "MPLConfig.student_warmup_steps": "a warmup longer than the run",
    "UDALossConfig.ramp_steps": "a ramp longer than the run",
    "FinetuneConfig.batch_size": "unused: method.finetune.steps=0",
}
#: keys whose value names a path: every case of theirs runs the CLI (the run dir is resolved from trainer.resume
#: before the task's config is validated, and dataset.root is read only when the data is built)
PATH_KEYS = {"dataset.root", "trainer.resume"}
COMMON = [("null", "null"), ("empty", ""), ("empty", "''"), ("missing", "???"), ("interpolation", "${nope}")]
VALUES = {
    int: [("type", "ten"), ("type", "1.5"), ("type", "true"), ("type", "[1]"), ("range", "-1"),
          ("range", str(HUGE))],
    float: [("type", "ten"), ("type", "true"), ("type", "[0.5]"), ("range", "-1"), ("range", "nan"),
            ("range", "inf"), ("range", "-inf")],
    bool: [("type", "2"), ("type", "1"), ("type", "yes"), ("type", "maybe"), ("type", "[true]")],
    str: [("type", "3"), ("type", "[a]"), ("value", "bogus")],
    list[int]: [("type", "abc"), ("type", "5"), ("type", "[[64]]"), ("type", "[a]"), ("type", "[1.5]"),
                ("type", "[true]"), ("range", "[-1]"), ("range", "[0]"), ("range", f"[{HUGE}]"), ("range", "[]")],
    list[float]: [("type", "abc"), ("type", "[[0.1],[0.2]]"), ("type", "[a,b]"), ("range", "[-1,0.5]"),
                  ("range", "[nan,0.5]"), ("range", "[0.5,inf]"), ("range", "[0.5,0.1]"), ("range", "[]"),
                  ("range", "[0.1]")],
    dict[str, typing.Any]: [("type", "5"), ("type", "abc"), ("type", "[1]"), ("value", "{no_such_argument: 1}")],
    typing.Any: [("type", "3"), ("type", "[a]"), ("value", "bogus"), ("value", "{name: mlp}")],  # student_model
}


def compose_base(overrides: list[str]):
    return compose_config(*overrides)


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict) and value:  # (an empty mapping, model.kwargs, is a value of its own)
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def schema_field(cfg, key: str) -> tuple[str, typing.Any]:
    """``(schema class.field, type hint)`` of ``key``, from the dataclass the composed node was made from."""
    parent_key, _, name = key.rpartition(".")
    schema = OmegaConf.get_type(OmegaConf.select(cfg, parent_key) if parent_key else cfg)
    return f"{schema.__name__}.{name}", typing.get_type_hints(schema)[name]


def is_optional(hint) -> bool:
    return typing.get_origin(hint) is typing.Union and type(None) in typing.get_args(hint)


def value_type(hint):
    if is_optional(hint):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def expected(field: str, hint, category: str, value: str) -> str:
    if category == "null" and (is_optional(hint) or hint is typing.Any):  # (Any: student_model, null by default)
        return "accept"
    if category == "range" and value == str(HUGE) and field in HUGE_OK:
        return "accept"
    return "refuse"


def other_name(cfg, key: str) -> list[tuple[str, str]]:
    """For ``dataset.name``, ``model.name`` and ``method.name``: the name of another option of the group (the way
    to pick one is ``dataset=<option>``; its name alone would leave this option's keys)."""
    group, _, field = key.partition(".")
    if field != "name" or group not in ("dataset", "model", "method"):
        return []
    return [("value", next(n for n in entries(group) if n != cfg[group].name))]


def build_table() -> tuple[dict, dict]:
    cfgs = {name: compose_base([o.replace(ROOT, "data") for o in overrides]) for name, overrides in BASES.items()}
    table, seen = {}, set()
    for base, cfg in cfgs.items():
        for key in _leaves(OmegaConf.to_container(cfg, resolve=False)):
            field, hint = schema_field(cfg, key)
            if field in seen:
                continue
            seen.add(field)
            for category, value in VALUES[value_type(hint)] + other_name(cfg, key) + COMMON:
                table[f"{base}:{key}={value}"] = (base, key, f"{key}={value}", category,
                                                  expected(field, hint, category, value))
    return table, cfgs


TABLE, BASE_CFGS = build_table()
PARSER = OverridesParser.create()


def refusal(base: str, override: str) -> tuple[str, str] | None:
    """``(stage, message)``: what ``mpl-run`` says (less ``mpl-run: error: ``) when it refuses ``override`` on
    the base config while composing or validating it; None when the config passes both."""
    cfg = copy.deepcopy(BASE_CFGS[base])
    try:
        ConfigLoaderImpl._apply_overrides_to_config(PARSER.parse_overrides([override]), cfg)
    except Exception as err:  # noqa: BLE001 - whatever Hydra raises, cli() must turn it into one line
        message = one_line_error(err)
        assert message is not None, f"{override}: {type(err).__name__}: {err} would end in a traceback"
        return "compose", message
    try:
        validate_overrides(cfg, [*(o.replace(ROOT, "data") for o in BASES[base]), override])
        validate(cfg)
    except UserError as err:
        return "validate", str(err)
    return None


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar10(root)
    return root


def base_args(base: str, root: Path) -> list[str]:
    return [o.replace(ROOT, str(root)) for o in BASES[base]]


def refused_by_cli(args: list[str], tmp: Path, monkeypatch, capsys, key: str, cwd: Path | None = None,
                   watch: Path | None = None) -> str:
    """Run ``mpl-run *args`` in-process in ``cwd`` (``tmp``); assert that it refused them as a user's mistake
    naming ``key`` and left ``watch`` (``tmp``) as it was; return its line."""
    watch = watch or tmp
    before = tree(watch)
    status, stderr = run_cli(args, cwd or tmp, monkeypatch, capsys)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("mpl-run: error: "), (status, stderr)
    assert "Traceback" not in stderr and key in lines[0], stderr
    assert tree(watch) == before, "files were left behind or changed"
    return lines[0]


_SAMPLED: set[tuple[str, str, str]] = set()


def test_the_table_covers_every_key_with_every_kind_of_value():
    """Every leaf key of each base config (nested ones such as method.uda.* and method.finetune.* included) has its
    schema field in the table, with every value its type gets and the common ones. Mutant caught: a table builder
    that skips nested keys, a type, or a category (a count of cases > 1000 alone passes all of them)."""
    fields = {(b, k) for b, k, *_ in TABLE.values()}
    print(f"\nthe table runs {len(TABLE)} cases: {len(fields)} schema fields, {len({k for _, k in fields})} keys")
    covered = {}
    for base, key, override, category, _ in TABLE.values():
        covered.setdefault(schema_field(BASE_CFGS[base], key)[0], set()).add(override.split("=", 1)[1])
    for base, cfg in BASE_CFGS.items():
        for key in _leaves(OmegaConf.to_container(cfg, resolve=False)):
            field, hint = schema_field(cfg, key)
            values = {value for _, value in VALUES[value_type(hint)] + COMMON + other_name(cfg, key)}
            assert field in covered, f"{base}: {key} ({field}) has no case"
            assert values <= covered[field], f"{field}: no case for {sorted(values - covered[field])}"
    for key in ("method.uda.threshold", "method.finetune.from_ema", "method.feedback_batch", "dataset.pad_mode"):
        assert any(k == key for _, k, *_ in TABLE.values()), key


@pytest.mark.parametrize("case", list(TABLE))
def test_every_key(case, request):
    base, key, override, category, outcome = TABLE[case]
    found = refusal(base, override)
    if outcome == "accept":
        assert found is None, f"{override} is allowed, but refused: {found}"
        return

    def cli_refuses() -> str:  # (the fixtures a CLI run needs, only then: a tmp dir for each case costs)
        tmp, root = request.getfixturevalue("tmp_path"), request.getfixturevalue("fake_root")
        args = [*base_args(base, root), override, f"hydra.run.dir={tmp / 'run'}"]
        return refused_by_cli(args, tmp, request.getfixturevalue("monkeypatch"), request.getfixturevalue("capsys"),
                              key)

    if found is None or key in PATH_KEYS:  # refused, if at all, where the run reads its files or names its dir
        cli_refuses()
        return
    stage, message = found
    assert "\n" not in message and key in message, message
    if (base, category, stage) not in _SAMPLED:  # the CLI prints this very line, and changes nothing
        _SAMPLED.add((base, category, stage))
        assert cli_refuses() == f"mpl-run: error: {message}"


# --- config groups ---------------------------------------------------------------------------------------------

GROUPS = ["dataset", "model", "method", "optim", "trainer", "experiment", "hparams_search"]


@pytest.mark.parametrize("value", ["null", "", "''", "3", "bogus"])
@pytest.mark.parametrize("group", GROUPS)
def test_every_group(group, value, tmp_path, monkeypatch, capsys):
    refused_by_cli([*QUICK, f"{group}={value}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, monkeypatch,
                   capsys, group)


# --- paths: permissions as a user other than root sees them ------------------------------------------------------

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


@contextlib.contextmanager
def as_if_mode(folder: Path, mode: str):
    """Act, in this process, as if ``folder`` had mode ``000`` (nothing in it can be listed, read or written) or
    ``555`` (nothing in it can be created, written, renamed or removed), for a user who is not root."""
    top = os.path.abspath(folder)

    def inside(path) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False  # a file descriptor
        return os.path.abspath(os.fsdecode(path)).startswith(top + os.sep)

    def deny(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real = {name: getattr(os, name) for name in
            ("stat", "lstat", "listdir", "scandir", "open", "mkdir", "unlink", "remove", "rmdir", "rename",
             "replace", "access")}
    real_open = io.open

    def guard(name, refuses):
        def guarded(*args, **kwargs):
            if args and refuses(*args, **kwargs):
                deny(args[0])
            return real[name](*args, **kwargs)

        return guarded

    def opens(path, mode_="r", *args, **kwargs):
        writes = any(c in mode_ for c in "wax+")
        if inside(path) and (mode == "000" or writes):
            deny(path)
        return real_open(path, mode_, *args, **kwargs)

    def access(path, how, *args, **kwargs):
        if os.path.abspath(os.fsdecode(path)) == top and (mode == "000" and how != os.F_OK or how & os.W_OK):
            return False
        return False if mode == "000" and inside(path) else real["access"](path, how, *args, **kwargs)

    sealed = mode == "000"
    this_or_inside = lambda path, *a, **k: inside(path) or (  # noqa: E731
        isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)) == top)
    with pytest.MonkeyPatch.context() as mp:
        if sealed:
            mp.setattr(os, "stat", guard("stat", lambda p, *a, **k: inside(p)))
            mp.setattr(os, "lstat", guard("lstat", lambda p, *a, **k: inside(p)))
            mp.setattr(os, "listdir", guard("listdir", this_or_inside))
            mp.setattr(os, "scandir", guard("scandir", this_or_inside))
        mp.setattr(os, "open", guard("open", lambda p, flags, *a, **k: inside(p) and (sealed or flags & WRITE_FLAGS)))
        for name in ("mkdir", "unlink", "remove", "rmdir", "rename", "replace"):
            mp.setattr(os, name, guard(name, lambda p, *a, **k: inside(p)))
        mp.setattr(os, "access", access)
        mp.setattr(io, "open", opens)
        mp.setattr(builtins, "open", opens)
        mp.setattr(logging.FileHandler, "_builtin_open", opens, raising=False)  # (3.12 on; 3.11 calls open())
        yield


def with_mode(folder: Path, mode: str):
    """``folder`` with ``mode``: for real where permissions stop this user (not root), else simulated."""
    if os.geteuid() != 0:
        @contextlib.contextmanager
        def real():
            folder.chmod(int(mode, 8))
            try:
                yield
            finally:
                folder.chmod(0o755)

        return real()
    return as_if_mode(folder, mode)


def fake_run_dir(folder: Path) -> Path:
    """A run dir as far as trainer.resume can tell (Hydra's record, no checkpoint)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return folder


PATH_CASES = {
    # dataset.root: the folder that holds cifar-10-batches-py/
    "dataset.root: a file": ("dataset.root", lambda tmp, root: [f"dataset.root={_file(tmp)}"], None),
    "dataset.root: missing": ("dataset.root", lambda tmp, root: [f"dataset.root={tmp / 'nowhere'}"], None),
    "dataset.root: unreadable": ("dataset.root", lambda tmp, root: [f"dataset.root={root}"],
                                 lambda tmp, root: ("000", root / "cifar-10-batches-py")),
    "dataset.root: unreadable parent": ("dataset.root", lambda tmp, root: [f"dataset.root={root}"],
                                        lambda tmp, root: ("000", root.parent)),
    # trainer.resume: a run dir of mpl-run
    "trainer.resume: a file": ("trainer.resume", lambda tmp, root: [f"trainer.resume={_file(tmp)}"], None),
    "trainer.resume: missing": ("trainer.resume", lambda tmp, root: [f"trainer.resume={tmp / 'nowhere'}"], None),
    "trainer.resume: unreadable": ("trainer.resume",
                                   lambda tmp, root: [f"trainer.resume={fake_run_dir(tmp / 'old')}"],
                                   lambda tmp, root: ("000", tmp / "old")),
    "trainer.resume: unwritable": ("trainer.resume",
                                   lambda tmp, root: [f"trainer.resume={fake_run_dir(tmp / 'old')}"],
                                   lambda tmp, root: ("555", tmp / "old")),
    # hydra.run.dir: where the run writes
    "hydra.run.dir: a file": ("hydra.run.dir", lambda tmp, root: [f"hydra.run.dir={_file(tmp)}"], None),
    "hydra.run.dir: under a file": ("hydra.run.dir", lambda tmp, root: [f"hydra.run.dir={_file(tmp)}/run"], None),
    # (an empty dir: one that holds files of the user's is refused as such, tests/test_bad_inputs.py)
    "hydra.run.dir: unreadable": ("hydra.run.dir", lambda tmp, root: [f"hydra.run.dir={_empty(tmp)}"],
                                  lambda tmp, root: ("000", tmp / "empty")),
    "hydra.run.dir: unwritable": ("hydra.run.dir", lambda tmp, root: [f"hydra.run.dir={_empty(tmp)}"],
                                  lambda tmp, root: ("555", tmp / "empty")),
    "hydra.run.dir: in an unwritable folder": ("hydra.run.dir",
                                               lambda tmp, root: [f"hydra.run.dir={_mine(tmp)}/run"],
                                               lambda tmp, root: ("555", tmp / "mine")),
    "hydra.run.dir: empty": ("hydra.run.dir", lambda tmp, root: ["hydra.run.dir="], None),
    "hydra.run.dir: empty string": ("hydra.run.dir", lambda tmp, root: ["hydra.run.dir=''"], None),
    "hydra.run.dir: null": ("hydra.run.dir", lambda tmp, root: ["hydra.run.dir=null"], None),
    "hydra.run.dir: interpolation": ("hydra.run.dir", lambda tmp, root: ["hydra.run.dir=${nope}"], None),
    "hydra.run.dir: a list": ("hydra.run.dir", lambda tmp, root: ["hydra.run.dir=[a]"], None),
}


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir(exist_ok=True)
    return tmp / "empty"


def _file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("mine\n")
    return tmp / "notes.txt"


def _mine(tmp: Path) -> Path:
    (tmp / "mine").mkdir(exist_ok=True)
    (tmp / "mine" / "notes.txt").write_text("mine\n")
    return tmp / "mine"


@pytest.mark.parametrize("case", list(PATH_CASES))
def test_every_path(case, tmp_path, monkeypatch, capsys):
    key, make, deny = PATH_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    root = tmp_path / "data" / "root"  # a copy of the fake data set that this case may make unreadable
    if key == "dataset.root":
        write_fake_cifar10(root)
    base = "cifar10" if key == "dataset.root" else "two_moons"
    args = [*base_args(base, root), *make(work, root)]
    if not any(a.startswith("hydra.run.dir=") for a in args) and key != "trainer.resume":
        args.append(f"hydra.run.dir={work / 'run'}")
    mode, folder = deny(work, root) if deny else (None, None)
    with with_mode(folder, mode) if deny else contextlib.nullcontext():
        line = refused_by_cli(args, work, monkeypatch, capsys, key, watch=tmp_path)
    if deny:
        assert "ermission denied" in line or "read-only" in line, line


def test_an_unwritable_data_folder_is_read(fake_root):
    """dataset.root is only read (without dataset.download): a folder this user cannot write in is fine."""
    cfg = compose_base([*base_args("cifar10", fake_root)])
    with with_mode(fake_root / "cifar-10-batches-py", "555"):
        data = build_dataset(cfg.dataset, torch.device("cpu"))
    assert data.num_classes == 10


def test_a_missing_run_dir_is_allowed():
    """hydra.run.dir that does not exist yet is the usual case (every run test makes one)."""
    assert refusal("two_moons", "trainer.steps=1") is None


# --- files: a full disk, a checkpoint this user may not read ------------------------------------------------------


def disk_full_from(monkeypatch, first: int) -> list[Path]:
    """Every atomic write from the ``first``-th on (1-based) fails with ENOSPC, as on a disk that filled up; returns
    the paths written until then."""
    real, written = files.atomic_write_bytes, []

    def write(path, data):
        if len(written) + 1 >= first:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(Path(path))
        real(path, data)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("mpl_runner") and \
                getattr(module, "atomic_write_bytes", None) is real:
            monkeypatch.setattr(module, "atomic_write_bytes", write)
    return written


STEPS4 = ["trainer.steps=4", "trainer.eval_interval=2", "trainer.log_interval=2", "trainer.checkpoint_interval=2",
          "trainer.progress=false", "device=cpu"]


@pytest.mark.parametrize("when,first", [("at start", 1), ("at a checkpoint", 3), ("at the end", 4)])
def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(when, first, tmp_path, monkeypatch, capsys):
    written = disk_full_from(monkeypatch, first)
    run_dir = tmp_path / "run"
    before = tree(tmp_path)
    status, stderr = run_cli([*STEPS4, f"hydra.run.dir={run_dir}"], tmp_path, monkeypatch, capsys)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"mpl-run: error: the disk is full: could not write {run_dir}"), stderr
    saved = [p for p in written if p.name == "last.pt"]
    if not saved:  # nothing trained: nothing left
        assert tree(tmp_path) == before
        return
    state = checkpoint.load(run_dir / "checkpoints" / "last.pt", torch.device("cpu"))
    assert state["step"] == 2 * len(saved)  # the last checkpoint that was written whole
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "run.log").is_file()


def test_atomic_write_names_the_file_when_the_disk_fills(tmp_path, monkeypatch):
    """write() and fsync() report a full disk without a file name; the error names the file being written."""
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(files.DiskFull, match=f"the disk is full: could not write {tmp_path / 'x.json'}"):
        files.atomic_write_json(tmp_path / "x.json", {})
    assert list(tmp_path.iterdir()) == []  # no temp file left


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return finished_in_process(tmp_path_factory.mktemp("finished"), *TINY, "trainer.progress=false")


@pytest.mark.parametrize("how", ["resume", "reuse"])
def test_a_checkpoint_that_cannot_be_read_is_a_permission_problem(how, finished, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    real_open = io.open

    def opens(path, *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(path) == str(last):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    if os.geteuid() != 0:
        last.chmod(0)
    else:
        monkeypatch.setattr(io, "open", opens)
        monkeypatch.setattr(builtins, "open", opens)
    target = f"trainer.resume={run_dir}" if how == "resume" else f"hydra.run.dir={run_dir}"
    line = refused_by_cli([*TINY, "trainer.progress=false", target], tmp_path, monkeypatch, capsys,
                          "last.pt", watch=run_dir)
    assert "ermission denied" in line and "truncated" not in line, line
