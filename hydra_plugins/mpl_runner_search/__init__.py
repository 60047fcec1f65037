"""Hydra instantiates sweepers only from the ``hydra_plugins`` namespace: these are mpl_runner's sweepers there:
the search (``hydra/sweeper=optuna``; the code and its configs: :mod:`mpl_runner.search.optuna`) and the basic sweeper
that checks every job first (``hydra/sweeper=basic``, the default: :mod:`mpl_runner.search.sweep`)."""

from mpl_runner.search.optuna import OptunaSweeperImpl
from mpl_runner.search.sweep import CheckedSweeperImpl


class OptunaSweeper(OptunaSweeperImpl):
    """See :mod:`mpl_runner.search.optuna`."""


class BasicSweeper(CheckedSweeperImpl):
    """See :mod:`mpl_runner.search.sweep`."""
