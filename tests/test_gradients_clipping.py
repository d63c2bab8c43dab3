"""Every collector clips exactly as torch.nn.utils.clip_grad_norm_(..., foreach=True) does."""

import math

import pytest
import torch

from esper.simic.gradients import CollectorConfig, CollectorName, build_collector

ALL = list(CollectorName)


def model_groups(dtype: torch.dtype = torch.float32) -> tuple[dict[str, list], list]:
    """A small actor-critic with a recurrent core and real gradients; returns groups, params."""
    torch.manual_seed(0)
    recurrent = torch.nn.GRU(6, 8).to(dtype)
    actor = torch.nn.Linear(8, 3).to(dtype)
    critic = torch.nn.Linear(8, 1).to(dtype)
    hidden, _ = recurrent(torch.randn(5, 2, 6, dtype=dtype))
    (actor(hidden).pow(2).sum() + critic(hidden).sum() * 3).backward()
    groups = {
        "actor": list(actor.parameters()),
        "critic": list(critic.parameters()),
        "recurrent": list(recurrent.parameters()),
    }
    return groups, [p for ps in groups.values() for p in ps]


def clone_grads(params: list) -> list[torch.Tensor]:
    return [p.grad.clone() for p in params]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("max_norm", [0.5, 1e6], ids=["clips", "below-max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_clipping_matches_clip_grad_norm(name, max_norm, dtype):
    groups, params = model_groups(dtype)
    reference_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for ref, p in zip(reference_params, params, strict=True):
        ref.grad = p.grad.clone()
    expected_total = torch.nn.utils.clip_grad_norm_(reference_params, max_norm, foreach=True)

    collector = build_collector(CollectorConfig(name=name))
    stats = collector.collect_and_clip(groups, max_norm=max_norm)

    # Same kernels in the same order as torch, so bit for bit, not just close.
    torch.testing.assert_close(stats.total_norm, expected_total, rtol=0, atol=0)
    for p, ref in zip(params, reference_params, strict=True):
        torch.testing.assert_close(p.grad, ref.grad, rtol=0, atol=0)
    if max_norm == 0.5:
        assert torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])).item() == (
            pytest.approx(0.5, rel=1e-5)
        )


@pytest.mark.parametrize("name", ALL)
def test_no_max_norm_leaves_gradients_untouched(name):
    """``collect_async`` and ``collect_and_clip`` without a ``max_norm`` only measure."""
    groups, params = model_groups()
    before = clone_grads(params)
    collector = build_collector(CollectorConfig(name=name))
    measured = collector.collect_async(groups)
    unclipped = collector.collect_and_clip(groups, max_norm=None)
    for p, grad in zip(params, before, strict=True):
        assert torch.equal(p.grad, grad)
    assert collector.materialize([measured]) == collector.materialize([unclipped])


@pytest.mark.parametrize("name", ALL)
def test_nonfinite_gradients_clip_like_torch(name):
    def fresh() -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
        params[0].grad = torch.tensor([math.inf, 1.0])
        params[1].grad = torch.tensor([3.0, 4.0])
        return params

    reference = fresh()
    torch.nn.utils.clip_grad_norm_(reference, 1.0, foreach=True)  # coef 1/inf = 0: inf*0 = NaN
    params = fresh()
    build_collector(CollectorConfig(name=name)).collect_and_clip({"actor": params}, 1.0)
    for p, ref in zip(params, reference, strict=True):
        torch.testing.assert_close(p.grad, ref.grad, equal_nan=True)


@pytest.mark.parametrize("name", ALL)
def test_fp16_clipping_does_not_overflow(name):
    # torch's own clip_grad_norm_ computes this norm in fp16, gets inf and zeroes the gradient.
    p = torch.nn.Parameter(torch.zeros(100_000, dtype=torch.float16))
    p.grad = torch.full_like(p, 300.0)
    build_collector(CollectorConfig(name=name)).collect_and_clip({"actor": [p]}, max_norm=1.0)
    expected = 300.0 / (300.0 * math.sqrt(1e5) + 1e-6)
    torch.testing.assert_close(p.grad, torch.full_like(p, expected), rtol=1e-3, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_mixed_dtype_clipping_matches_clip_grad_norm(name):
    def fresh() -> list[torch.nn.Parameter]:
        grads = [
            torch.tensor([3.0, 4.0]),
            torch.tensor([1.0, 0.5], dtype=torch.float16),
            torch.tensor([6.0, 8.0], dtype=torch.float64),
        ]
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return params

    reference = fresh()
    expected_total = torch.nn.utils.clip_grad_norm_(reference, 2.0, foreach=True)
    params = fresh()
    collector = build_collector(CollectorConfig(name=name))
    stats = collector.collect_and_clip({"actor": params[:2], "critic": params[2:]}, 2.0)
    # torch rounds the fp16 tensor's norm to fp16 (our fp32 norm differs by ~1e-6 relative).
    torch.testing.assert_close(stats.total_norm, expected_total, rtol=1e-5, atol=0)
    for p, ref in zip(params, reference, strict=True):
        assert p.grad.dtype == ref.grad.dtype
        torch.testing.assert_close(p.grad, ref.grad, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_sparse_gradient_is_clipped_with_the_dense_ones(name):
    # clip_grad_norm_ itself raises on a sparse gradient; compare with a densified reference.
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    linear = torch.nn.Linear(3, 2)
    linear(embedding(torch.tensor([1, 2, 2, 7]))).pow(2).sum().backward()
    dense_grads = [p.grad.to_dense().clone() for p in [embedding.weight, *linear.parameters()]]
    reference = [torch.nn.Parameter(torch.zeros_like(g)) for g in dense_grads]
    for ref, grad in zip(reference, dense_grads, strict=True):
        ref.grad = grad
    expected_total = torch.nn.utils.clip_grad_norm_(reference, 0.1, foreach=True)

    groups = {"actor": [embedding.weight], "critic": list(linear.parameters())}
    stats = build_collector(CollectorConfig(name=name)).collect_and_clip(groups, 0.1)
    torch.testing.assert_close(stats.total_norm, expected_total)
    assert embedding.weight.grad.is_sparse
    torch.testing.assert_close(embedding.weight.grad.to_dense(), reference[0].grad)
    for p, ref in zip(linear.parameters(), reference[1:], strict=True):
        torch.testing.assert_close(p.grad, ref.grad)


def test_duplicate_parameter_is_rejected():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    collector = build_collector(CollectorConfig(name=CollectorName.fused))
    with pytest.raises(ValueError, match="more than one gradient group"):
        collector.collect_and_clip({"actor": [p], "critic": [p]}, max_norm=1.0)
    assert torch.equal(p.grad, torch.ones(2))  # refused before clipping anything


def test_reserved_group_name_is_rejected():
    collector = build_collector(CollectorConfig(name=CollectorName.fused))
    with pytest.raises(ValueError, match="reserved"):
        collector.collect_and_clip({"global": []}, max_norm=None)
