"""One registry for the config groups a user chooses from: ``dataset``, ``model`` and ``method``.

A module under ``mpl_runner/data``, ``mpl_runner/models`` or ``mpl_runner/methods`` adds itself with one call::

    register("method", "pseudo_labels", PseudoLabelsConfig, PseudoLabels, check=check)

naming the option's ``<group>.name``, its schema (types only: the YAML file under ``conf/<group>/`` holds every
default), what builds it and the checks of its own keys. The modules of those three packages are imported when the
registry is first read, so a new one needs no import anywhere else: a method or a data set is one module plus one
YAML file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

PACKAGES = {"dataset": "mpl_runner.data", "model": "mpl_runner.models", "method": "mpl_runner.methods"}


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


_ENTRIES: dict[str, dict[str, Entry]] = {group: {} for group in PACKAGES}
_loaded = False


def register(group: str, name: str, schema: type, build: Callable[..., Any], **hooks) -> Entry:
    """Add ``name`` to ``group``; ``hooks`` are the optional fields of :class:`Entry`."""
    if group not in _ENTRIES:
        raise ValueError(f"no config group {group!r}; the groups are {', '.join(PACKAGES)}")
    known = _ENTRIES[group].get(name)
    if known is not None and (known.schema, known.build) != (schema, build):
        raise ValueError(f"{group} {name!r} is registered twice ({known.build.__module__} and {build.__module__})")
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


def entries(group: str) -> dict[str, Entry]:
    """Every registered option of ``group``, by name."""
    _load()
    return _ENTRIES[group]


def entry(group: str, name: str) -> Entry:
    """The entry ``<group>.name`` names (validate() has refused an unknown name before anything is built)."""
    return entries(group)[name]
