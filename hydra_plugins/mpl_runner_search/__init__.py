"""Hydra instantiates sweepers only from the ``hydra_plugins`` namespace: this is mpl_runner's search sweeper there
(``hydra/sweeper=optuna``; the code and its configs: :mod:`mpl_runner.search`)."""

from mpl_runner.search import OptunaSweeperImpl


class OptunaSweeper(OptunaSweeperImpl):
    """See :mod:`mpl_runner.search`."""
