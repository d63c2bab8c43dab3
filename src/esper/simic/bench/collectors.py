"""Cost of the gradient-statistics collectors, next to the two numbers that bound it.

For each gradient shape the benchmark times every collector's ``collect_and_clip`` with and
without clipping, and in the same interleaved run ``clip_grad_norm_(foreach=True)`` alone
(what the trainer pays without telemetry) and one reduction over a flat tensor of the same
element count (what the memory system allows). ``materialize`` is timed on a realistic
number of steps and its cost shared out over them, as the trainer pays it once per update.

Ratios are paired: each round times every candidate once, the ratio is taken within the
round, and the median over rounds is reported. On a shared machine whose load drifts
between rounds this cancels the drift, where a ratio of two medians would keep any round
in which only one side was slowed.

Bandwidth accounting: a norm pass reads every gradient byte once; the clip multiply reads and
writes it (two passes). So ``loop``/``foreach`` with clipping move 4 passes (norm, norm again,
multiply), ``fused``/``none``/``clip_grad_norm_`` with clipping 3, the measuring collectors
without clipping 1. ``bandwidth_fraction`` is the achieved bytes/s over the flat reduction's.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.benchmark import Measurement, Timer

from esper.simic.gradients import (
    AsyncGradientStats,
    CollectorConfig,
    CollectorName,
    ParameterGroups,
    build_collector,
)

Shape = tuple[int, ...]
Key = tuple[str, bool]  # (candidate, clipping)

# Small multi-layer perceptron actor-critic as PPO uses on vector observations.
_PPO_MLP: tuple[Shape, ...] = (
    *((64, 8), (64,), (64, 64), (64,), (4, 64), (4,)),  # actor: 8 -> 64 -> 64 -> 4 actions
    *((64, 8), (64,), (64, 64), (64,), (1, 64), (1,)),  # critic: 8 -> 64 -> 64 -> value
)


@dataclass(frozen=True)
class BenchShape:
    """One set of gradient tensors to time the collectors on."""

    name: str
    shapes: tuple[Shape, ...]
    # "tiny", "many-small", "medium" or "large": which performance targets apply.
    category: str

    @property
    def numel(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


def _repeat(count: int, shape: Shape) -> tuple[Shape, ...]:
    return (shape,) * count


_MLP = BenchShape("ppo-mlp", _PPO_MLP, "tiny")
_MANY_SMALL = BenchShape("200x64x64", _repeat(200, (64, 64)), "many-small")
# 4 x 4M float32 = 64 MiB, beyond a typical last-level cache: memory bandwidth decides.
_LARGE = BenchShape("4x2048x2048", _repeat(4, (2048, 2048)), "large")
DEFAULT_SHAPES: tuple[BenchShape, ...] = (
    _MLP,
    _MANY_SMALL,
    BenchShape("50x256x256", _repeat(50, (256, 256)), "medium"),
    BenchShape("16x512x512", _repeat(16, (512, 512)), "medium"),
    _LARGE,
)
QUICK_SHAPES: tuple[BenchShape, ...] = (_MLP, _MANY_SMALL, _LARGE)

# Passes over the gradient bytes per call (see the module docstring).
_NORM, _CLIP = 1, 3
_PASSES: dict[Key, int] = {
    ("loop", True): _NORM + _CLIP,
    ("foreach", True): _NORM + _CLIP,
    ("fused", True): _CLIP,
    ("none", True): _CLIP,
    ("clip_grad_norm_", True): _CLIP,
    ("loop", False): _NORM,
    ("foreach", False): _NORM,
    ("fused", False): _NORM,
}
_REFERENCE: Key = ("bandwidth_ref", False)
_CLIP_GRAD_NORM: Key = ("clip_grad_norm_", True)
_MATERIALIZE: Key = ("materialize", False)
_MEASURING = {"loop", "foreach", "fused"}
_COLLECTORS = {name.value for name in CollectorName}


@dataclass(frozen=True)
class BenchSettings:
    """How to time: see ``run_collector_benchmark``."""

    repeats: int = 15
    min_run_time: float = 0.08
    threads: int = 1
    steps_per_update: int = 64
    max_norm: float = 1.0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    cpu_clock: bool = False


def run_collector_benchmark(
    shapes: Sequence[BenchShape] = DEFAULT_SHAPES,
    *,
    repeats: int = 15,
    min_run_time: float = 0.08,
    threads: int = 1,
    steps_per_update: int = 64,
    max_norm: float = 1.0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    cpu_clock: bool = False,
) -> list[dict[str, Any]]:
    """Time every candidate on every shape; one row per (shape, candidate, clipping).

    ``repeats`` rounds visit the candidates in a rotated order, each for ``min_run_time``
    seconds of ``Timer.blocked_autorange`` on ``threads`` intra-op threads, and the rounds'
    blocks are merged: a noisy spell on a shared machine then hits every candidate rather
    than one. Rows carry the median (``us``) and the fastest block (``us_min``, the cost with
    the least interference). ``materialize`` is timed on ``steps_per_update`` steps.

    ``cpu_clock`` times with the process's CPU time instead of wall time: on a CPU shared
    with other jobs, the time slices they take then stop counting (cache and memory-bus
    contention still does). It is meaningless for CUDA, whose kernels run off the CPU.

    Clipping costs the same whatever the coefficient (it always multiplies, see
    ``kernels.clip_``); after the first call the gradients sit at ``max_norm``, so repeated
    scaling never drives them towards slow denormals.
    """
    settings = BenchSettings(
        repeats, min_run_time, threads, steps_per_update, max_norm, device, dtype, cpu_clock
    )
    return [row for bench in shapes for row in _bench_shape(bench, settings)]


def _bench_shape(bench: BenchShape, settings: BenchSettings) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(0)
    params = []
    for shape in bench.shapes:
        p = torch.nn.Parameter(torch.empty(shape, device=settings.device, dtype=settings.dtype))
        p.grad = torch.randn(shape, generator=generator).to(p)
        params.append(p)
    half = len(params) // 2
    groups = {"actor": params[:half], "critic": params[half:]}
    flat = torch.randn(bench.numel, generator=generator).to(params[0])
    max_norm = settings.max_norm

    candidates: dict[Key, Callable[[], object]] = {
        _CLIP_GRAD_NORM: lambda: torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True),
        _REFERENCE: lambda: torch.linalg.vector_norm(flat),
    }
    for name in CollectorName:
        collector = build_collector(CollectorConfig(name=name))
        for clip in (True, False):
            limit = max_norm if clip else None
            candidates[name.value, clip] = _bind(collector.collect_and_clip, groups, limit)
    fused = build_collector(CollectorConfig(name=CollectorName.fused))
    steps = [fused.collect_async(groups) for _ in range(settings.steps_per_update)]
    candidates[_MATERIALIZE] = lambda: fused.materialize(steps)

    rounds = _time_interleaved(candidates, settings)
    merged = {key: Measurement.merge(blocks)[0] for key, blocks in rounds.items()}
    us_rounds = {key: [block.median * 1e6 for block in blocks] for key, blocks in rounds.items()}
    return [_row(bench, key, merged, us_rounds, settings) for key in rounds]


def _bind(
    collect: Callable[[ParameterGroups, float | None], AsyncGradientStats],
    groups: ParameterGroups,
    max_norm: float | None,
) -> Callable[[], object]:
    return lambda: collect(groups, max_norm)


def _time_interleaved(
    candidates: dict[Key, Callable[[], object]], settings: BenchSettings
) -> dict[Key, list[Measurement]]:
    """Each candidate's block of every round, in round order."""
    keys = list(candidates)
    clock = {"timer": time.process_time} if settings.cpu_clock else {}
    timers = {
        key: Timer("run()", globals={"run": candidates[key]}, num_threads=settings.threads, **clock)
        for key in keys
    }
    blocks: dict[Key, list[Measurement]] = {key: [] for key in keys}
    for round_index in range(settings.repeats):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            blocks[key].append(timers[key].blocked_autorange(min_run_time=settings.min_run_time))
    return blocks


def _row(
    bench: BenchShape,
    key: Key,
    merged: dict[Key, Measurement],
    us_rounds: dict[Key, list[float]],
    settings: BenchSettings,
) -> dict[str, Any]:
    """``key``'s row from every candidate's merged blocks and per-round medians (us)."""
    name, clip = key
    m = merged[key]
    us = {k: t.median * 1e6 for k, t in merged.items()}
    row: dict[str, Any] = {
        "shape": bench.name,
        "category": bench.category,
        "tensors": len(bench.shapes),
        "numel": bench.numel,
        "implementation": name,
        "clip": clip,
        "us": us[key],
        "us_min": min(m.times) * 1e6,
        "iqr_us": m.iqr * 1e6,
        "us_rounds": us_rounds[key],
        "threads": settings.threads,
        "device": settings.device,
        "dtype": str(settings.dtype).removeprefix("torch."),
        "steps_per_update": settings.steps_per_update,
        "clock": "cpu" if settings.cpu_clock else "wall",
    }
    row |= _paired(key, us_rounds)
    if name in _MEASURING:  # its share of the once-per-update materialize
        row["us_with_materialize"] = us[key] + us[_MATERIALIZE] / settings.steps_per_update
    else:
        row["us_with_materialize"] = None
    return row


def _derived(key: Key, us: dict[Key, float]) -> dict[str, float | None]:
    """Ratios of ``key``'s time to loop's, clip_grad_norm_'s and the bandwidth reference's."""
    name, clip = key
    passes = _PASSES.get(key)
    return {
        "speedup_vs_loop": us["loop", clip] / us[key] if name in _COLLECTORS else None,
        "vs_clip_grad_norm": us[key] / us[_CLIP_GRAD_NORM] if clip else None,
        "bandwidth_fraction": None if passes is None else passes * us[_REFERENCE] / us[key],
    }


def _paired(key: Key, us_rounds: dict[Key, list[float]]) -> dict[str, float | None]:
    """``_derived``'s ratios taken within each round, then their median over rounds."""
    per_round = [
        _derived(key, {k: times[i] for k, times in us_rounds.items()})
        for i in range(len(us_rounds[key]))
    ]
    medians: dict[str, float | None] = {}
    for column, first in per_round[0].items():
        medians[column] = None if first is None else statistics.median(r[column] for r in per_round)
    return medians


def check_targets(
    rows: Sequence[dict[str, Any]], statistic: str = "paired"
) -> list[dict[str, Any]]:
    """Each performance target with whether it was met and its worst case, from ``statistic``.

    ``statistic`` is ``"paired"`` (median over rounds of within-round ratios, see the module
    docstring), ``"us"`` (ratio of medians) or ``"us_min"`` (ratio of fastest blocks).
    """
    field = "us_rounds" if statistic == "paired" else statistic
    by_shape: dict[str, dict[Key, Any]] = {}
    categories: dict[str, str] = {}
    for row in rows:
        by_shape.setdefault(row["shape"], {})[row["implementation"], row["clip"]] = row[field]
        categories[row["shape"]] = row["category"]
    derive = _paired if statistic == "paired" else _derived

    def ratios(column: str, keys: Sequence[Key], category: str | None = None) -> list[float]:
        values = []
        for shape, us in by_shape.items():
            if category is None or category == categories[shape]:
                values += [v for key in keys if (v := derive(key, us)[column]) is not None]
        return values

    measured = [key for key in _PASSES if key != _CLIP_GRAD_NORM]
    # foreach's target is on the statistics, the collection it replaces loop's for. With
    # clipping, both then run the same clip_grad_norm_-equivalent pass, which bounds their
    # ratio at (loop + clip) / (foreach + clip); ``fused`` is the collector that drops it.
    checks = [
        (
            "foreach >= 1.6x loop on many-small shapes, statistics only",
            ratios("speedup_vs_loop", [("foreach", False)], "many-small"),
            min,
            1.6,
        ),
        (
            "fused+clip <= 1.1x clip_grad_norm_ on every shape",
            ratios("vs_clip_grad_norm", [("fused", True)]),
            max,
            1.1,
        ),
        (
            "every implementation >= 80% of the bandwidth reference on large shapes",
            ratios("bandwidth_fraction", measured, "large"),
            min,
            0.8,
        ),
    ]
    results = []
    for description, values, worst_of, bound in checks:
        worst = worst_of(values) if values else None
        met = worst is not None and (worst >= bound if worst_of is min else worst <= bound)
        results.append({"target": description, "statistic": statistic, "met": met, "worst": worst})
    return results


_TABLE = (  # header, row key, format
    ("shape", "shape", "{}"),
    ("impl", "implementation", "{}"),
    ("clip", "clip", "{}"),
    ("us/call", "us", "{:.1f}"),
    ("min", "us_min", "{:.1f}"),
    ("iqr", "iqr_us", "{:.1f}"),
    ("x loop", "speedup_vs_loop", "{:.2f}"),
    ("/clip_grad", "vs_clip_grad_norm", "{:.2f}"),
    ("us+mat", "us_with_materialize", "{:.1f}"),
    ("bw frac", "bandwidth_fraction", "{:.2f}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Fixed-width text table of ``rows``; a blank cell does not apply to that row."""
    cells = [[header for header, _, _ in _TABLE]]
    cells += [
        ["" if row[k] is None else fmt.format(row[k]) for _, k, fmt in _TABLE] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_TABLE))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    )
