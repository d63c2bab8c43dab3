"""Property: every implementation reports the same statistics and clips the same way."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.simic.gradients import CollectorConfig, CollectorName, GradientStats, build_collector

GROUPS = ("actor", "critic", "recurrent")
# Scales that reach the vanishing (< 1e-7) and exploding (> 100) branches as well as the middle.
SCALES = (0.0, 1e-9, 1e-3, 1.0, 1e3)

gradient_specs = st.lists(
    st.tuples(
        st.lists(st.integers(1, 5), min_size=1, max_size=3),  # shape
        st.sampled_from(GROUPS),
        st.sampled_from((torch.float32, torch.float64, torch.float16, torch.bfloat16)),
        st.sampled_from(SCALES),
        st.integers(0, 2**31 - 1),  # seed of the values
    ),
    min_size=0,
    max_size=8,
)


def build_groups(specs: list) -> dict[str, list[torch.nn.Parameter]]:
    groups: dict[str, list[torch.nn.Parameter]] = {name: [] for name in GROUPS}
    for shape, group, dtype, scale, seed in specs:
        values = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.grad = values.to(dtype)
        groups[group].append(p)
    return groups


def as_numbers(stats: GradientStats) -> dict[str, float]:
    numbers = stats.as_metrics()
    assert stats.tensors is not None
    numbers |= {f"group/{k}": v for k, v in stats.tensors.group_norms.items()}
    return numbers


@settings(max_examples=50, deadline=None)
@given(specs=gradient_specs, max_norm=st.sampled_from((None, 0.5, 1e9)))
def test_implementations_agree(specs, max_norm):
    results: dict[CollectorName, tuple[dict[str, float], list[torch.Tensor]]] = {}
    for name in CollectorName:
        groups = build_groups(specs)
        collector = build_collector(CollectorConfig(name=name, detail=True))
        stats = collector.materialize([collector.collect_and_clip(groups, max_norm)])
        grads = [p.grad for ps in groups.values() for p in ps]
        results[name] = (stats, grads)

    reference_stats, reference_grads = results[CollectorName.loop]
    expected = as_numbers(reference_stats)
    for name in (CollectorName.foreach, CollectorName.fused):
        stats, grads = results[name]
        assert as_numbers(stats) == pytest.approx(expected, rel=1e-5, abs=1e-12, nan_ok=True)
        for grad, reference in zip(grads, reference_grads, strict=True):
            torch.testing.assert_close(grad, reference)
    none_stats, none_grads = results[CollectorName.none]
    if max_norm is None:
        assert none_stats.global_norm is None
    else:
        assert none_stats.global_norm == pytest.approx(reference_stats.global_norm, rel=1e-5)
    for grad, reference in zip(none_grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, reference)


@settings(max_examples=50, deadline=None)
@given(specs=gradient_specs)
def test_statistics_match_a_float64_reference(specs):
    groups = build_groups(specs)
    norms = {
        name: [torch.linalg.vector_norm(p.grad.double()).item() for p in ps]
        for name, ps in groups.items()
    }
    every = [n for ns in norms.values() for n in ns]
    collector = build_collector(CollectorConfig(name=CollectorName.fused))
    stats = collector.materialize([collector.collect_async(groups)])

    assert stats.global_norm == pytest.approx(math.sqrt(sum(n * n for n in every)), rel=1e-5)
    t = stats.tensors
    assert t.num_tensors == len(every)
    vanishing, exploding = sum(n < 1e-7 for n in every), sum(n > 100.0 for n in every)
    assert (t.vanishing_count, t.exploding_count) == (vanishing, exploding)
    expected_groups = {k: math.sqrt(sum(n * n for n in ns)) for k, ns in norms.items() if ns}
    assert dict(t.group_norms) == pytest.approx(expected_groups, rel=1e-5)
    if every:
        assert (t.min_norm, t.max_norm) == pytest.approx((min(every), max(every)), rel=1e-5)
        assert t.mean_norm == pytest.approx(sum(every) / len(every), rel=1e-5)
        penalty = (0.5 * vanishing + 0.8 * exploding) / len(every)
        assert t.health == pytest.approx(max(0.0, 1 - penalty))
