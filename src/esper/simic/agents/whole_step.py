"""One PPO gradient step as ONE compiled graph: forward, loss, backward, gradient statistics
with clipping, the non-finite guard and the Adam update.

Why one graph: at PPO's sizes (a few 64-unit layers, 256-sample minibatches) a step is
dominated by per-op dispatch, not arithmetic. Compiling only forward, loss and backward
left the gradient collector, clipping and the optimiser as dozens of eager ops per step;
inside one graph inductor fuses them into a few kernels (about 3x less time per step on
CPU than the eager step).

The step writes into the same tensors the eager path uses: the policy's parameters and
``torch.optim.Adam``'s ``step``/``exp_avg``/``exp_avg_sq`` state, so checkpoints, the
learning-rate schedule and a switch between paths all see one optimiser. The gradients
never reach ``param.grad``; the collector measures and clips them inside the graph
(``GradientCollector.measure_and_clip_`` on a ``GradBatch`` planned once by
``bucket_tensors``), so every collector reports what its eager run would.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import grad_and_value

from esper.simic.gradients import AsyncGradientStats, GradientCollector, NonFinitePolicy
from esper.simic.gradients.collectors import StepMeasurement
from esper.simic.gradients.gather import GradBatch, bucket_tensors

Scalars = dict[str, torch.Tensor]
LossFn = Callable[[tuple[torch.Tensor, ...], Any], tuple[torch.Tensor, Scalars]]
"""(parameters in ``named_parameters`` order, minibatch) -> (loss, detached 0-dim metrics)."""
GradientSum = Callable[[list[torch.Tensor]], list[torch.Tensor]]
"""A data-parallel rank's gradients -> their sum over ranks (traceable collectives)."""


class StepResult(NamedTuple):
    scalars: Scalars
    grad_stats: AsyncGradientStats
    nonfinite: torch.Tensor
    """0-dim bool: the step's gradients held NaN/Inf."""
    nonfinite_params: torch.Tensor | None
    """[num_params] bool under ``on_nonfinite=abort`` (to name the culprits), else None."""


@torch.no_grad()
def adam_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    steps: Sequence[torch.Tensor],
    lr: torch.Tensor,
    betas: tuple[float, float],
    eps: float,
    skip: torch.Tensor | None,
) -> None:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) as plain tensor ops, in place.

    The same arithmetic as torch's single-tensor Adam. ``skip`` (0-dim bool) leaves
    weights, moments and step counts untouched where set, as fused Adam does with
    ``found_inf``; a ``where`` instead of a branch keeps the decision on the device.
    """
    beta1, beta2 = betas
    for param, grad, exp_avg, exp_avg_sq, step in zip(
        params, grads, exp_avgs, exp_avg_sqs, steps, strict=True
    ):
        new_step = step + 1
        new_avg = exp_avg.lerp(grad, 1 - beta1)
        new_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1**new_step
        bias_correction2_sqrt = (1 - beta2**new_step).sqrt()
        denom = new_avg_sq.sqrt() / bias_correction2_sqrt + eps
        new_param = param - (lr / bias_correction1) * new_avg / denom
        updates = ((step, new_step), (exp_avg, new_avg), (exp_avg_sq, new_avg_sq))
        for old, new in (*updates, (param, new_param)):
            old.copy_(new if skip is None else torch.where(skip, old, new))


class CompiledStep:
    """``torch.compile`` of one whole gradient step of a learner's loss on its parameters."""

    def __init__(
        self,
        loss_fn: LossFn,
        params: Sequence[nn.Parameter],
        groups: Mapping[str, Sequence[nn.Parameter]],
        collector: GradientCollector,
        max_norm: float | None,
        optimizer: torch.optim.Adam,
        on_nonfinite: NonFinitePolicy,
        sum_gradients: GradientSum | None = None,
    ) -> None:
        group = optimizer.param_groups[0]
        if len(optimizer.param_groups) != 1 or group["weight_decay"] or group["amsgrad"]:
            raise ValueError("the compiled step implements plain Adam over one parameter group")
        self._loss_fn = loss_fn
        self._params = tuple(params)
        # Aliases of the parameters without autograd history, so the graph updates them in place.
        self._data = tuple(p.detach() for p in params)
        self._collector = collector
        self._max_norm = max_norm
        self._optimizer = optimizer
        # Read once: a value read inside the graph becomes a guard (a change, a recompile).
        self._betas, self._eps = group["betas"], group["eps"]
        self._policy = on_nonfinite
        self._sum_gradients = sum_gradients
        # The gradients' bucket plan: the parameters stand in for their gradients (same
        # shapes, dtypes, devices), and every parameter gets a gradient in a functional step.
        plan = bucket_tensors(groups)
        if plan.sparse:
            raise ValueError("the compiled step needs dense parameters")
        position = {id(p): i for i, p in enumerate(self._params)}
        self._order = tuple(tuple(position[id(t)] for t in bucket) for bucket in plan.buckets)
        self._layout, self._device = plan.layout, plan.device
        self._lr = torch.zeros((), device=self._device)
        # Only tensor guards, in a cache of this step's own (``isolate_recompiles``: another
        # learner's graphs are never looked up): every input that changes between steps is
        # a tensor (batch, parameters, optimiser state, learning rate), while the policy's
        # modules, the collector and the constants above are fixed for this object's life.
        # Checking the ~400 other guards (module and function identities) cost ~0.3 ms per
        # step on a 2-core CPU.
        self._compiled = torch.compile(
            self._step,
            options={"guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe},
            isolate_recompiles=True,
        )

    def __call__(self, batch: Any) -> StepResult:
        """One optimiser step on ``batch``, at the optimiser's current learning rate."""
        self._lr.fill_(self._optimizer.param_groups[0]["lr"])
        states = [self._adam_state(p) for p in self._params]
        scalars, measured, nonfinite, culprits = self._compiled(
            self._data,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            self._lr,
            batch,
        )
        # The learning-rate scheduler warns unless Adam's ``step`` ran first; this is that step.
        self._optimizer._opt_called = True  # type: ignore[attr-defined]
        return StepResult(
            scalars, self._collector.stats(measured, self._layout), nonfinite, culprits
        )

    def _adam_state(self, param: nn.Parameter) -> dict[str, torch.Tensor]:
        """The optimiser's state of ``param``, created as fused Adam's first step would."""
        state = self._optimizer.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def _step(
        self,
        params: tuple[torch.Tensor, ...],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        steps: list[torch.Tensor],
        lr: torch.Tensor,
        batch: Any,
    ) -> tuple[Scalars, StepMeasurement, torch.Tensor, torch.Tensor | None]:
        grads, (_, scalars) = grad_and_value(self._loss_fn, has_aux=True)(params, batch)
        if self._sum_gradients is not None:
            grads = tuple(self._sum_gradients(list(grads)))
        buckets = tuple([grads[i] for i in bucket] for bucket in self._order)
        # Clips the gradients in place (the tensors of ``grads``).
        measured = self._collector.measure_and_clip_(
            GradBatch(buckets, (), self._layout, self._device), self._max_norm
        )
        total = measured.total_norm
        if total is None:
            total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        nonfinite = ~torch.isfinite(total)
        culprits = None
        if self._policy is NonFinitePolicy.abort:
            culprits = ~torch.isfinite(torch.stack([g.norm() for g in grads]))
        skip = None if self._policy is NonFinitePolicy.warn else nonfinite
        adam_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, self._betas, self._eps, skip)
        return scalars, measured, nonfinite, culprits
