"""Checks of a composed config that types alone cannot express; run before anything is built or written.

The options of ``dataset``, ``model`` and ``method`` check their own keys through their registry hooks
(:mod:`mpl_runner.core.registry`: ``check``, ``unfit``, ``check_distributed``, ``lr_warnings``...); this module calls
those hooks, checks ``trainer``, ``optim`` and ``device``, and keeps what spans groups: that the chosen names are
registered options, that the model (and a student, ``student_model``) takes the data set's inputs, and that
torchrun's ranks split every batch. docs/design.md section 5 lists every gate where input is checked, and why there.
Each failure raises :class:`ConfigError` naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import contextmanager

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import BooleanNode

from mpl_runner.core.checks import SEEDS, count, get, one_of, positive, warmup_warning
from mpl_runner.core.errors import ConfigError, UserError
from mpl_runner.methods.optim import check_optimizer
from mpl_runner.core.provenance import usable_cores
from mpl_runner.core.registry import entries, entry_of

GROUPS = ("dataset", "model", "method")
#: how a user picks the option of a config key (``student_model`` is set by Hydra's group@package syntax)
CHOOSE = {"dataset": "dataset=", "model": "model=", "method": "method=", "student_model": "model@student_model="}


def reject_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """Hydra's ``+key=value`` can add keys that no schema has; nothing would read them, so refuse them."""
    schema = OmegaConf.get_type(node)
    allowed = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node.keys():
        if allowed is not None and key not in allowed:
            raise UserError(f"{prefix}{key} is not a config key; the keys there are: {', '.join(allowed)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            reject_unknown_keys(child, f"{prefix}{key}.")


def validate_seeds(cfg) -> None:
    for key in ("seed", "dataset.split_seed", "dataset.test_seed", "dataset.val_seed"):
        if key == "seed" or key.split(".")[1] in cfg.dataset:
            count(cfg, key, *SEEDS, why=" (numpy's seeds)")


def option_keys(cfg) -> list[tuple[str, str]]:
    """``(key, group)`` of every chosen option: dataset, model, method, and MPL's own student where it is set."""
    keys = [(group, group) for group in GROUPS]
    return keys + [("student_model", "model")] if cfg.get("student_model") is not None else keys


def validate_names(cfg) -> None:
    """Each chosen option was composed from a registered option of its group (known by its schema), and its
    ``name`` is that option's: another name would make the run read keys that option does not have. (An option
    whose ``name`` says something else, ``model=timm``'s architecture, checks it itself.)"""
    for key, group in option_keys(cfg):
        node = cfg[key]
        try:
            option = entry_of(group, node)
        except LookupError:
            value = OmegaConf.to_container(node) if isinstance(node, DictConfig) else node
            allowed = f"an option of {group}, chosen with {CHOOSE[key]}<option>" + (
                " (or null: the same model as the teacher)" if key == "student_model" else "")
            raise ConfigError(key, value, allowed) from None
        if option.fixed_name and node.name != option.name:
            raise ConfigError(f"{key}.name", node.name,
                              f"{option.name} (choose another {group} with {CHOOSE[key]}<option>, not with its name)")


def model_view(cfg, key: str) -> DictConfig:
    """``cfg`` with ``model`` replaced by ``cfg[key]``: a model option's hooks read ``model.*``, and its student
    (``student_model``) is checked by the same hooks."""
    if key == "model":
        return cfg
    view = cfg.copy()
    view.model = cfg[key]
    return view


@contextmanager
def renamed(key: str):
    """Errors about ``model`` or ``model.*`` in the block name ``key`` instead (the checks of a model option name
    ``model``; run on a view of the student, they speak of ``student_model``)."""
    try:
        yield
    except ConfigError as err:
        if key == "model" or err.key.split(".")[0] != "model":
            raise
        raise ConfigError(key + err.key[len("model"):], err.value, err.allowed) from None


def resolvable(cfg) -> None:
    """Every value is set (not ``???``) and every interpolation resolves: otherwise whatever reads the key first
    fails with a traceback. Names the key whose own value fails, not those that merely refer to it (``${seed}``)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        return
    except OmegaConfBaseException:
        pass
    raw = dict(_leaves(OmegaConf.to_container(cfg, resolve=False)))
    failed = {}
    for key in raw:
        try:
            node = OmegaConf.select(cfg, key, throw_on_missing=True)
            if isinstance(node, ListConfig):
                OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except OmegaConfBaseException as err:
            failed[key] = err
    for key, err in failed.items():
        if not any(ref in failed for ref in re.findall(r"\$\{([\w.]+)\}", str(raw[key]))):
            if raw[key] == "???":
                raise ConfigError(key, raw[key], "a value (??? stands for none)")
            raise ConfigError(key, raw[key], f"an interpolation that resolves ({str(err).splitlines()[0]})")


def _leaves(node, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate(cfg: DictConfig) -> None:
    reject_unknown_keys(cfg)
    resolvable(cfg)
    validate_seeds(cfg)
    validate_names(cfg)
    validate_trainer(cfg)
    validate_device(cfg.device)
    check_optimizer(cfg, "optim")
    positive(cfg, "optim.grad_clip", optional=True)
    for key, group in option_keys(cfg):
        with renamed(key):
            entry_of(group, cfg[key]).check(model_view(cfg, key) if group == "model" else cfg)
    validate_student(cfg)
    validate_model_fits_data(cfg)


def validate_trainer(cfg) -> None:
    for key in ("trainer.steps", "trainer.eval_interval", "trainer.log_interval"):
        positive(cfg, key)
    count(cfg, "trainer.num_threads", 1, 1024, optional=True)
    positive(cfg, "trainer.progress_interval", optional=True)
    positive(cfg, "trainer.checkpoint_interval", optional=True)
    one_of(cfg, "trainer.amp", ("none", "bf16", "fp16", "auto"))


def validate_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise ConfigError("device", device, "auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device", device, "auto or cpu: CUDA is not available on this machine")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError("device", device, f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def input_shape(cfg) -> tuple[int, ...]:
    """The shape of one input of the chosen data set, from its config alone."""
    shape = entry_of("dataset", cfg.dataset).input_shape
    return tuple(shape(cfg)) if shape is not None else ()


def validate_student(cfg) -> None:
    """``student_model`` is chosen only for a method that trains a student of its own (``trains_student``)."""
    if cfg.student_model is not None and not entry_of("method", cfg.method).trains_student:
        students = " or ".join(f"method={name}" for name, e in entries("method").items() if e.trains_student)
        raise ConfigError("student_model", cfg.student_model.name,
                          f"null with method={cfg.method.name} (only {students} trains a student; "
                          "drop model@student_model=...)")


def validate_model_fits_data(cfg) -> None:
    """The model and the student take the data set's inputs (image models need images of their channels and
    size)."""
    shape = input_shape(cfg)
    for key in [k for k, group in option_keys(cfg) if group == "model"]:
        view = model_view(cfg, key)
        unfit = entry_of("model", cfg[key]).unfit(view, shape)
        if unfit is not None:
            found, allowed = unfit
            value = view.model.name if found == "model" else OmegaConf.select(view, found)
            value = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
            with renamed(key):
                raise ConfigError(found, value, allowed)


def validate_overrides(cfg, overrides) -> None:
    """What only the command line shows: OmegaConf turns any number into a bool (``trainer.compile=2`` is true),
    and yes/no/on/off too; an override of a bool key must say true or false."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # (Hydra's own parser, as it read them)

    lines = OmegaConf.to_container(overrides) if isinstance(overrides, ListConfig) else list(overrides)  # (unresolved)
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_delete() or override.is_sweep_override():
            continue
        parent_key, _, name = override.key_or_group.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        node = parent._get_node(name) if isinstance(parent, DictConfig) and name in parent else None
        if isinstance(node, BooleanNode) and not node._is_interpolation() and not isinstance(override.value(), bool):
            raise ConfigError(override.key_or_group, override.value(), "true or false")


def validate_world(cfg, world) -> None:
    """Under torchrun: each global batch splits evenly over the ranks, and the method's own refusals
    (``check_distributed``: exact MPL runs on one process only)."""
    if not world.distributed:
        return
    sizes = {**entry_of("dataset", cfg.dataset).batch_sizes(cfg), **entry_of("method", cfg.method).batch_sizes(cfg)}
    for key, size in sizes.items():
        if size % world.size:
            raise ConfigError(key, get(cfg, key), f"a global batch ({size}) divisible by the {world.size} ranks")
    entry_of("method", cfg.method).check_distributed(cfg)
    import torch

    on_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.trainer.sync_batchnorm and not on_cuda:
        raise ConfigError("trainer.sync_batchnorm", True, "false on the CPU (PyTorch's SyncBatchNorm needs CUDA)")


def config_warnings(cfg, device_type: str, amp: str, distributed: bool) -> list[str]:
    """Settings that run, but hardly as meant: the run logs each once, as a warning (console and run.log).
    ``amp``: the precision ``trainer.amp`` resolved to on ``device_type``; ``distributed``: more than one process."""
    found = []
    cores = usable_cores()
    if cfg.trainer.num_threads is not None and cfg.trainer.num_threads > cores:
        found.append(f"trainer.num_threads={cfg.trainer.num_threads} > the {cores} CPU cores this process may use: "
                     "the threads take turns on them (the default two-moons run: 20x slower); trainer.num_threads=null "
                     "leaves it to torch")
    if amp == "fp16" and device_type == "cpu":
        found.append("trainer.amp=fp16 on the CPU: float16 autocast is slower there than float32 (the default "
                     "two-moons run: about 2.7x); trainer.amp=auto picks none on the CPU")
    if cfg.trainer.sync_batchnorm and not distributed:
        found.append("trainer.sync_batchnorm=true on one process: there is nothing to synchronise (it acts under "
                     "torchrun or in a multi-task SLURM job)")
    own = entry_of("method", cfg.method).lr_warnings
    return found + (own(cfg) if own is not None else lr_warnings(cfg))


def lr_warnings(cfg) -> list[str]:
    """One lr schedule over ``trainer.steps`` (a method with schedules of its own says so in its ``lr_warnings``)."""
    found = warmup_warning(cfg, cfg.trainer.steps, "trainer.steps")
    return [found] if found else []
