"""The statistics of ``scripts/ablation.py``: BCa bootstrap intervals (SciPy's ``scipy.stats.bootstrap``) of a
mean and of a paired mean difference, and Holm's correction across the comparisons of one table.

Holm's step-down procedure on m comparisons: order them by p-value; the k-th (k = 0, 1, ...) is tested at level
alpha / (m - k), and only while every earlier one was rejected. Beside each raw 95 % interval we show the interval
at that comparison's Holm level (1 - alpha / (m - k)); a comparison is significant after correction when it and
every comparison before it in that order exclude 0 at their Holm levels. The p-value that orders them is the
two-sided bootstrap p-value of the same resamples (twice the smaller tail of the bootstrap distribution at 0,
counted as (tail + 1) / (resamples + 1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05
RESAMPLES = 9999


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _mean_difference(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def mean_interval(values, seed: int = 0, level: float = 1 - ALPHA) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of ``values``; a point for constant values (BCa is undefined there)."""
    values = np.asarray(values, dtype=float)
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), _mean, vectorized=True, method="BCa", n_resamples=RESAMPLES,
                             confidence_level=level, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass
class Paired:
    """A paired comparison: ``ours - theirs`` seed by seed."""

    differences: np.ndarray
    seed: int = 0
    result: object = field(default=None, repr=False)  # SciPy's BootstrapResult (None for constant differences)

    def __post_init__(self):
        self.differences = np.asarray(self.differences, dtype=float)
        if not self.constant:
            zeros = np.zeros_like(self.differences)
            # (paired=True resamples seeds, keeping each seed's two results together)
            self.result = stats.bootstrap((self.differences, zeros), _mean_difference, paired=True,
                                          vectorized=True, method="BCa", n_resamples=RESAMPLES,
                                          confidence_level=1 - ALPHA, rng=np.random.default_rng(self.seed))

    @property
    def constant(self) -> bool:
        return bool(np.ptp(self.differences) == 0)

    @property
    def mean(self) -> float:
        return float(self.differences.mean())

    @property
    def nonzero(self) -> int:
        """Pairs whose difference is not exactly 0 (a mean carried by a few seeds shows here)."""
        return int(np.count_nonzero(self.differences))

    def interval(self, level: float = 1 - ALPHA) -> tuple[float, float]:
        """BCa interval at ``level``, from the same resamples."""
        if self.constant:
            return self.mean, self.mean
        if level == 1 - ALPHA:
            ci = self.result.confidence_interval
        else:
            ci = stats.bootstrap((self.differences, np.zeros_like(self.differences)), _mean_difference,
                                 paired=True, vectorized=True, method="BCa", n_resamples=0, bootstrap_result=self.result,
                                 confidence_level=level, rng=np.random.default_rng(self.seed)).confidence_interval
        return float(ci.low), float(ci.high)

    @property
    def p_value(self) -> float:
        """Two-sided bootstrap p-value of "mean difference = 0"."""
        if self.constant:
            return 1.0 if self.mean == 0 else 0.0
        dist = np.asarray(self.result.bootstrap_distribution)
        tail = min(np.sum(dist <= 0), np.sum(dist >= 0))
        return float(min(1.0, 2 * (tail + 1) / (len(dist) + 1)))  # (never 0 from finitely many resamples)


def excludes_zero(interval: tuple[float, float]) -> bool:
    return interval[0] > 0 or interval[1] < 0


def holm(comparisons: dict[str, Paired], alpha: float = ALPHA) -> dict[str, dict]:
    """Per comparison: its raw interval, Holm level and interval at it, the Holm-adjusted p-value, and whether it
    is significant before and after the correction (see the module's docstring)."""
    order = sorted(comparisons, key=lambda name: comparisons[name].p_value)
    m, out, still, adjusted = len(order), {}, True, 0.0
    for k, name in enumerate(order):
        paired = comparisons[name]
        level = 1 - alpha / (m - k)
        interval = paired.interval(level)
        still = still and excludes_zero(interval)
        adjusted = max(adjusted, min(1.0, (m - k) * paired.p_value))  # (monotone, as Holm's adjusted p-values are)
        raw = paired.interval()
        out[name] = {"pairs": len(paired.differences), "nonzero_pairs": paired.nonzero, "mean": paired.mean,
                     "ci": raw, "significant": excludes_zero(raw), "p": paired.p_value, "holm_rank": k + 1,
                     "holm_level": level, "holm_ci": interval, "holm_p": adjusted, "holm_significant": still}
    return out
