"""The report's estimators against known answers: IQM, interval coverage, stratification."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from esper.simic.report.statistics import (
    Bootstrap,
    aggregate_interval,
    align,
    improvement_interval,
    iqm,
    mean_band,
    mean_difference_interval,
)

FAST = Bootstrap(reps=500, seed=0)


def test_iqm_is_the_mean_of_the_middle_half_and_ignores_outliers():
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([1, 2, 3, 4, 5, 6, 7, 1000.0])) == pytest.approx(4.5)


def _coverage(draw, interval, truth, replications=100):
    """Share of simulated data sets whose interval holds the truth, and mean width."""
    hits, widths = 0, []
    for replication in range(replications):
        found = interval(*draw(np.random.default_rng(1000 + replication)))
        hits += found.low <= truth <= found.high
        widths.append(found.high - found.low)
    return hits / replications, float(np.mean(widths))


def _two_groups(delta):
    def draw(rng):
        return rng.normal(100, 5, 10), rng.normal(100 + delta, 5, 10)

    return draw


def test_mean_and_iqm_intervals_cover_the_true_centre():
    # N(100, 5), 10 runs: a 95% interval should hold 100 about 95% of the time
    # (percentile intervals run a little short with 10 runs), and be about
    # 2 * 1.96 * 5 / sqrt(10) = 6.2 wide, not vacuously wide.
    for name in ("mean", "iqm", "median"):
        coverage, width = _coverage(
            _two_groups(0), lambda a, _b, n=name: aggregate_interval([a], n, FAST), truth=100
        )
        assert coverage >= 0.85, name
        assert width < 9, name


def test_mean_difference_interval_covers_the_true_difference():
    coverage, width = _coverage(
        _two_groups(10), lambda a, b: mean_difference_interval([b], [a], FAST), truth=10
    )
    assert coverage >= 0.85
    assert width < 12


def test_probability_of_improvement_interval_covers_the_truth():
    # For B ~ N(102, 5) and A ~ N(100, 5): P(B > A) = Phi(2 / (5 * sqrt 2)) = 0.611.
    truth = norm.cdf(2 / (5 * math.sqrt(2)))
    coverage, _ = _coverage(
        _two_groups(2), lambda a, b: improvement_interval([b], [a], FAST), truth=truth
    )
    assert coverage >= 0.85


def test_probability_of_improvement_counts_ties_as_half():
    a = np.array([1.0, 2.0, 3.0])
    assert improvement_interval([a], [a], FAST).estimate == pytest.approx(0.5)
    p = improvement_interval([np.array([2.0, 4.0])], [np.array([1.0, 2.0, 3.0])], FAST)
    assert p.estimate == pytest.approx(4.5 / 6)  # 4 wins and one tie out of 6 pairs
    assert not p.excludes(0.5)


def test_identical_samples_cannot_be_told_apart():
    scores = np.random.default_rng(0).normal(100, 5, 10)
    p = improvement_interval([scores], [scores.copy()], FAST)
    assert p.estimate == pytest.approx(0.5)
    assert p.low < 0.5 < p.high


def test_bootstrap_is_stratified_by_task():
    # Each resample keeps 5 runs of each task, so the mean over both tasks is always
    # 50; an unstratified resample of the 10 pooled runs would vary from 0 to 100.
    strata = [np.zeros(5), np.full(5, 100.0)]
    mean = aggregate_interval(strata, "mean", FAST)
    assert (mean.estimate, mean.low, mean.high) == pytest.approx((50, 50, 50))
    # P(X>Y) averages per-task probabilities: task 1 ties (1/2), task 2 X wins (1).
    p = improvement_interval([np.zeros(3), np.full(3, 2.0)], [np.zeros(3), np.ones(3)], FAST)
    assert p.estimate == pytest.approx(0.75)


def test_a_single_run_has_no_interval():
    interval = aggregate_interval([np.array([3.0])], "mean", FAST)
    assert interval.estimate == 3.0
    assert math.isnan(interval.low) and math.isnan(interval.high)


def test_intervals_are_reproducible_from_the_seed():
    scores = np.random.default_rng(0).normal(0, 1, 10)
    first = aggregate_interval([scores], "iqm", Bootstrap(reps=300, seed=7))
    assert first == aggregate_interval([scores], "iqm", Bootstrap(reps=300, seed=7))
    assert first != aggregate_interval([scores], "iqm", Bootstrap(reps=300, seed=8))


def test_align_keeps_shared_steps_and_interpolates_only_inside_the_overlap():
    runs = [
        (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0])),
        (np.array([5.0, 15.0, 25.0]), np.array([0.0, 10.0, 20.0])),
    ]
    grid, values = align(runs)
    np.testing.assert_array_equal(grid, [5.0, 10.0, 15.0, 20.0])
    np.testing.assert_allclose(values, [[0.5, 1.0, 1.5, 2.0], [0.0, 5.0, 10.0, 15.0]])


def test_align_thins_long_grids_and_rejects_disjoint_runs():
    steps = np.arange(1000.0)
    grid, values = align([(steps, steps), (steps + 0.5, steps)], max_points=50)
    assert len(grid) == 50 and values.shape == (2, 50)
    with pytest.raises(ValueError, match="do not overlap"):
        align([(np.array([0.0, 1.0]), np.zeros(2)), (np.array([5.0, 6.0]), np.zeros(2))])


def test_mean_band_brackets_the_mean_and_collapses_without_spread():
    rng = np.random.default_rng(0)
    values = rng.normal(0, 1, (10, 30))
    mean, low, high = mean_band(values, FAST)
    np.testing.assert_allclose(mean, values.mean(axis=0))
    assert np.all(low <= mean) and np.all(mean <= high)
    same = np.tile(np.linspace(0, 1, 30), (4, 1))
    mean, low, high = mean_band(same, FAST)
    np.testing.assert_allclose(low, mean)
    np.testing.assert_allclose(high, mean)
