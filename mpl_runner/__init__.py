"""mpl-runner: Meta Pseudo Labels experiments configured with Hydra."""

__version__ = "0.1.0"
