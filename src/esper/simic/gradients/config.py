"""Configuration of the gradient-statistics collector.

A plain dataclass with an ``enum.Enum`` name, so the trainer can embed it in its OmegaConf
structured-config schema (OmegaConf supports Enum and dataclass fields, not Literal/Union).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CollectorName(enum.Enum):
    """Registered collector implementations (see ``esper.simic.gradients.collectors``)."""

    loop = "loop"
    foreach = "foreach"
    fused = "fused"
    none = "none"


class NonFinitePolicy(enum.Enum):
    """What the update does with an optimiser step whose gradients hold NaN or Inf
    (``agent.on_nonfinite``: a training policy, not a statistic)."""

    # Drop the step (the optimiser leaves weights and moments untouched) and count it.
    skip = "skip"
    # Drop the step, then end the run after the update, checkpoint first.
    abort = "abort"
    # Apply the step anyway and warn: only for debugging a run that must go on.
    warn = "warn"


@dataclass
class CollectorConfig:
    """Which collector to build and the thresholds its statistics are judged by."""

    # Implementation: loop (one norm call per tensor), foreach (torch._foreach_norm), fused
    # (foreach norms reused for clipping) or none (clip only, no statistics). The run's
    # default is conf/config.yaml's choice of the collector group.
    name: CollectorName = CollectorName.foreach
    # A gradient tensor whose L2 norm is below this counts as vanishing (Esper's PPO default).
    vanishing_threshold: float = 1e-7
    # A gradient tensor whose L2 norm is above this (or NaN) counts as exploding.
    exploding_threshold: float = 100.0
    # Opt-in extra pass over every gradient element: zero fraction and NaN/Inf element counts.
    detail: bool = False
