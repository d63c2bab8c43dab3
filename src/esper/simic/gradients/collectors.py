"""Swappable gradient-statistics collectors and the registry that builds them by name.

All four leave the gradients exactly as ``torch.nn.utils.clip_grad_norm_(params, max_norm,
foreach=True)`` would (except that fp16/bf16 norms accumulate in fp32 and sparse gradients
work, where torch overflows or raises). They differ in how the statistics are measured, so
their cost can be compared:

- ``loop``: one ``Tensor.norm`` per gradient, then a clipping pass of its own (the "before").
- ``foreach``: one ``torch._foreach_norm`` per bucket, then a clipping pass of its own.
- ``fused``: the ``foreach`` norms feed the clipping too, so telemetry costs no extra pass.
- ``none``: no statistics, only clipping: the cost floor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, NamedTuple

import torch

from esper.simic.gradients.config import CollectorConfig, CollectorName
from esper.simic.gradients.gather import GradBatch, GradLayout, gather
from esper.simic.gradients.kernels import (
    clip_,
    element_counts,
    foreach_norms,
    loop_norms,
    total_norm,
)
from esper.simic.gradients.stats import AsyncGradientStats, GradientStats, materialize

ParameterGroups = Mapping[str, Iterable[torch.Tensor]]


class StepMeasurement(NamedTuple):
    """What one step measured, as tensors: ``AsyncGradientStats`` without its layout."""

    total_norm: torch.Tensor | None
    tensor_norms: torch.Tensor | None
    element_counts: torch.Tensor | None


class GradientCollector(ABC):
    """Measures each optimiser step's pre-clip gradients as tensors and clips them.

    ``collect_and_clip`` runs once per optimiser step, right after ``backward()``, and never
    syncs with the device; ``materialize`` runs once per update and syncs exactly once.
    """

    name: ClassVar[CollectorName]

    def __init__(self, config: CollectorConfig) -> None:
        # The thresholds' order is checked at the config door (``config.check_cross_field``).
        self.config = config

    def collect_async(self, groups: ParameterGroups) -> AsyncGradientStats:
        """Measure the gradients of ``groups`` (name -> parameters) and leave them as they
        are: tensors only, no host sync (``collect_and_clip`` without a ``max_norm``)."""
        return self.collect_and_clip(groups, None)

    def collect_and_clip(
        self, groups: ParameterGroups, max_norm: float | None
    ) -> AsyncGradientStats:
        """Measure the gradients of ``groups`` (name -> parameters), then clip them in place.

        ``max_norm=None`` leaves the gradients untouched. Clipping uses the global L2 norm
        over all groups, as one ``clip_grad_norm_`` call over every parameter would.
        """
        batch = gather(groups)
        return self.stats(self.measure_and_clip_(batch, max_norm), batch.layout)

    @abstractmethod
    def measure_and_clip_(self, batch: GradBatch, max_norm: float | None) -> StepMeasurement:
        """``collect_and_clip`` after the gathering: tensor work only, no Python decisions
        on values, so a compiled training step runs it inside its graph on a ``GradBatch``
        built from the gradients it computed (``bucket_tensors`` plans the layout)."""

    @staticmethod
    def stats(measured: StepMeasurement, layout: GradLayout) -> AsyncGradientStats:
        """The step's ``AsyncGradientStats`` from its measurement and its static layout."""
        norms = measured.tensor_norms
        return AsyncGradientStats(
            measured.total_norm, norms, None if norms is None else layout, measured.element_counts
        )

    def materialize(self, steps: Sequence[AsyncGradientStats]) -> GradientStats:
        """Aggregate the steps of one update into host numbers, with one device sync."""
        return materialize(steps, self.config.vanishing_threshold, self.config.exploding_threshold)


class _NormCollector(GradientCollector):
    """The collectors that measure per-tensor norms; subclasses choose how."""

    # True: clip with the telemetry norms. False: clip after a norm pass of its own, as a
    # clip_grad_norm_ call following the statistics would.
    reuses_norms: ClassVar[bool] = False

    @abstractmethod
    def _norms(self, batch: GradBatch) -> torch.Tensor:
        """Per-tensor L2 norms of ``batch``, in its layout order."""

    @torch.no_grad()
    def measure_and_clip_(self, batch: GradBatch, max_norm: float | None) -> StepMeasurement:
        norms = self._norms(batch)
        # Counted before clipping rescales: Inf times a zero coefficient would turn into NaN.
        counts = element_counts(batch) if self.config.detail else None
        if max_norm is None:
            total = total_norm(norms)
        elif self.reuses_norms:
            total = clip_(batch, norms, max_norm)
        else:
            total = clip_(batch, foreach_norms(batch), max_norm)
        return StepMeasurement(total, norms, counts)


class LoopCollector(_NormCollector):
    """One ``Tensor.norm`` call per gradient: Esper's original loop, kept as the baseline."""

    name = CollectorName.loop

    def _norms(self, batch: GradBatch) -> torch.Tensor:
        return loop_norms(batch)


class ForeachCollector(_NormCollector):
    """``torch._foreach_norm`` over each (device, dtype) bucket, then a separate clip pass."""

    name = CollectorName.foreach

    def _norms(self, batch: GradBatch) -> torch.Tensor:
        return foreach_norms(batch)


class FusedCollector(ForeachCollector):
    """``foreach`` norms computed once and reused for clipping: telemetry at no extra pass."""

    name = CollectorName.fused
    reuses_norms = True


class NoneCollector(GradientCollector):
    """No statistics, only clipping (``detail`` is ignored): the cost floor to compare with.

    Its ``GradientStats`` has only ``num_steps`` and, when it clipped, the global norms that
    clipping computes anyway; ``tensors`` and ``elements`` are None.
    """

    name = CollectorName.none

    def collect_and_clip(
        self, groups: ParameterGroups, max_norm: float | None
    ) -> AsyncGradientStats:
        if max_norm is None:  # nothing to measure or clip: skip even the gathering
            return AsyncGradientStats(None, None, None, None)
        return super().collect_and_clip(groups, max_norm)

    @torch.no_grad()
    def measure_and_clip_(self, batch: GradBatch, max_norm: float | None) -> StepMeasurement:
        if max_norm is None:
            return StepMeasurement(None, None, None)
        return StepMeasurement(clip_(batch, foreach_norms(batch), max_norm), None, None)


COLLECTORS: Mapping[CollectorName, type[GradientCollector]] = {
    cls.name: cls for cls in (LoopCollector, ForeachCollector, FusedCollector, NoneCollector)
}


def build_collector(config: CollectorConfig) -> GradientCollector:
    """Build the collector ``config.name`` names (a ``CollectorName`` or its string value)."""
    return COLLECTORS[CollectorName(config.name)](config)
