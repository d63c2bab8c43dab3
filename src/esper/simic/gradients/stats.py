"""Gradient statistics: per-step device tensors and their once-per-update host summary.

A step records only what the clipping pass produces anyway (per-tensor norms and the global
norm) plus the opt-in element counts; every derived statistic (min/max/mean, vanishing and
exploding counts, health, group norms) is computed once per update in ``materialize``, on
the host, after a single device-to-host copy. The per-step cost of telemetry is therefore
the norm pass alone, and nothing in the optimiser loop waits for the device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from esper.simic.gradients.gather import GradLayout

# Esper's health rule: vanishing tensors cost half their fraction, exploding ones 0.8 of it.
_VANISHING_PENALTY = 0.5
_EXPLODING_PENALTY = 0.8
# Esper's floor for the max/min norm ratio, so an all-zero tensor gives a large finite ratio.
_RATIO_FLOOR = 1e-10

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AsyncGradientStats:
    """One optimiser step's pre-clip statistics, still on the gradients' device (no host sync).

    Every measured value is a tensor; ``layout`` holds only names and sizes.
    """

    # Global L2 norm over all groups (0-dim), as clip_grad_norm_ returns it; None when the
    # collector measured nothing (``none`` without clipping).
    total_norm: torch.Tensor | None
    # L2 norm of each gradient tensor (1-D, fp32 or fp64); None for the ``none`` collector.
    tensor_norms: torch.Tensor | None
    # Which entries of tensor_norms belong to which group; None exactly when tensor_norms is.
    layout: GradLayout | None
    # int64 [zero, NaN, Inf] element counts over all gradients; None unless detail=True.
    element_counts: torch.Tensor | None


@dataclass(frozen=True, slots=True)
class TensorNormStats:
    """Statistics of the per-tensor L2 norms over every (step, tensor) pair of an update."""

    # Gradient tensors per step (the largest count if it varied between steps).
    num_tensors: int
    # Smallest / largest / mean finite per-tensor norm (0.0 with no tensors, NaN if none finite).
    min_norm: float
    max_norm: float
    mean_norm: float
    # max_norm / max(min_norm, 1e-10): spread between the strongest and weakest tensor.
    norm_ratio: float
    # (step, tensor) pairs with norm < vanishing_threshold, summed over the steps.
    vanishing_count: int
    # (step, tensor) pairs with norm > exploding_threshold or NaN (a NaN gradient is where an
    # explosion ends up), summed over the steps.
    exploding_count: int
    # (step, tensor) pairs whose norm is NaN or Inf, summed over the steps.
    nonfinite_count: int
    # The counts above divided by the number of (step, tensor) pairs (0.0 with none).
    vanishing_fraction: float
    exploding_fraction: float
    # Esper's score: 1 - 0.5 * vanishing_fraction - 0.8 * exploding_fraction, clamped to [0, 1].
    health: float
    # Mean over steps of each group's L2 norm (0 in a step where it had no gradient); a group
    # that never had a gradient is left out. NaN/Inf propagate, like the global norm.
    group_norms: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ElementStats:
    """Element-level statistics from the opt-in ``detail`` pass, over all steps of an update."""

    # Fraction of gradient elements exactly 0 (unstored elements of sparse gradients count).
    zero_fraction: float
    # Gradient elements that are NaN / +-Inf, summed over the steps.
    nan_count: int
    inf_count: int


@dataclass(frozen=True, slots=True)
class GradientStats:
    """Pre-clip gradient statistics of one PPO update, aggregated over its optimiser steps.

    A field is None when the collector did not measure it: ``none`` fills only the global
    norms (and those only when it clipped), ``elements`` needs ``detail=True``.
    """

    # Optimiser steps aggregated.
    num_steps: int
    # Mean / max over steps of the pre-clip global L2 norm (what clip_grad_norm_ returns).
    global_norm: float | None
    global_norm_max: float | None
    tensors: TensorNormStats | None
    elements: ElementStats | None

    def as_metrics(self) -> dict[str, float]:
        """Flat ``grad/...`` metrics for the logger; unmeasured fields are left out."""
        metrics = {"grad/steps": float(self.num_steps)}
        if self.global_norm is not None and self.global_norm_max is not None:
            metrics["grad/global_norm"] = self.global_norm
            metrics["grad/global_norm_max"] = self.global_norm_max
        if (t := self.tensors) is not None:
            metrics |= {f"grad/{name}_norm": norm for name, norm in t.group_norms.items()}
            metrics |= {
                "grad/num_tensors": float(t.num_tensors),
                "grad/tensor_norm_min": t.min_norm,
                "grad/tensor_norm_max": t.max_norm,
                "grad/tensor_norm_mean": t.mean_norm,
                "grad/tensor_norm_ratio": t.norm_ratio,
                "grad/vanishing_count": float(t.vanishing_count),
                "grad/exploding_count": float(t.exploding_count),
                "grad/nonfinite_count": float(t.nonfinite_count),
                "grad/vanishing_fraction": t.vanishing_fraction,
                "grad/exploding_fraction": t.exploding_fraction,
                "grad/health": t.health,
            }
        if (e := self.elements) is not None:
            metrics |= {
                "grad/zero_fraction": e.zero_fraction,
                "grad/nan_count": float(e.nan_count),
                "grad/inf_count": float(e.inf_count),
            }
        return metrics


def materialize(
    steps: Sequence[AsyncGradientStats], vanishing_threshold: float, exploding_threshold: float
) -> GradientStats:
    """Summarise the steps of one update with a single device-to-host copy.

    The steps' tensors must share one device (one model). A statistic is reported only if
    every step measured it; an empty ``steps`` gives ``num_steps=0`` and nothing measured.
    """
    if not steps:
        return GradientStats(0, None, None, None, None)
    totals = _every([s.total_norm for s in steps])
    norms = _every([s.tensor_norms for s in steps])
    layouts = _every([s.layout for s in steps])
    counts = _every([s.element_counts for s in steps])
    sections = [
        None if totals is None else torch.stack(totals),
        None if norms is None else torch.cat(norms),
        None if counts is None else torch.stack(counts).view(-1),
    ]
    present = [section for section in sections if section is not None]
    if not present:
        return GradientStats(len(steps), None, None, None, None)

    # The update's one host sync: every tensor of every step, packed into one fp64 vector
    # (fp64 holds the int64 counts exactly up to 2**53) and copied at once.
    host = torch.cat([section.to(torch.float64) for section in present]).cpu()
    lengths = [0 if section is None else section.numel() for section in sections]
    total_values, norm_values, count_values = host.split(lengths)

    tensors = elements = None
    if norms is not None and layouts is not None:
        tensors = _tensor_stats(norm_values, layouts, vanishing_threshold, exploding_threshold)
        if counts is not None:
            elements = _element_stats(count_values.view(-1, 3).sum(0), layouts)
    return GradientStats(
        num_steps=len(steps),
        global_norm=total_values.mean().item() if totals else None,
        global_norm_max=total_values.max().item() if totals else None,
        tensors=tensors,
        elements=elements,
    )


def _tensor_stats(
    norms: torch.Tensor,
    layouts: Sequence[GradLayout],
    vanishing_threshold: float,
    exploding_threshold: float,
) -> TensorNormStats:
    pairs = norms.numel()
    finite = norms[norms.isfinite()]
    if pairs == 0:  # no gradients at all: nothing is wrong, so the neutral values
        low = high = mean = 0.0
        ratio = 1.0
    elif finite.numel() == 0:
        low = high = mean = ratio = math.nan
    else:
        low, high = (v.item() for v in finite.aminmax())
        mean = finite.mean().item()
        ratio = high / max(low, _RATIO_FLOOR)
    vanishing = int((norms < vanishing_threshold).sum().item())
    # ``not norm <= threshold`` is true for NaN, which a ``>`` comparison would miss.
    exploding = int((~(norms <= exploding_threshold)).sum().item())
    vanishing_fraction = vanishing / pairs if pairs else 0.0
    exploding_fraction = exploding / pairs if pairs else 0.0
    health = 1.0 - _VANISHING_PENALTY * vanishing_fraction - _EXPLODING_PENALTY * exploding_fraction
    return TensorNormStats(
        num_tensors=max(layout.num_tensors for layout in layouts),
        min_norm=low,
        max_norm=high,
        mean_norm=mean,
        norm_ratio=ratio,
        vanishing_count=vanishing,
        exploding_count=exploding,
        nonfinite_count=pairs - finite.numel(),
        vanishing_fraction=vanishing_fraction,
        exploding_fraction=exploding_fraction,
        health=min(1.0, max(0.0, health)),
        group_norms=_group_norms(norms, layouts),
    )


def _group_norms(norms: torch.Tensor, layouts: Sequence[GradLayout]) -> dict[str, float]:
    """Mean over steps of each group's L2 norm, read off the per-tensor norms by their runs."""
    columns: dict[str, int] = {}
    for layout in layouts:
        for name in layout.group_names:
            columns.setdefault(name, len(columns))
    # segment[i] = step * groups + group column of norm i, so one index_add_ sums the squares
    # of every (step, group). Steps usually share one layout, so its column list is reused.
    column_lists: dict[GradLayout, list[int]] = {}
    segment: list[int] = []
    for step, layout in enumerate(layouts):
        if layout not in column_lists:
            owner = [0] * layout.num_tensors
            for local, start, stop in layout.runs:
                owner[start:stop] = [columns[layout.group_names[local]]] * (stop - start)
            column_lists[layout] = owner
        base = step * len(columns)
        segment += [base + column for column in column_lists[layout]]
    squares = torch.zeros(len(layouts) * len(columns), dtype=norms.dtype)
    squares.index_add_(0, torch.tensor(segment, dtype=torch.long), norms.square())
    means = squares.sqrt().view(len(layouts), len(columns)).mean(0).tolist()
    present = {
        columns[layout.group_names[local]] for layout in column_lists for local, _, _ in layout.runs
    }
    return {name: means[column] for name, column in columns.items() if column in present}


def _element_stats(counts: torch.Tensor, layouts: Sequence[GradLayout]) -> ElementStats:
    zeros, nans, infs = (int(c) for c in counts.tolist())
    numel = sum(layout.numel for layout in layouts)
    return ElementStats(
        zero_fraction=zeros / numel if numel else 0.0, nan_count=nans, inf_count=infs
    )


def _every(values: list[_T | None]) -> list[_T] | None:
    """``values`` if none is None, else None: a statistic counts only if every step has it."""
    if any(v is None for v in values):
        return None
    return [v for v in values if v is not None]
