"""The checks config values are made of: each raises :class:`ConfigError` naming the key, the value and what is
allowed. The modules behind the config groups check their own keys with these; :mod:`mpl_runner.gates.validate` runs
them all, with the checks that span groups."""

from __future__ import annotations

import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from mpl_runner.core.errors import ConfigError

SEEDS = (0, 2**32 - 1)  # what numpy and scikit-learn take as a seed
MAX_WIDTH = 65536  # units of a layer, channels of a convolution: a 65536 x 65536 layer alone holds 16 GiB


def get(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def one_of(cfg, key: str, choices) -> None:
    if get(cfg, key) not in choices:
        raise ConfigError(key, get(cfg, key), "one of " + ", ".join(map(str, choices)))


def positive(cfg, key: str, optional: bool = False) -> None:
    value = get(cfg, key)
    if value is None and optional:
        return
    if value is None or not 0 < value < math.inf:  # (nan and inf too)
        raise ConfigError(key, value, "a finite number > 0" + (" or null" if optional else ""))


def at_least(cfg, key: str, low: float) -> None:
    value = get(cfg, key)
    if not low <= value < math.inf:  # (nan and inf too)
        raise ConfigError(key, value, f"a finite number >= {low}")


def count(cfg, key: str, low: int, high: int, optional: bool = False, why: str = "") -> None:
    """An integer from ``low`` to ``high``: a seed, size or count that numpy, scikit-learn or torch takes as it is."""
    value = get(cfg, key)
    if value is None and optional:
        return
    if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
        raise ConfigError(key, value, f"an integer from {low} to {high}{why}" + (" or null" if optional else ""))


def sizes(cfg, key: str, high: int, what: str) -> None:
    """A non-empty list of integers from 1 to ``high`` (layer widths, channel counts)."""
    value = get(cfg, key)
    items = list(value) if isinstance(value, ListConfig) else []
    if not items or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high for v in items):
        shown = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        raise ConfigError(key, shown, f"a non-empty list of {what} from 1 to {high}, e.g. [64, 64]")


def fraction(cfg, key: str, optional: bool = False, closed: bool = False) -> None:
    """A value in [0, 1) (or [0, 1] when ``closed``)."""
    value = get(cfg, key)
    if value is None and optional:
        return
    if value is None or not (0 <= value <= 1 if closed else 0 <= value < 1):
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ConfigError(key, value, f"a number in {interval}" + (" or null" if optional else ""))


def balanced_labels(cfg, num_classes: int, pool: int) -> None:
    """``dataset.num_labeled``: drawn balanced, so a multiple of the classes, from a pool of ``pool`` examples."""
    n = cfg.dataset.num_labeled
    if not isinstance(n, int) or n < num_classes or n % num_classes or n > pool:
        raise ConfigError(
            "dataset.num_labeled", n, f"a multiple of {num_classes} (the classes, drawn balanced) "
            f"from {num_classes} to {pool} (the training set)"
        )


def labeled_batch(cfg) -> None:
    """``dataset.labeled_batch_size``: null (every labeled example each step) or at most ``dataset.num_labeled``."""
    positive(cfg, "dataset.labeled_batch_size", optional=True)
    size, n = cfg.dataset.labeled_batch_size, cfg.dataset.num_labeled
    if size is not None and size > n:
        raise ConfigError("dataset.labeled_batch_size", size,
                          f"1 to {n} (dataset.num_labeled: a batch is drawn from them), or null for all of them")


NEVER_WARM = "the lr is still warming up when its schedule ends"


def warmup_warning(cfg, steps: int, spans: str) -> str | None:
    """``optim.warmup_steps`` that outlast the ``steps`` of its lr schedule (``spans``: the keys that make them), as
    a warning line; None where the warm-up ends in time."""
    warmup = cfg.optim.warmup_steps
    if warmup < steps:
        return None
    return f"optim.warmup_steps={warmup} >= the {steps} steps its lr schedule spans ({spans}): {NEVER_WARM}"
