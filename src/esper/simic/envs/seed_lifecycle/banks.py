"""Stacked weights of one module kind, a row per env, with Adam's state per row.

The batched real host (:mod:`.batched_host`) keeps its hosts in one bank and each
(slot, blueprint) pair's seeds in another; each row is updated as that env's own
``torch.optim.Adam`` (``foreach``, the per-env host's) would update it.
"""

from typing import Final

import torch
from torch import nn

from esper.simic.envs.seed_lifecycle.mlp_host import LEARNING_RATE

# torch.optim.Adam's defaults, which the per-env host uses.
BETA1: Final = 0.9
BETA2: Final = 0.999
ADAM_EPS: Final = 1e-8


class WeightBank:
    """One module kind's weights for every env, stacked, with Adam's state per row."""

    def __init__(self, template: nn.Module, num_rows: int, device: torch.device) -> None:
        shapes = {name: p.shape for name, p in template.named_parameters()}
        self.params = {n: torch.zeros(num_rows, *s, device=device) for n, s in shapes.items()}
        self.exp_avg = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.steps = torch.zeros(num_rows, dtype=torch.float64, device=device)

    @torch.no_grad()
    def write(self, row: int, module: nn.Module) -> None:
        """Put a freshly initialised module in ``row`` with a fresh optimiser state."""
        for name, p in module.named_parameters():
            self.params[name][row] = p.detach()
            self.exp_avg[name][row] = 0.0
            self.exp_avg_sq[name][row] = 0.0
        self.steps[row] = 0.0

    def take(self, rows: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Leaves for a training step: all rows (in place) or a gathered copy of ``rows``."""
        return {
            n: (p if rows is None else p[rows]).detach().requires_grad_()
            for n, p in self.params.items()
        }

    def view(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weights of ``rows``, for validation."""
        return {n: p[rows] for n, p in self.params.items()}

    @torch.no_grad()
    def adam_step(self, rows: torch.Tensor | None, leaves: dict[str, torch.Tensor]) -> None:
        """torch.optim.Adam's update (foreach, non-capturable) on each row's own step count."""
        steps = (self.steps if rows is None else self.steps[rows]) + 1.0
        if rows is None:
            self.steps.copy_(steps)
        else:
            self.steps[rows] = steps
        step_size = (-LEARNING_RATE / (1.0 - BETA1**steps)).float()
        bias_correction2_sqrt = (1.0 - BETA2**steps).sqrt().float()
        for name, leaf in leaves.items():
            grad = leaf.grad
            assert grad is not None
            shape = (-1,) + (1,) * (grad.dim() - 1)
            exp_avg = self.exp_avg[name] if rows is None else self.exp_avg[name][rows]
            exp_avg_sq = self.exp_avg_sq[name] if rows is None else self.exp_avg_sq[name][rows]
            exp_avg.lerp_(grad, 1.0 - BETA1)
            exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1.0 - BETA2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt.view(shape)).add_(ADAM_EPS)
            param = leaf.detach()
            param.addcdiv_(exp_avg * step_size.view(shape), denom)
            if rows is not None:
                self.params[name][rows] = param
                self.exp_avg[name][rows] = exp_avg
                self.exp_avg_sq[name][rows] = exp_avg_sq
