"""Gradient statistics against hand-computed answers, for every collector that measures them."""

import math

import pytest
import torch

from esper.simic.gradients import CollectorConfig, CollectorName, build_collector

MEASURING = [CollectorName.loop, CollectorName.foreach, CollectorName.fused]


def param(*values: float, dtype: torch.dtype = torch.float32) -> torch.nn.Parameter:
    """A parameter whose gradient is ``values``."""
    grad = torch.tensor(values, dtype=dtype)
    p = torch.nn.Parameter(torch.zeros_like(grad))
    p.grad = grad
    return p


def collector(name: CollectorName, detail: bool = True):
    return build_collector(
        CollectorConfig(
            name=name, vanishing_threshold=1e-7, exploding_threshold=100.0, detail=detail
        )
    )


@pytest.mark.parametrize("name", MEASURING)
def test_hand_computed_statistics(name):
    # Norms: actor 5 and 0 (vanishing), critic 1000 (exploding).
    groups = {"actor": [param(3.0, 4.0), param(0.0, 0.0, 0.0)], "critic": [param(1000.0)]}
    c = collector(name)
    stats = c.materialize([c.collect_async(groups)])

    assert stats.num_steps == 1
    assert stats.global_norm == pytest.approx(math.sqrt(25 + 1000**2))
    assert stats.global_norm_max == stats.global_norm
    t = stats.tensors
    assert t is not None
    assert t.num_tensors == 3
    assert (t.min_norm, t.max_norm) == (0.0, 1000.0)
    assert t.mean_norm == pytest.approx(1005 / 3)
    assert t.norm_ratio == pytest.approx(1000 / 1e-10)
    assert (t.vanishing_count, t.exploding_count, t.nonfinite_count) == (1, 1, 0)
    assert t.vanishing_fraction == pytest.approx(1 / 3)
    assert t.exploding_fraction == pytest.approx(1 / 3)
    assert t.health == pytest.approx(1 - 0.5 / 3 - 0.8 / 3)
    assert dict(t.group_norms) == pytest.approx({"actor": 5.0, "critic": 1000.0})
    e = stats.elements
    assert e is not None
    assert e.zero_fraction == pytest.approx(3 / 6)
    assert (e.nan_count, e.inf_count) == (0, 0)


@pytest.mark.parametrize("name", MEASURING)
def test_statistics_describe_the_gradients_before_clipping(name):
    p = param(30.0, 40.0)
    c = collector(name)
    stats = c.materialize([c.collect_and_clip({"actor": [p]}, max_norm=1.0)])
    assert stats.global_norm == pytest.approx(50.0)
    assert stats.tensors.max_norm == pytest.approx(50.0)
    assert torch.linalg.vector_norm(p.grad).item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", MEASURING)
def test_aggregation_over_steps(name):
    c = collector(name)
    a, b = param(3.0, 4.0), param(0.0)  # step 1: actor 5, critic 0 (vanishing)
    first = c.collect_async({"actor": [a], "critic": [b]})
    a.grad, b.grad = torch.tensor([5.0, 12.0]), torch.tensor([200.0])  # actor 13, critic 200
    second = c.collect_async({"actor": [a], "critic": [b]})
    stats = c.materialize([first, second])

    assert stats.num_steps == 2
    assert stats.global_norm == pytest.approx((5.0 + math.sqrt(169 + 200**2)) / 2)
    assert stats.global_norm_max == pytest.approx(math.sqrt(169 + 200**2))
    t = stats.tensors
    assert (t.min_norm, t.max_norm) == pytest.approx((0.0, 200.0))
    assert t.mean_norm == pytest.approx((5 + 0 + 13 + 200) / 4)
    assert (t.vanishing_count, t.exploding_count) == (1, 1)
    assert t.vanishing_fraction == pytest.approx(1 / 4)
    assert t.health == pytest.approx(1 - 0.5 / 4 - 0.8 / 4)
    assert dict(t.group_norms) == pytest.approx({"actor": 9.0, "critic": 100.0})


@pytest.mark.parametrize("name", MEASURING)
@pytest.mark.parametrize(
    "groups",
    [{}, {"actor": []}, {"actor": [torch.nn.Parameter(torch.ones(3))], "recurrent": []}],
    ids=["no-groups", "empty-group", "no-grad"],
)
def test_no_gradient_gives_empty_statistics(name, groups):
    c = collector(name)
    stats = c.materialize([c.collect_and_clip(groups, max_norm=0.5)])
    assert stats.global_norm == 0.0
    t = stats.tensors
    assert (t.num_tensors, t.min_norm, t.max_norm, t.mean_norm) == (0, 0.0, 0.0, 0.0)
    assert (t.vanishing_count, t.exploding_count, t.nonfinite_count) == (0, 0, 0)
    assert (t.health, t.norm_ratio) == (1.0, 1.0)
    assert dict(t.group_norms) == {}
    assert stats.elements.zero_fraction == 0.0


@pytest.mark.parametrize("name", MEASURING)
def test_single_tensor(name):
    c = collector(name)
    stats = c.materialize([c.collect_async({"critic": [param(6.0, 8.0)]})])
    t = stats.tensors
    assert stats.global_norm == pytest.approx(10.0)
    assert (t.min_norm, t.max_norm, t.mean_norm, t.norm_ratio) == pytest.approx((10, 10, 10, 1))
    assert t.health == 1.0
    assert dict(t.group_norms) == pytest.approx({"critic": 10.0})


@pytest.mark.parametrize("name", MEASURING)
def test_nan_and_inf_gradients(name):
    groups = {"actor": [param(math.nan, 1.0), param(math.inf, 0.0)], "critic": [param(3.0, 4.0)]}
    c = collector(name)
    stats = c.materialize([c.collect_async(groups)])
    assert math.isnan(stats.global_norm)  # as clip_grad_norm_ reports it
    t = stats.tensors
    assert t.nonfinite_count == 2
    assert t.exploding_count == 2  # Inf > threshold, and NaN counts as exploding
    assert t.vanishing_count == 0
    # min/max/mean describe the finite norms only.
    assert (t.min_norm, t.max_norm, t.mean_norm, t.norm_ratio) == (5.0, 5.0, 5.0, 1.0)
    assert t.health == pytest.approx(1 - 0.8 * 2 / 3)
    assert math.isnan(t.group_norms["actor"])
    assert t.group_norms["critic"] == pytest.approx(5.0)
    e = stats.elements
    assert (e.nan_count, e.inf_count) == (1, 1)
    assert e.zero_fraction == pytest.approx(1 / 6)


@pytest.mark.parametrize("name", MEASURING)
def test_all_norms_nonfinite(name):
    c = collector(name)
    stats = c.materialize([c.collect_async({"actor": [param(math.nan)]})])
    t = stats.tensors
    assert all(math.isnan(v) for v in (t.min_norm, t.max_norm, t.mean_norm, t.norm_ratio))
    assert (t.nonfinite_count, t.exploding_count, t.health) == (1, 1, pytest.approx(0.2))


@pytest.mark.parametrize("name", MEASURING)
def test_fp16_norm_accumulates_in_fp32(name):
    # True norm 300 * sqrt(1e5) ~ 94868 overflows fp16 (max 65504).
    p = torch.nn.Parameter(torch.zeros(100_000, dtype=torch.float16))
    p.grad = torch.full_like(p, 300.0)
    c = collector(name)
    stats = c.materialize([c.collect_async({"actor": [p]})])
    assert stats.global_norm == pytest.approx(300 * math.sqrt(1e5), rel=1e-4)
    assert stats.tensors.nonfinite_count == 0
    assert stats.tensors.exploding_count == 1


@pytest.mark.parametrize("name", MEASURING)
def test_bf16_norm_accumulates_in_fp32(name):
    # bf16 keeps 8 significant bits: summing 1e5 squares in bf16 would stall far below 25000.
    p = torch.nn.Parameter(torch.zeros(100_000, dtype=torch.bfloat16))
    p.grad = torch.full_like(p, 0.5)
    c = collector(name)
    stats = c.materialize([c.collect_async({"actor": [p]})])
    assert stats.global_norm == pytest.approx(0.5 * math.sqrt(1e5), rel=1e-5)


@pytest.mark.parametrize("name", MEASURING)
def test_mixed_dtypes_inside_and_across_groups(name):
    # Buckets (fp32, fp16, fp64) interleave the groups' tensors; group norms must not mix them.
    groups = {
        "actor": [param(3.0, 4.0), param(1.0, 0.0, dtype=torch.float16), param(0.0, 2.0)],
        "critic": [param(6.0, 8.0, dtype=torch.float64), param(2.0)],
    }
    c = collector(name)
    stats = c.materialize([c.collect_async(groups)])
    assert stats.global_norm == pytest.approx(math.sqrt(134))
    assert dict(stats.tensors.group_norms) == pytest.approx(
        {"actor": math.sqrt(30), "critic": math.sqrt(104)}
    )
    assert (stats.tensors.min_norm, stats.tensors.max_norm) == pytest.approx((1.0, 10.0))


@pytest.mark.parametrize("name", MEASURING)
def test_sparse_gradient(name):
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    linear = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        embedding.weight.fill_(1.0)
        linear.weight.fill_(1.0)
    # Row 2 is looked up twice: the uncoalesced gradient stores it twice with value 1.
    linear(embedding(torch.tensor([1, 2, 2]))).sum().backward()
    assert not embedding.weight.grad.is_coalesced()
    c = collector(name)
    groups = {"actor": [embedding.weight], "critic": list(linear.parameters())}
    stats = c.materialize([c.collect_async(groups)])
    # Dense gradient: row 1 = 1, row 2 = 2 -> sqrt(3 * 1 + 3 * 4); linear grad = 3 * ones(3).
    assert stats.tensors.group_norms["actor"] == pytest.approx(math.sqrt(15))
    assert stats.tensors.group_norms["critic"] == pytest.approx(math.sqrt(27))
    assert stats.global_norm == pytest.approx(math.sqrt(42))
    assert stats.elements.zero_fraction == pytest.approx(24 / 33)


def test_none_collector_reports_only_the_clipping_norm():
    c = collector(CollectorName.none)
    clipped = c.materialize([c.collect_and_clip({"actor": [param(3.0, 4.0)]}, max_norm=1.0)])
    assert clipped.global_norm == pytest.approx(5.0)
    assert (clipped.tensors, clipped.elements) == (None, None)
    assert clipped.as_metrics() == pytest.approx(
        {"grad/steps": 1.0, "grad/global_norm": 5.0, "grad/global_norm_max": 5.0}
    )
    unclipped = c.materialize([c.collect_async({"actor": [param(3.0, 4.0)]})])
    assert unclipped.global_norm is None
    assert unclipped.as_metrics() == {"grad/steps": 1.0}


def test_materialize_nothing():
    stats = collector(CollectorName.fused).materialize([])
    assert (stats.num_steps, stats.global_norm, stats.tensors) == (0, None, None)
    assert stats.as_metrics() == {"grad/steps": 0.0}


def test_statistic_missing_in_one_step_is_not_reported():
    c = collector(CollectorName.fused)
    measured = c.collect_async({"actor": [param(3.0, 4.0)]})
    unmeasured = collector(CollectorName.none).collect_async({})
    stats = c.materialize([measured, unmeasured])
    assert (stats.num_steps, stats.global_norm, stats.tensors) == (2, None, None)


def test_as_metrics_keys():
    c = collector(CollectorName.fused)
    groups = {"actor": [param(3.0, 4.0)], "critic": [param(1.0)], "recurrent": []}
    metrics = c.materialize([c.collect_and_clip(groups, max_norm=0.5)]).as_metrics()
    assert set(metrics) == {
        "grad/steps",
        "grad/global_norm",
        "grad/global_norm_max",
        "grad/actor_norm",
        "grad/critic_norm",
        "grad/num_tensors",
        "grad/tensor_norm_min",
        "grad/tensor_norm_max",
        "grad/tensor_norm_mean",
        "grad/tensor_norm_ratio",
        "grad/vanishing_count",
        "grad/exploding_count",
        "grad/nonfinite_count",
        "grad/vanishing_fraction",
        "grad/exploding_fraction",
        "grad/health",
        "grad/zero_fraction",
        "grad/nan_count",
        "grad/inf_count",
    }
    assert all(type(v) is float for v in metrics.values())
    assert metrics["grad/actor_norm"] == pytest.approx(5.0)
