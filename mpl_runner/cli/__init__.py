"""The commands: mpl-run (main.py), mpl-predict, mpl-export, and the config mpl-run composes (config.py)."""
