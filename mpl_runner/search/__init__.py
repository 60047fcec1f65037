"""Sweeps and searches: the basic sweeper checking every job first, the Optuna search, a job's trial, reports."""
