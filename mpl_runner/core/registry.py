"""One registry for the config groups a user chooses from: ``dataset``, ``model`` and ``method``.

A module under ``mpl_runner/data``, ``mpl_runner/models`` or ``mpl_runner/methods`` adds itself with one call::

    register("method", "pseudo_labels", PseudoLabelsConfig, PseudoLabels, check=check)

naming the option's ``<group>.name``, its schema (types only: the YAML file under ``conf/<group>/`` holds every
default), what builds it and the checks of its own keys (the hooks of :class:`Entry`: every rule that concerns one
option lives in its module; :mod:`mpl_runner.gates.validate` calls the hooks and keeps what spans groups). A composed
config node is an option's by its schema (:func:`entry_of`); ``<group>.name`` is the option's name, except where
the option says otherwise (``model=timm``: ``model.name`` is the timm architecture). :data:`MODULES` names the module that registers each option: it is
imported when the option is first read (its schema, when Hydra composes a config that chooses it), so a command
imports only the modules of the options it uses, and ``mpl-run --help`` or a mistyped key none that need torch. A
method or a data set is one module, one YAML file and its line in :data:`MODULES` (tests/test_cli_imports.py
finds a module that registers an option without it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

PACKAGES = {"dataset": "mpl_runner.data", "model": "mpl_runner.models", "method": "mpl_runner.methods"}
#: the module that registers each option (imported on first use; its schema and checks must import without torch
#: where the option is a default one: two_moons, mlp, mpl)
MODULES = {
    "dataset": {
        "two_moons": "mpl_runner.data.two_moons",
        "digits": "mpl_runner.data.digits",
        "cifar10": "mpl_runner.data.cifar10",
        "cifar100": "mpl_runner.data.cifar100",
        "svhn": "mpl_runner.data.svhn",
        "image_folder": "mpl_runner.data.image_folder",
    },
    "model": {
        "mlp": "mpl_runner.models.mlp",
        "small_cnn": "mpl_runner.models.small_cnn",
        "wide_resnet": "mpl_runner.models.wide_resnet",
        "timm": "mpl_runner.models.timm_backbone",
    },
    "method": {
        "supervised": "mpl_runner.methods.supervised",
        "pseudo_labels": "mpl_runner.methods.pseudo_labels",
        "uda": "mpl_runner.methods.uda",
        "mpl": "mpl_runner.methods.mpl_config",
    },
}


def _no_check(cfg: DictConfig) -> None:
    pass


@dataclass(frozen=True)
class Entry:
    group: str
    name: str
    schema: type  # a dataclass whose fields are all MISSING: the types a YAML option of this entry must have
    build: Callable[..., Any]  # dataset: (cfg, device) -> SSLData; model: (cfg, input_shape, classes) -> nn.Module;
    #                            method: (cfg, optim_cfg, total_steps, make_model) -> Method
    check: Callable[[DictConfig], None] = _no_check  # the whole config: raises ConfigError naming a key of its own
    # Every hook takes the whole config.
    # data sets: the shape of one input, from the config alone (nothing read yet)
    input_shape: Callable[[DictConfig], tuple[int, ...]] | None = None
    # data sets and methods: {key: size} of the global batches a step draws, which torchrun ranks split evenly
    batch_sizes: Callable[[DictConfig], dict[str, int]] = lambda cfg: {}
    # models: where this model cannot take the data set's inputs (of ``input_shape``), the key to change and what
    # it allows (``("model", "mlp for dataset=two_moons (...)")``); None where it can
    unfit: Callable[[DictConfig, tuple[int, ...]], tuple[str, str] | None] = lambda cfg, input_shape: None
    # False: ``<group>.name`` is a key of the option's own (model=timm: the architecture), which its check validates
    fixed_name: bool = True
    # methods: True where the method trains a student of its own, which ``student_model`` may choose
    trains_student: bool = False
    # methods: what else it refuses under torchrun (several processes), raising ConfigError
    check_distributed: Callable[[DictConfig], None] = _no_check
    # methods: the settings that run but hardly as meant about the method's lr schedules (one line each); None:
    # validate.py's own, for one schedule over ``trainer.steps``
    lr_warnings: Callable[[DictConfig], list[str]] | None = None


_ENTRIES: dict[str, dict[str, Entry]] = {group: {} for group in PACKAGES}
_loaded = False


def register(group: str, name: str, schema: type, build: Callable[..., Any], **hooks) -> Entry:
    """Add ``name`` to ``group``; ``hooks`` are the optional fields of :class:`Entry`."""
    if group not in _ENTRIES:
        raise ValueError(f"no config group {group!r}; the groups are {', '.join(PACKAGES)}")
    known = _ENTRIES[group].get(name)
    if known is not None and (known.schema, known.build) != (schema, build):
        raise ValueError(f"{group} {name!r} is registered twice ({known.build.__module__} and {build.__module__})")
    shared = [e.name for e in _ENTRIES[group].values() if e.schema is schema and e.name != name]
    if shared:  # (entry_of() tells the options apart by their schemas)
        raise ValueError(f"{group} {name!r} has the schema of {shared[0]!r}; each option needs a schema of its own")
    entry = Entry(group, name, schema, build, **hooks)
    _ENTRIES[group][name] = entry
    return entry


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in PACKAGES.values():
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
            importlib.import_module(f"{package}.{module.name}")


def names(group: str) -> list[str]:
    """The options of ``group`` without importing their modules: :data:`MODULES`' and any registered already."""
    return [*MODULES[group], *(name for name in _ENTRIES[group] if name not in MODULES[group])]


def entries(group: str) -> dict[str, Entry]:
    """Every registered option of ``group``, by name (this imports every option's module)."""
    _load()
    return _ENTRIES[group]


def entry(group: str, name: str) -> Entry:
    """The option of ``group`` registered as ``name`` (this imports its module alone)."""
    if name not in _ENTRIES[group] and name in MODULES[group]:
        importlib.import_module(MODULES[group][name])
    return _ENTRIES[group][name] if name in _ENTRIES[group] else entries(group)[name]


def entry_of(group: str, node: DictConfig) -> Entry:
    """The option of ``group`` a composed config node (``cfg.model``, ``cfg.student_model``) was made from, known
    by its schema (validate() has refused a node of no registered schema before anything is built)."""
    schema = OmegaConf.get_type(node)
    found = next((e for e in _ENTRIES[group].values() if e.schema is schema), None)  # (the modules loaded so far)
    if found is None:
        found = next((e for e in entries(group).values() if e.schema is schema), None)
    if found is None:
        raise LookupError(f"no {group} option has the schema {getattr(schema, '__name__', schema)}")
    return found
