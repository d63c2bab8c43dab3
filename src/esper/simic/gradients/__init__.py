"""Swappable gradient-statistics collectors for the PPO update.

Once per optimiser step, right after ``backward()``::

    step_stats.append(collector.collect_and_clip(groups, max_norm))  # tensors, no host sync

and once per update::

    metrics = collector.materialize(step_stats).as_metrics()  # one host sync
"""

from esper.simic.gradients.collectors import (
    COLLECTORS,
    ForeachCollector,
    FusedCollector,
    GradientCollector,
    LoopCollector,
    NoneCollector,
    ParameterGroups,
    build_collector,
)
from esper.simic.gradients.config import CollectorConfig, CollectorName, NonFinitePolicy
from esper.simic.gradients.gather import GradLayout
from esper.simic.gradients.stats import (
    AsyncGradientStats,
    ElementStats,
    GradientStats,
    TensorNormStats,
)

__all__ = [
    "COLLECTORS",
    "AsyncGradientStats",
    "CollectorConfig",
    "CollectorName",
    "ElementStats",
    "ForeachCollector",
    "FusedCollector",
    "GradLayout",
    "GradientCollector",
    "GradientStats",
    "LoopCollector",
    "NonFinitePolicy",
    "NoneCollector",
    "ParameterGroups",
    "TensorNormStats",
    "build_collector",
]
