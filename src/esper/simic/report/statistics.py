"""Aggregates, bootstrap confidence intervals and curve alignment, after Agarwal et al.

Agarwal, Schwarzer, Castro, Courville & Bellemare (2021), "Deep Reinforcement
Learning at the Edge of the Statistical Precipice" (NeurIPS), recommend for a
handful of runs: the interquartile mean (IQM) next to mean and median, 95%
stratified-bootstrap confidence intervals, and the probability of improvement
P(X > Y) instead of a bare difference of means. Their library, rliable, does not
import with this project's stack (its pinned ``arch<8`` breaks on pandas 3), so the
same estimators run on ``scipy.stats.bootstrap``: given several samples it resamples
each one independently, which is exactly the stratified bootstrap when each sample is
one (group, task) cell. Intervals are percentile intervals, rliable's default.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

Aggregate = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval; NaN bounds when none exists."""

    estimate: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return bool(self.low > value or self.high < value)


def iqm(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of runs.

    Robust to a few outlier runs like the median, but uses half the runs rather than
    one or two, so its interval is tighter (Agarwal et al. 2021, sec. 4.2; rliable's
    ``aggregate_iqm`` is the same ``trim_mean``).
    """
    return stats.trim_mean(scores, proportiontocut=0.25, axis=axis)


def _mean(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(scores, axis=axis)


def _median(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(scores, axis=axis)


AGGREGATES: dict[str, Aggregate] = {"mean": _mean, "median": _median, "iqm": iqm}


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: resamples, confidence level and seed (reproducible reports)."""

    reps: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def interval(
        self, samples: Sequence[np.ndarray], statistic: Aggregate, estimate: float
    ) -> Interval:
        """Percentile interval of ``statistic(*samples, axis=-1)``; samples resampled apart.

        A sample of one run has no spread to resample: the bounds are NaN then.
        """
        if any(len(sample) < 2 for sample in samples):
            return Interval(estimate, float("nan"), float("nan"))
        result = stats.bootstrap(
            tuple(samples),
            statistic,
            n_resamples=self.reps,
            confidence_level=self.confidence,
            method="percentile",
            vectorized=True,
            axis=-1,
            rng=np.random.default_rng(self.seed),
        )
        low, high = result.confidence_interval
        return Interval(estimate, float(low), float(high))


def aggregate_interval(strata: Sequence[np.ndarray], name: str, boot: Bootstrap) -> Interval:
    """An aggregate (``mean``, ``median``, ``iqm``) of all runs, stratified by task.

    Runs are resampled within their stratum (task), so each resample keeps every
    task's run count, as in rliable's ``StratifiedBootstrap``.
    """
    aggregate = AGGREGATES[name]

    def statistic(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return aggregate(np.concatenate(resampled, axis=axis), axis=axis)

    return boot.interval(strata, statistic, float(statistic(*strata)))


def _probability_of_improvement(xs: Sequence[np.ndarray], ys: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over tasks of P(X_m > Y_m), ties counting one half.

    Per task this is the Mann-Whitney U statistic over n*m pairs (Agarwal et al.
    2021, sec. 4.3, and rliable's ``probability_of_improvement``).
    """
    per_task = []
    for x, y in zip(xs, ys, strict=True):
        diff = x[..., :, None] - y[..., None, :]
        per_task.append(np.mean((diff > 0) + 0.5 * (diff == 0), axis=(-2, -1)))
    return np.mean(per_task, axis=0)


def improvement_interval(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], boot: Bootstrap
) -> Interval:
    """P(X > Y) with its stratified-bootstrap interval; ``xs[i]``, ``ys[i]``: task i's runs."""
    tasks = len(xs)

    def statistic(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return _probability_of_improvement(resampled[:tasks], resampled[tasks:])

    return boot.interval([*xs, *ys], statistic, float(statistic(*xs, *ys)))


def mean_difference_interval(
    xs: Sequence[np.ndarray], ys: Sequence[np.ndarray], boot: Bootstrap
) -> Interval:
    """mean(X) - mean(Y) over all runs, with its stratified-bootstrap interval."""
    tasks = len(xs)

    def statistic(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        x = np.concatenate(resampled[:tasks], axis=axis)
        y = np.concatenate(resampled[tasks:], axis=axis)
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    return boot.interval([*xs, *ys], statistic, float(statistic(*xs, *ys)))


def align(
    series: Sequence[tuple[np.ndarray, np.ndarray]], max_points: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Runs' (steps, values) linearly interpolated onto one grid: (grid, runs x points).

    The grid spans only the steps every run covers, so no value is extrapolated. It
    is the runs' own steps where they are few (runs of one sweep log the same steps,
    so nothing is interpolated at all), else ``max_points`` evenly spaced steps.
    """
    if not series or any(len(steps) == 0 for steps, _ in series):
        raise ValueError("every run needs at least one point")
    low = max(float(steps[0]) for steps, _ in series)
    high = min(float(steps[-1]) for steps, _ in series)
    if low > high:
        raise ValueError(
            f"the runs' step ranges do not overlap (latest start {low:g}, earliest end {high:g})"
        )
    grid = np.unique(np.concatenate([s[(s >= low) & (s <= high)] for s, _ in series]))
    if len(grid) > max_points:
        grid = np.linspace(low, high, max_points)
    return grid, np.stack([np.interp(grid, steps, values) for steps, values in series])


def mean_band(values: np.ndarray, boot: Bootstrap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (rows) at each point with its bootstrap band: (mean, low, high)."""
    mean = values.mean(axis=0)
    if values.shape[0] < 2:
        nan = np.full_like(mean, np.nan)
        return mean, nan, nan
    result = stats.bootstrap(
        (values,),
        _mean,
        n_resamples=boot.reps,
        confidence_level=boot.confidence,
        method="percentile",
        vectorized=True,
        axis=0,
        rng=np.random.default_rng(boot.seed),
    )
    return mean, result.confidence_interval.low, result.confidence_interval.high
