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

    def gather(self, rows: torch.Tensor | None) -> "WeightBank":
        """The weights and Adam state of ``rows`` as a bank of their own, for an epoch's
        steps (``None``: all rows, this bank itself); :meth:`scatter` writes them back."""
        if rows is None:
            return self
        bank = WeightBank.__new__(WeightBank)
        bank.params = {n: p[rows] for n, p in self.params.items()}
        bank.exp_avg = {n: m[rows] for n, m in self.exp_avg.items()}
        bank.exp_avg_sq = {n: v[rows] for n, v in self.exp_avg_sq.items()}
        bank.steps = self.steps[rows]
        return bank

    @torch.no_grad()
    def scatter(self, rows: torch.Tensor | None, bank: "WeightBank") -> None:
        """Write a :meth:`gather`-ed bank back into ``rows``."""
        if rows is None:
            return
        for name in self.params:
            self.params[name][rows] = bank.params[name]
            self.exp_avg[name][rows] = bank.exp_avg[name]
            self.exp_avg_sq[name][rows] = bank.exp_avg_sq[name]
        self.steps[rows] = bank.steps

    def take(self) -> dict[str, torch.Tensor]:
        """Leaves for a training step, sharing the weights' storage."""
        return {n: p.detach().requires_grad_() for n, p in self.params.items()}

    def view(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weights of ``rows``, for validation."""
        return {n: p[rows] for n, p in self.params.items()}

    @torch.no_grad()
    def adam_step(self, leaves: dict[str, torch.Tensor]) -> None:
        """torch.optim.Adam's update (foreach, non-capturable) on each row's own step count."""
        self.steps += 1.0
        step_size = (-LEARNING_RATE / (1.0 - BETA1**self.steps)).float()
        bias_correction2_sqrt = (1.0 - BETA2**self.steps).sqrt().float()
        for name, leaf in leaves.items():
            grad = leaf.grad
            assert grad is not None
            shape = (-1,) + (1,) * (grad.dim() - 1)
            exp_avg, exp_avg_sq = self.exp_avg[name], self.exp_avg_sq[name]
            exp_avg.lerp_(grad, 1.0 - BETA1)
            exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1.0 - BETA2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt.view(shape)).add_(ADAM_EPS)
            leaf.detach().addcdiv_(exp_avg * step_size.view(shape), denom)
