"""What the learner needs from the other ranks of a data-parallel run (``torch.distributed``).

Every rank holds the same weights and computes the loss on its share of each minibatch.
One minibatch's gradient step then equals the step one process would take on the whole
minibatch:

- advantages are normalised with the moments of the whole minibatch, not of the share;
- each share's loss is weighted by its share of the minibatch's valid steps, so that
  summing the ranks' gradients gives the gradient of the whole minibatch's mean loss
  (masked recurrent minibatches hold different numbers of valid steps per rank);
- the gradients are summed before clipping, the gradient statistics and Adam.

All of it uses functional collectives, which ``torch.compile`` traces: the compiled whole
step keeps the gradient all-reduce inside its one graph. Why not DDP: its reducer hooks
autograd's ``backward()``, while the compiled step takes gradients with ``torch.func``,
which DDP does not see; one flat all-reduce per step is what DDP's bucketing does at
these model sizes anyway.
"""

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as collectives
from torch import nn


class MinibatchShare(NamedTuple):
    """This rank's part in one minibatch, from one all-reduce of three numbers."""

    advantage_mean: torch.Tensor
    advantage_std: torch.Tensor
    """Of the whole minibatch's valid steps (unbiased, as ``Tensor.std``)."""
    weight: torch.Tensor
    """This rank's valid steps over the minibatch's: what its loss is scaled by."""


class DataParallel:
    """The ranks of the default process group, seen from one of them."""

    def __init__(self) -> None:
        self.group = dist.group.WORLD
        self.world_size = dist.get_world_size()
        self.rank = dist.get_rank()

    def share(self, advantages: torch.Tensor, mask: torch.Tensor | None) -> MinibatchShare:
        """The minibatch's advantage moments and this rank's weight (float64 sums: the
        variance is formed from raw moments)."""
        keep = torch.ones_like(advantages, dtype=torch.bool) if mask is None else mask
        values = torch.where(keep, advantages, 0.0).double()
        count = keep.sum().double()
        local = torch.stack([count, values.sum(), values.square().sum()])
        total = self._sum(local)
        mean = total[1] / total[0]
        var = (total[2] - total[0] * mean.square()) / (total[0] - 1).clamp(min=1)
        dtype = advantages.dtype
        return MinibatchShare(
            mean.to(dtype), var.clamp(min=0).sqrt().to(dtype), (count / total[0]).to(dtype)
        )

    def sum_gradients(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Every rank's gradients summed, as one flat all-reduce."""
        flat = torch.cat([g.reshape(-1) for g in grads])
        summed = self._sum(flat)
        parts = summed.split([g.numel() for g in grads])
        return [part.view_as(g) for part, g in zip(parts, grads, strict=True)]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The ranks' mean of ``values`` (metrics, the epoch's KL for the early stop)."""
        return self._sum(values) / self.world_size

    def _sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) as a plain tensor, eager or traced: the wait is explicit."""
        return collectives.wait_tensor(collectives.all_reduce(tensor, "sum", self.group))

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank, as DDP starts."""
        with torch.no_grad():
            for tensor in (*module.parameters(), *module.buffers()):
                dist.broadcast(tensor, src=0, group=self.group)
