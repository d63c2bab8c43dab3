"""The report's figures as PNG files, drawn with matplotlib's object API.

``Figure`` objects render through the Agg canvas without pyplot, so nothing here
touches a global backend or needs a display, and each figure is freed with its object.
"""

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from esper.simic.report.analysis import Curve, Report

LEARNING_CURVES = "learning_curves.png"
SCORES = "scores.png"
IMPROVEMENT = "improvement.png"
GRADIENTS = "gradients.png"
DPI = 110

Color = tuple[float, float, float, float]


# Groups that should coincide (same seeds, equivalent collectors) draw one line over
# another; a dash pattern per group keeps each visible.
LINESTYLES = ("-", "--", ":", "-.")


def _colors(report: Report) -> dict[str, Color]:
    """One colour per group, the same in every figure."""
    cmap = colormaps["tab10"]
    return {group.label: cmap(i % 10) for i, group in enumerate(report.groups)}


def _draw_curves(ax: Axes, curves: Sequence[Curve], report: Report) -> None:
    colors = _colors(report)
    dashes = {g.label: LINESTYLES[i % len(LINESTYLES)] for i, g in enumerate(report.groups)}
    for curve in curves:
        color = colors[curve.group]
        ax.plot(
            curve.steps,
            curve.mean,
            color=color,
            linestyle=dashes[curve.group],
            label=f"{curve.group} (n={curve.runs})",
        )
        ax.fill_between(curve.steps, curve.low, curve.high, color=color, alpha=0.2, linewidth=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title=f"mean, {report.bootstrap.confidence:.0%} bootstrap band")


def _width(labels: Iterable[str], plot_inches: float) -> float:
    """Figure width that leaves ``plot_inches`` for the axes beside the longest tick label."""
    return plot_inches + 0.075 * max((len(label) for label in labels), default=0)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _draw_references(ax: Axes, references: dict[str, float]) -> None:
    """Each reference level as a grey dotted line, labelled outside the right edge (where
    neither the curves nor the legend cover it)."""
    for label, value in references.items():
        ax.axhline(value, color="0.35", linestyle=":", linewidth=1)
        ax.annotate(
            label,
            (1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            fontsize="small",
            color="0.35",
            annotation_clip=False,
        )


def learning_curves(report: Report, out_dir: Path) -> Path:
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    _draw_curves(ax, report.curves[report.metric], report)
    _draw_references(ax, report.references)
    ax.set(xlabel=report.step_axis, ylabel=report.metric, title=f"{report.metric} per group")
    return _save(fig, out_dir / LEARNING_CURVES)


def scores(report: Report, out_dir: Path) -> Path:
    """Mean, median and IQM intervals per group, each run's score as a dot (rliable's layout)."""
    colors = _colors(report)
    fig = Figure(
        figsize=(_width([g.label for g in report.groups], 8), 0.6 * len(report.groups) + 1.4),
        layout="constrained",
    )
    axes = fig.subplots(1, 3, sharey=True)
    positions = np.arange(len(report.groups))
    for ax, name in zip(axes, ("mean", "median", "iqm"), strict=True):
        for y, group in zip(positions, report.groups, strict=True):
            interval = getattr(group, name)
            color = colors[group.label]
            ax.hlines(y, interval.low, interval.high, color=color, linewidth=6, alpha=0.5)
            ax.plot([interval.estimate], [y], "|", color="black", markersize=14)
            ax.plot(group.scores, [y] * len(group.scores), "o", color=color, markersize=3)
        ax.set_title(name.upper() if name == "iqm" else name.capitalize())
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [group.label for group in report.groups])
    axes[0].invert_yaxis()
    fig.supxlabel(f"final {report.metric} ({report.bootstrap.confidence:.0%} CI; dots: runs)")
    return _save(fig, out_dir / SCORES)


def improvement(report: Report, out_dir: Path) -> Path:
    """P(B>A) per comparison with its interval; the dashed line at 0.5 is a coin flip."""
    labels = [f"P({c.b} > {c.a})" for c in report.comparisons]
    fig = Figure(
        figsize=(_width(labels, 5), 0.5 * len(report.comparisons) + 1.4), layout="constrained"
    )
    ax = fig.subplots()
    for y, comparison in enumerate(report.comparisons):
        p = comparison.p_b_better
        color = "tab:green" if comparison.significant else "tab:gray"
        ax.hlines(y, p.low, p.high, color=color, linewidth=6, alpha=0.6)
        ax.plot([p.estimate], [y], "|", color="black", markersize=14)
    ax.axvline(0.5, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(report.comparisons)), labels)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"probability of improvement ({report.bootstrap.confidence:.0%} CI)")
    return _save(fig, out_dir / IMPROVEMENT)


def gradients(report: Report, keys: Sequence[str], out_dir: Path) -> Path:
    fig = Figure(figsize=(7, 3.2 * len(keys)), layout="constrained")
    axes: Any = fig.subplots(len(keys), 1, sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys, strict=True):
        _draw_curves(ax, report.curves[key], report)
        ax.set(ylabel=key, title=f"{key} per group")
    axes[-1, 0].set_xlabel(report.step_axis)
    return _save(fig, out_dir / GRADIENTS)


def draw_all(report: Report, out_dir: Path) -> dict[str, Path]:
    """Every figure the report has data for, by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        "learning_curves": learning_curves(report, out_dir),
        "scores": scores(report, out_dir),
    }
    if report.comparisons:
        figures["improvement"] = improvement(report, out_dir)
    grad_keys = [key for key in report.curves if key != report.metric]
    if grad_keys:
        figures["gradients"] = gradients(report, grad_keys, out_dir)
    return figures
