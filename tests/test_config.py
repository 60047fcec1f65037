"""Every config group option and preset composes, validates and builds."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

import dataclasses
from pathlib import Path

from mpl_runner.conf import __file__ as conf_init
from mpl_runner.cli.config import Config, OptimConfig, TrainerConfig
from mpl_runner.core.registry import entries
from mpl_runner.gates.resolvers import listed_option
from mpl_runner.gates.validate import validate

CONF = Path(conf_init).parent


def options(group: str) -> list[str]:
    """The options a user chooses from (not the ``*_common`` parts presets share)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if listed_option(p.stem))


def defaults_in(schema: type, prefix: str = "") -> list[str]:
    """The fields of a schema (and of its nested schemas) that hold a default value instead of MISSING."""
    found = []
    for field in dataclasses.fields(schema):
        if field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
            found += defaults_in(type(value), f"{prefix}{field.name}.") if dataclasses.is_dataclass(value) else (
                [] if value == "???" else [prefix + field.name])
        elif field.default != "???":
            found.append(prefix + field.name)
    return found


def test_the_yaml_files_are_the_one_source_of_defaults():
    """No schema holds a default: every value a user gets is in conf/, once."""
    schemas = [Config, OptimConfig, TrainerConfig, *(e.schema for g in ("dataset", "model", "method")
                                                     for e in entries(g).values())]
    assert {s.__name__: defaults_in(s) for s in schemas if defaults_in(s)} == {}


def test_default_is_mpl_on_two_moons(make_cfg):
    cfg = make_cfg()
    assert (cfg.method.name, cfg.dataset.name, cfg.model.name, cfg.device) == ("mpl", "two_moons", "mlp", "auto")
    assert cfg.dataset.num_labeled == 12 and cfg.dataset.points_per_class == 1000 and cfg.dataset.noise == 0


#: image models, with a data set of images they fit (the default, two moons, has 2-D points)
FITTING_DATA = {"wrn28_2": ["dataset=cifar10_4k"], "wrn28_8": ["dataset=cifar10_4k"], "small_cnn": ["dataset=digits"],
                "timm": ["dataset=cifar10_4k"]}


@pytest.mark.parametrize("group", ["dataset", "model", "method", "optim", "trainer"])
def test_every_group_option_composes_and_validates(make_cfg, group):
    assert options(group), f"no options in conf/{group}"
    for option in options(group):
        cfg = make_cfg(f"{group}={option}", *FITTING_DATA.get(option, []))
        validate(cfg)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_composes_and_validates(make_cfg, preset):
    cfg = make_cfg(f"experiment={preset}")
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def test_split_seed_follows_the_run_seed_unless_pinned(make_cfg):
    assert make_cfg("seed=7").dataset.split_seed == 7
    assert make_cfg("seed=7", "dataset.split_seed=1").dataset.split_seed == 1


def test_paper_preset_uses_three_labels_per_class(make_cfg):
    assert make_cfg("experiment=two_moons_paper").dataset.num_labeled == 6


@pytest.mark.parametrize("search", options("hparams_search"))
def test_every_search_preset_composes_and_validates(make_cfg, search):
    validate(make_cfg(f"hparams_search={search}"))
