"""From runs to a report's numbers: groups, their statistics, comparisons, curves, gradients.

Everything here is plain data (dataclasses of floats, strings and lists) so that
``render`` writes the same facts to Markdown, HTML and JSON, and tests check them
without parsing any output.
"""

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from esper.simic.report.loading import ReportError, Run
from esper.simic.report.statistics import (
    Bootstrap,
    Interval,
    aggregate_interval,
    align,
    improvement_interval,
    mean_band,
    mean_difference_interval,
)

DEFAULT_METRIC = "eval/return_mean"
DEFAULT_STEP_AXIS = "global_step"
GRAD_PREFIX = "grad/"
GRAD_CURVE_METRICS = ("grad/global_norm", "grad/health")
# The collector's own cost is not logged apart yet; the whole PPO update bounds it.
UPDATE_TIME_KEY = "time/update_s"
THROUGHPUT_KEY = "env_steps_per_s"
# Runs are resampled within their environment: the strata of the stratified bootstrap.
STRATUM_KEY = "env.id"
# Same seed, same gradients: the collectors differ only in float summation order.
MATCH_RTOL, MATCH_ATOL = 1e-5, 1e-8


@dataclass(frozen=True)
class Settings:
    """What to compare and how sure to be."""

    metric: str = DEFAULT_METRIC
    step_axis: str = DEFAULT_STEP_AXIS
    group_by: tuple[str, ...] = ()
    higher_is_better: bool = True
    # Percentile-bootstrap intervals are too narrow with fewer runs than this
    # (with 3 vs 3 fully separated runs every resample gives P=1).
    min_runs: int = 5
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    # Fixed levels of the metric to draw against (a baseline policy's score, a target).
    references: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class GroupSummary:
    """One group's runs and its final scores: each run scores its metric's last value."""

    label: str
    keys: dict[str, Any]
    runs: list[str]
    seeds: list[Any]
    environments: list[str]
    scores: list[float]
    mean: Interval
    median: Interval
    iqm: Interval
    minimum: float
    maximum: float
    env_steps_per_s: list[float]
    update_s: list[float]


@dataclass(frozen=True)
class Comparison:
    """B against A: P(B better than A), the difference of means, and the verdict.

    ``outcome`` is the verdict in a few words (``loop better``, ``no significant
    difference``), ``verdict`` the full line with P(B>A) and its interval.
    """

    a: str
    b: str
    p_b_better: Interval
    mean_difference: Interval
    outcome: str
    verdict: str
    significant: bool


@dataclass(frozen=True)
class Curve:
    """A group's mean curve and its bootstrap band, on the runs' common step grid."""

    group: str
    runs: int
    steps: list[float]
    mean: list[float]
    low: list[float]
    high: list[float]


@dataclass(frozen=True)
class GradientMatch:
    """Largest gap between two groups' ``grad/*`` values at equal steps, same seeds."""

    a: str
    b: str
    seeds: list[Any]
    points: int
    max_abs_diff: float
    max_rel_diff: float
    worst_key: str
    matches: bool


@dataclass(frozen=True)
class Report:
    metric: str
    step_axis: str
    group_by: list[str]
    group_by_inferred: bool
    higher_is_better: bool
    min_runs: int
    bootstrap: Bootstrap
    sources: list[str]
    groups: list[GroupSummary]
    comparisons: list[Comparison]
    curves: dict[str, list[Curve]]
    gradient_matches: list[GradientMatch]
    warnings: list[str]
    references: dict[str, float] = field(default_factory=dict)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return flat


def infer_group_keys(runs: Sequence[Run]) -> list[str]:
    """The config leaves that differ between runs, but for the seed: what a sweep varied."""
    flats = [_flatten(run.config) for run in runs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if k != "seed" and len({flat.get(k) for flat in flats}) > 1]


def _check_presence(runs: Sequence[Run], settings: Settings, group_by: Sequence[str]) -> None:
    """One error per kind of gap, naming every run that has it."""
    for key in group_by:
        lacking = [run.name for run in runs if not run.has_config(key)]
        if lacking:
            raise ReportError(
                f"group key {key!r} is absent in {len(lacking)} of {len(runs)} runs: "
                + ", ".join(lacking)
            )
    no_axis = [run.name for run in runs if settings.step_axis not in run.history_keys()]
    if no_axis and len(no_axis) == len(runs):
        raise ReportError(f"no run logs the step axis {settings.step_axis!r}")
    if no_axis:
        raise ReportError(
            f"mixed step axes: {len(no_axis)} of {len(runs)} runs log no "
            f"{settings.step_axis!r}: " + ", ".join(no_axis)
        )
    no_metric = [
        run.name for run in runs if not len(run.series(settings.metric, settings.step_axis)[0])
    ]
    if no_metric:
        known = sorted(set().union(*(run.history_keys() for run in runs)))
        raise ReportError(
            f"{len(no_metric)} of {len(runs)} runs have no {settings.metric!r} values: "
            + ", ".join(no_metric)
            + "; logged keys include: "
            + ", ".join(known[:12])
        )


def _sort_key(values: tuple[Any, ...]) -> tuple[tuple[int, float, str], ...]:
    """Numbers in numeric order (1e-4 before 3e-4 before 1e-3), then anything else as text."""
    return tuple(
        (0, float(v), "")
        if isinstance(v, int | float) and not isinstance(v, bool)
        else (1, 0.0, str(v))
        for v in values
    )


def _node_labels(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """Labels for config nodes (``group_by agent``): the leaves in which they differ."""
    flats = [_flatten(node) for node in nodes]
    varying = [
        key for key in sorted(set().union(*flats)) if len({flat.get(key) for flat in flats}) > 1
    ]
    return [
        ", ".join(f"{key}={flat.get(key, 'absent')}" for key in varying) or str(node.get("name"))
        for node, flat in zip(nodes, flats, strict=True)
    ]


def _short_keys(keys: Sequence[str]) -> list[str]:
    """Label names: ``agent.learning_rate`` -> ``learning_rate``, ``collector.name`` ->
    ``collector``; the full keys when short ones would collide."""
    short = [
        parts[-2] if len(parts) > 1 and parts[-1] in {"name", "id"} else parts[-1]
        for parts in (key.split(".") for key in keys)
    ]
    return short if len(set(short)) == len(short) else list(keys)


def group_runs(runs: Sequence[Run], group_by: Sequence[str]) -> dict[str, list[Run]]:
    """Runs by the values of ``group_by``, in sorted order; one group ``all`` without keys."""
    if not group_by:
        return {"all": list(runs)}
    groups: dict[str, list[Run]] = defaultdict(list)
    values: dict[str, tuple[Any, ...]] = {}
    for run in runs:
        value = tuple(run.config_value(key) for key in group_by)
        identity = json.dumps(value, sort_keys=True)
        groups[identity].append(run)
        values[identity] = value
    order = sorted(groups, key=lambda identity: _sort_key(values[identity]))
    columns = []
    for position in range(len(group_by)):
        column = [values[identity][position] for identity in order]
        if all(isinstance(v, Mapping) for v in column):
            columns.append(_node_labels(column))
        else:
            columns.append([str(v) for v in column])
    names = _short_keys(group_by)
    labels = [
        parts[0]
        if len(parts) == 1
        else ", ".join(f"{name}={part}" for name, part in zip(names, parts, strict=True))
        for parts in zip(*columns, strict=True)
    ]
    if len(set(labels)) < len(labels):  # e.g. values 1 and "1": show them as JSON
        labels = [identity.strip("[]") for identity in order]
    # Runs in seed order: the bootstrap draws row indices, so the same runs in
    # another order would give (slightly) different intervals.
    return {
        label: sorted(
            groups[identity], key=lambda run: (_sort_key((run.config.get("seed"),)), run.name)
        )
        for label, identity in zip(labels, order, strict=True)
    }


def _strata(runs: Sequence[Run], scores: Mapping[str, float]) -> dict[str, np.ndarray]:
    by_env: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        env = str(run.config_value(STRATUM_KEY)) if run.has_config(STRATUM_KEY) else "?"
        by_env[env].append(scores[run.name])
    return {env: np.array(values) for env, values in sorted(by_env.items())}


def _summarize_group(
    label: str,
    keys: dict[str, Any],
    runs: Sequence[Run],
    scores: Mapping[str, float],
    settings: Settings,
) -> GroupSummary:
    by_env = _strata(runs, scores)
    strata = list(by_env.values())
    values = np.concatenate(strata)
    boot = settings.bootstrap
    update_s = []
    for run in runs:
        times = run.series(UPDATE_TIME_KEY, settings.step_axis)[1]
        if len(times):
            update_s.append(float(times.mean()))
    return GroupSummary(
        label=label,
        keys=keys,
        runs=[run.name for run in runs],
        seeds=[run.config.get("seed") for run in runs],
        environments=list(by_env),
        scores=[scores[run.name] for run in runs],
        mean=aggregate_interval(strata, "mean", boot),
        median=aggregate_interval(strata, "median", boot),
        iqm=aggregate_interval(strata, "iqm", boot),
        minimum=float(values.min()),
        maximum=float(values.max()),
        env_steps_per_s=[
            float(run.summary[THROUGHPUT_KEY]) for run in runs if THROUGHPUT_KEY in run.summary
        ],
        update_s=update_s,
    )


def _flip(p: Interval) -> Interval:
    return Interval(1 - p.estimate, 1 - p.high, 1 - p.low)


def verdict(
    a: str, b: str, p_b_better: Interval, runs: tuple[int, int], min_runs: int
) -> tuple[str, str]:
    """(outcome, line): "better" only when the interval of P(B>A) excludes 0.5.

    An interval that includes 0.5 is compatible with a coin flip, so any ranking
    would be noise; with fewer than ``min_runs`` runs in a group the bootstrap
    interval itself is untrustworthy, and the line says so instead.
    """
    if math.isnan(p_b_better.low):
        return "no interval", f"cannot compare {b} with {a}: a group has a single run"
    if not p_b_better.excludes(0.5):
        line = f"no significant difference between {b} and {a}: {_p_text(b, a, p_b_better)}"
        return "no significant difference", line
    winner, loser, p = (b, a, p_b_better) if p_b_better.low > 0.5 else (a, b, _flip(p_b_better))
    if min(runs) < min_runs:
        return f"too few runs ({winner} ahead)", (
            f"{winner} looks better than {loser} but there are too few runs to tell "
            f"({runs[1]} vs {runs[0]}, fewer than {min_runs} per group): "
            + _p_text(winner, loser, p)
        )
    return f"{winner} better", f"{winner} is better than {loser}: {_p_text(winner, loser, p)}"


def _p_text(x: str, y: str, p: Interval) -> str:
    return f"P({x}>{y})={p.estimate:.2f} [{p.low:.2f}, {p.high:.2f}]"


def _compare(
    a: GroupSummary,
    b: GroupSummary,
    strata: Mapping[str, Mapping[str, np.ndarray]],
    settings: Settings,
) -> Comparison:
    tasks = sorted(set(strata[a.label]) & set(strata[b.label]))
    xs = [strata[b.label][t] for t in tasks]
    ys = [strata[a.label][t] for t in tasks]
    sign = 1.0 if settings.higher_is_better else -1.0
    p = improvement_interval([sign * x for x in xs], [sign * y for y in ys], settings.bootstrap)
    outcome, line = verdict(a.label, b.label, p, (len(a.runs), len(b.runs)), settings.min_runs)
    return Comparison(
        a=a.label,
        b=b.label,
        p_b_better=p,
        mean_difference=mean_difference_interval(xs, ys, settings.bootstrap),
        outcome=outcome,
        verdict=line,
        significant=p.excludes(0.5) and min(len(a.runs), len(b.runs)) >= settings.min_runs,
    )


def _curves(groups: Mapping[str, Sequence[Run]], metric: str, settings: Settings) -> list[Curve]:
    curves = []
    for label, runs in groups.items():
        series = [run.series(metric, settings.step_axis) for run in runs]
        series = [s for s in series if len(s[0])]
        if not series:
            continue
        try:
            steps, values = align(series)
        except ValueError as error:
            raise ReportError(f"group {label}, {metric}: {error}") from error
        mean, low, high = mean_band(values, settings.bootstrap)
        curves.append(
            Curve(label, len(series), steps.tolist(), mean.tolist(), low.tolist(), high.tolist())
        )
    return curves


def _seed_index(runs: Sequence[Run]) -> dict[Any, Run]:
    """Runs by seed, leaving out seeds that occur twice (which pair would be ambiguous)."""
    counts: dict[Any, int] = defaultdict(int)
    for run in runs:
        counts[run.config.get("seed")] += 1
    return {run.config.get("seed"): run for run in runs if counts[run.config.get("seed")] == 1}


def _grad_keys(run: Run) -> set[str]:
    return {key for key in run.history_keys() if key.startswith(GRAD_PREFIX)}


def match_gradients(
    a: str, runs_a: Sequence[Run], b: str, runs_b: Sequence[Run], step_axis: str
) -> GradientMatch | None:
    """Compare every ``grad/*`` value logged at the same step by runs of equal seed.

    None when the groups share no seed or log no gradient statistics in common.
    """
    index_a, index_b = _seed_index(runs_a), _seed_index(runs_b)
    seeds = sorted(set(index_a) & set(index_b), key=str)
    points, max_abs, max_rel, worst, matches = 0, 0.0, 0.0, "", True
    for seed in seeds:
        run_a, run_b = index_a[seed], index_b[seed]
        for key in sorted(_grad_keys(run_a) & _grad_keys(run_b)):
            steps_a, values_a = run_a.series(key, step_axis)
            steps_b, values_b = run_b.series(key, step_axis)
            _, i, j = np.intersect1d(steps_a, steps_b, return_indices=True)
            x, y = values_a[i], values_b[j]
            if not len(x):
                continue
            gap = np.abs(x - y)
            scale = np.maximum(np.abs(x), np.abs(y))
            rel = np.divide(gap, scale, out=np.zeros_like(gap), where=scale > 0)
            points += len(x)
            matches &= bool(np.all(gap <= MATCH_ATOL + MATCH_RTOL * np.abs(y)))
            if gap.max() > max_abs:
                max_abs, worst = float(gap.max()), key
            max_rel = max(max_rel, float(rel.max()))
    if not points:
        return None
    return GradientMatch(a, b, seeds, points, max_abs, max_rel, worst, matches)


def _warnings(runs: Sequence[Run], groups: Sequence[GroupSummary], settings: Settings) -> list[str]:
    found = []
    unfinished = [
        f"{run.name} ({run.unfinished or 'no summary'})" for run in runs if not run.summary
    ]
    if unfinished:
        found.append(f"{len(unfinished)} runs did not finish: " + "; ".join(unfinished))
    ends = {float(run.series(settings.metric, settings.step_axis)[0][-1]) for run in runs}
    if len(ends) > 1:
        found.append(
            f"runs end at different steps ({min(ends):g} to {max(ends):g}): their final "
            f"{settings.metric} compare different budgets"
        )
    found.extend(
        f"group {g.label} spans several environments ({', '.join(g.environments)}): its "
        f"aggregates pool scores of different scales; group by {STRATUM_KEY} to separate them"
        for g in groups
        if len(g.environments) > 1
    )
    return found


def analyze(runs: Sequence[Run], settings: Settings, sources: Sequence[str]) -> Report:
    """Every number of the report, computed once."""
    if not runs:
        raise ReportError("no runs to report on")
    group_by = list(settings.group_by) or infer_group_keys(runs)
    _check_presence(runs, settings, group_by)
    scores = {
        run.name: float(run.series(settings.metric, settings.step_axis)[1][-1]) for run in runs
    }
    grouped = group_runs(runs, group_by)
    summaries = [
        _summarize_group(
            label,
            {key: members[0].config_value(key) for key in group_by},
            members,
            scores,
            settings,
        )
        for label, members in grouped.items()
    ]
    strata = {label: _strata(members, scores) for label, members in grouped.items()}
    # Groups of different environments (``group_by env.id``) are not compared.
    comparisons = [
        _compare(a, b, strata, settings)
        for a, b in combinations(summaries, 2)
        if set(a.environments) & set(b.environments)
    ]
    curves = {settings.metric: _curves(grouped, settings.metric, settings)}
    for key in GRAD_CURVE_METRICS:
        grad_curves = _curves(grouped, key, settings)
        if grad_curves:
            curves[key] = grad_curves
    matches = [
        match
        for (a, runs_a), (b, runs_b) in combinations(grouped.items(), 2)
        if (match := match_gradients(a, runs_a, b, runs_b, settings.step_axis)) is not None
    ]
    return Report(
        metric=settings.metric,
        step_axis=settings.step_axis,
        group_by=group_by,
        group_by_inferred=not settings.group_by,
        higher_is_better=settings.higher_is_better,
        min_runs=settings.min_runs,
        bootstrap=settings.bootstrap,
        sources=list(sources),
        groups=summaries,
        comparisons=comparisons,
        curves=curves,
        gradient_matches=matches,
        warnings=_warnings(runs, summaries, settings),
        references=dict(settings.references),
    )
