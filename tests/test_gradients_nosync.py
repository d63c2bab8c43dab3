"""collect_and_clip never reads a tensor value back to the host; materialize does, once."""

import dataclasses

import pytest
import torch

from esper.simic.gradients import (
    AsyncGradientStats,
    CollectorConfig,
    CollectorName,
    GradLayout,
    build_collector,
)

# The Python entry points that turn a tensor value into a host value (a device sync on CUDA).
HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


class HostReadError(AssertionError):
    pass


def refuse_host_read(*_args: object, **_kwargs: object) -> None:
    raise HostReadError("a tensor value was read on the host")


def model_groups(device: str = "cpu") -> dict[str, list[torch.nn.Parameter]]:
    torch.manual_seed(0)
    actor = torch.nn.Linear(4, 3).to(device)
    critic = torch.nn.Linear(4, 1).to(device, torch.float64)
    x = torch.randn(8, 4, device=device)
    (actor(x).pow(2).sum() + critic(x.double()).sum().float()).backward()
    return {"actor": list(actor.parameters()), "critic": list(critic.parameters())}


@pytest.mark.parametrize("name", list(CollectorName))
@pytest.mark.parametrize("max_norm", [None, 0.1])
def test_collect_and_clip_reads_no_tensor_value(name, max_norm):
    collector = build_collector(CollectorConfig(name=name, detail=True))
    groups = model_groups()
    with pytest.MonkeyPatch.context() as patch:
        for method in HOST_READS:
            patch.setattr(torch.Tensor, method, refuse_host_read)
        with pytest.raises(HostReadError):  # the patch is live
            bool(torch.ones(()))
        steps = [collector.collect_and_clip(groups, max_norm) for _ in range(2)]
    # Outside the patch, materialize is where the values come back.
    assert collector.materialize(steps).num_steps == 2


@pytest.mark.parametrize("name", list(CollectorName))
def test_async_stats_hold_only_tensors(name):
    a = build_collector(CollectorConfig(name=name, detail=True)).collect_and_clip(
        model_groups(), 0.1
    )
    assert isinstance(a, AsyncGradientStats)
    for field in dataclasses.fields(a):
        value = getattr(a, field.name)
        if field.name == "layout":
            assert value is None or isinstance(value, GradLayout)
        else:
            assert value is None or isinstance(value, torch.Tensor), field.name
    if a.layout is not None:  # static metadata: names and sizes, never a measured float
        flat = [a.layout.num_tensors, a.layout.numel, *a.layout.group_names]
        flat += [n for run in a.layout.runs for n in run]
        assert all(isinstance(v, int | str) for v in flat)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sync debug mode needs CUDA")
@pytest.mark.parametrize("name", list(CollectorName))
def test_no_device_sync_on_cuda(name):
    collector = build_collector(CollectorConfig(name=name, detail=True))
    groups = model_groups("cuda")
    collector.collect_and_clip(groups, 0.1)  # warm up allocator and kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps = [collector.collect_and_clip(groups, 0.1) for _ in range(2)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert collector.materialize(steps).num_steps == 2
