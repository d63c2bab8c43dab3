"""The PPO update: epochs of minibatch gradient steps over one rollout, for every policy.

Feed-forward and recurrent PPO differ only in how a rollout becomes minibatches, which a
``Batching`` strategy decides (``batching.py``); the loss, optimiser, schedule, gradient
collector, non-finite guard, target-KL stop and compiled step are this one learner's.
Metrics stay tensors through the whole update and become Python numbers once at its end,
together with the gradient statistics (one host sync per update).
"""

import contextlib
import logging
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from esper.simic.agents.batches import Minibatch, Rollout, TrainingBatch
from esper.simic.agents.batching import Batching
from esper.simic.agents.data_parallel import DataParallel
from esper.simic.agents.losses import LossCoefficients, explained_variance, ppo_loss
from esper.simic.agents.policy import Policy, PolicyOutput
from esper.simic.agents.whole_step import CompiledStep, Scalars
from esper.simic.gradients import AsyncGradientStats, GradientCollector, NonFinitePolicy
from esper.simic.settings import AgentConfig

log = logging.getLogger(__name__)

LOSS_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
HEAD_STATS = "head_stats"
"""The scalars key of factored heads' per-head diagnostics (``PolicyOutput.head_stats``)."""


class NonFiniteGradientsError(RuntimeError):
    """Raised after an update under ``on_nonfinite=abort``; its steps were dropped."""

    def __init__(self, count: int, steps: int, parameters: list[str]) -> None:
        self.parameters = parameters
        super().__init__(
            f"{count} of {steps} optimiser steps had non-finite gradients "
            f"(parameters: {', '.join(parameters) or 'unknown'})"
        )


class LinearDecay:
    """The learning rate's multiplier: ``start_fraction`` at ``start_update``, falling
    linearly to 0 at ``end_update`` (Huang et al. 2022, PPO detail 4).

    A resumed run continues from where its schedule was, also when ``total_timesteps`` was
    raised: the rate never jumps back up, it decays from its current value to 0 over the
    new remaining updates.
    """

    def __init__(self, end_update: int, start_update: int = 0, start_fraction: float = 1.0) -> None:
        self.end_update = end_update
        self.start_update = start_update
        self.start_fraction = start_fraction

    def __call__(self, update: int) -> float:
        remaining = self.end_update - self.start_update
        if remaining <= 0:
            return 0.0
        return self.start_fraction * max(0, self.end_update - update) / remaining


def _constant(_update: int) -> float:
    return 1.0


class PPOLearner:
    """Owns the optimiser and the learning-rate schedule of one policy.

    With ``config.compile`` each gradient step (forward, loss, backward, the gradient
    collector's statistics and clipping, the non-finite guard and Adam) runs as one
    compiled graph (``whole_step.CompiledStep``); eager is the default.

    With ``data_parallel`` each rank steps on its share of every minibatch and the ranks'
    gradients are summed before clipping (``data_parallel.py``); the metrics are the ranks'
    means, so every rank takes the same decisions (target-KL stop, non-finite guard).
    """

    def __init__(
        self,
        policy: Policy,
        config: AgentConfig,
        collector: GradientCollector,
        batching: Batching,
        num_updates: int,
        data_parallel: DataParallel | None = None,
    ) -> None:
        self.policy = policy
        self.config = config
        self.collector = collector
        self.batching = batching
        self.num_updates = num_updates
        self.data_parallel = data_parallel
        self.coefficients = LossCoefficients(
            config.clip_coef, config.value_clip, config.norm_adv, config.ent_coef, config.vf_coef
        )
        # Fused Adam: one kernel for all parameters instead of a Python loop of small ops.
        self.optimizer = torch.optim.Adam(
            policy.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LinearDecay(num_updates) if config.anneal_lr else _constant
        )
        # rl-zoo's lin_0.2: the clip range decays like the learning rate (``anneal_clip``), a
        # tensor filled in place each update so that a compiled step reads it anew.
        self.clip_schedule = LinearDecay(num_updates)
        device = next(policy.parameters()).device
        self.clip_coef = torch.tensor(config.clip_coef, device=device)
        if config.anneal_clip:
            self.coefficients = self.coefficients._replace(clip_coef=self.clip_coef)
        self.parameter_groups = policy.parameter_groups()
        self._names, self._params = zip(*policy.named_parameters(), strict=True)
        self.step_metric_names = (
            *LOSS_METRICS,
            *(f"entropy/{name}" for name in policy.head_names),
            *(f"masked_mass/{name}" for name in policy.head_names),
        )
        self._nonfinite_steps: list[torch.Tensor] = []
        self._nonfinite_params: list[torch.Tensor] = []
        self._compiled_step = (
            CompiledStep(
                self._functional_loss,
                self._params,
                self.parameter_groups,
                collector,
                config.max_grad_norm,
                self.optimizer,
                config.on_nonfinite,
                None if data_parallel is None else data_parallel.sum_gradients,
            )
            if config.compile
            else None
        )
        # Dynamo refuses RNN modules even when the step only reads their weights (the
        # windows kernel does): allow them, around the compiled step only, where there are.
        has_rnn = any(isinstance(m, nn.RNNBase) for m in policy.modules())
        self._compile_context = (
            torch._dynamo.config.patch(allow_rnn=True) if has_rnn else contextlib.nullcontext()
        )

    def learn(self, rollout: Rollout, generator: torch.Generator) -> dict[str, float]:
        """Update the policy on one rollout and return the update's metrics.

        With ``target_kl`` set, the mean approximate KL of each epoch is read back (one sync
        per epoch) to stop early, as in OpenAI's Spinning Up PPO.
        """
        config = self.config
        clip_fraction = self.clip_schedule(self.scheduler.last_epoch) if config.anneal_clip else 1.0
        self.clip_coef.fill_(config.clip_coef * clip_fraction)
        batch, telemetry = self.batching.prepare(rollout)
        step_scalars: list[Scalars] = []
        grad_stats: list[AsyncGradientStats] = []
        self._nonfinite_steps, self._nonfinite_params = [], []
        epochs_run = 0
        for _ in range(config.update_epochs):
            epoch_start = len(step_scalars)
            for index in self.batching.minibatches(batch, generator):
                scalars, stats = self._gradient_step(batch, index)
                step_scalars.append(scalars)
                grad_stats.append(stats)
            epochs_run += 1
            if config.target_kl is not None:
                epoch_kl = torch.stack([s["approx_kl"] for s in step_scalars[epoch_start:]]).mean()
                if self.data_parallel is not None:
                    epoch_kl = self.data_parallel.mean(epoch_kl)
                if epoch_kl.item() > config.target_kl:
                    break
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        metrics = self._read_metrics(batch, step_scalars, telemetry)
        metrics["train/learning_rate"] = float(learning_rate)
        metrics["train/clip_coef"] = config.clip_coef * clip_fraction
        metrics["train/epochs"] = float(epochs_run)
        metrics.update(self.collector.materialize(grad_stats).as_metrics())
        nonfinite_steps = int(metrics["train/nonfinite_steps"])
        if nonfinite_steps:
            self._report_nonfinite(nonfinite_steps, len(step_scalars))
        return metrics

    def _read_metrics(
        self, batch: TrainingBatch, steps: list[Scalars], telemetry: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """The update's step means, explained variance, non-finite count and telemetry,
        read back from the device in one sync."""
        means = [torch.stack([s[name] for s in steps]).mean(0) for name in steps[0]]
        named = {
            "train/explained_variance": explained_variance(batch.values, batch.returns, batch.mask),
            "train/nonfinite_steps": torch.stack(self._nonfinite_steps).sum().float(),
            **telemetry,
        }
        values = torch.cat([m.reshape(-1) for m in (*means, *named.values())])
        if self.data_parallel is not None:
            values = self.data_parallel.mean(values)
        values = values.tolist()
        step_means = values[: len(self.step_metric_names)]
        extra = values[len(values) - len(named) :]
        metrics = {
            f"train/{name}": v for name, v in zip(self.step_metric_names, step_means, strict=True)
        }
        metrics.update(zip(named, extra, strict=True))
        return metrics

    def _loss(self, output: PolicyOutput, batch: TrainingBatch) -> tuple[torch.Tensor, Scalars]:
        """The PPO loss of one minibatch and its terms as named 0-dim tensors; on a
        data-parallel rank, the loss of its share weighted for the gradients' sum."""
        share = None
        if self.data_parallel is not None:
            share = self.data_parallel.share(batch.advantages, batch.mask)
        terms = ppo_loss(
            output.dist.log_prob(batch.actions), output.entropy, output.values, batch.logp,
            batch.values, batch.advantages, batch.returns, batch.mask, self.coefficients,
            None if share is None else (share.advantage_mean, share.advantage_std),
        )  # fmt: skip
        scalars = {name: getattr(terms, name) for name in LOSS_METRICS}
        if output.head_stats is not None:
            mask = None if batch.mask is None else batch.mask.reshape(-1, 1)
            scalars[HEAD_STATS] = _column_means(output.head_stats.flatten(0, -2), mask)
        loss = terms.loss if share is None else terms.loss * share.weight
        return loss, scalars

    def _functional_loss(
        self, params: tuple[torch.Tensor, ...], minibatch: Minibatch
    ) -> tuple[torch.Tensor, Scalars]:
        """The minibatch loss as a function of the parameters, for ``torch.func``."""
        batch = self.batching.take(minibatch.batch, minibatch.index)
        parameters = dict(zip(self._names, params, strict=True))
        # tie_weights=False: a shared core or encoder is one module under two names, so the
        # names above already reach every use of its one slot. Tying would swap that slot
        # twice and leave the traced tensor in the policy (pytorch#164759), which the compiled
        # step returns and AOT autograd rejects; no policy ties a Parameter into two modules.
        output = functional_call(self.policy, parameters, (batch,), tie_weights=False)
        return self._loss(output, batch)

    def _gradient_step(
        self, batch: TrainingBatch, index: torch.Tensor
    ) -> tuple[Scalars, AsyncGradientStats]:
        """Forward, loss, backward, gradient statistics with clipping, optimiser step."""
        if self._compiled_step is not None:
            with self._compile_context:
                step = self._compiled_step(Minibatch(batch, index))
            self._nonfinite_steps.append(step.nonfinite)
            if step.nonfinite_params is not None:
                self._nonfinite_params.append(step.nonfinite_params)
            return step.scalars, step.grad_stats
        minibatch = self.batching.select(batch, index)
        loss, scalars = self._loss(self.policy(minibatch), minibatch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.data_parallel is not None:
            self._sum_gradients()
        grad_stats = self.collector.collect_and_clip(
            self.parameter_groups, self.config.max_grad_norm
        )
        self._guard_nonfinite(grad_stats)
        self.optimizer.step()
        return scalars, grad_stats

    def _sum_gradients(self) -> None:
        """Replace each rank's gradients by their sum over ranks (a parameter this
        minibatch left without a gradient contributes zeros, so every rank sends alike)."""
        assert self.data_parallel is not None
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self._params]
        for param, summed in zip(
            self._params, self.data_parallel.sum_gradients(grads), strict=True
        ):
            param.grad = summed

    def _guard_nonfinite(self, grad_stats: AsyncGradientStats) -> None:
        """Flag a step whose gradients hold NaN/Inf and, unless warning only, drop it.

        Fused Adam reads ``found_inf`` on the device and skips the update (weights,
        moments and step count) when it is non-zero: the mechanism GradScaler uses,
        so the decision needs no host sync.
        """
        total = grad_stats.total_norm
        if total is None:
            grads = [p.grad for p in self._params if p.grad is not None]
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        nonfinite = ~torch.isfinite(total)
        self._nonfinite_steps.append(nonfinite)
        policy = self.config.on_nonfinite
        if policy is not NonFinitePolicy.warn:
            self.optimizer.found_inf = nonfinite.float()
        if policy is NonFinitePolicy.abort:
            # One extra norm pass per step, paid only under abort, to name the culprits.
            per_param = [
                torch.linalg.vector_norm(p.grad) if p.grad is not None else torch.zeros(())
                for p in self._params
            ]
            self._nonfinite_params.append(~torch.isfinite(torch.stack(per_param)))

    def _report_nonfinite(self, count: int, steps: int) -> None:
        policy = self.config.on_nonfinite
        if policy is NonFinitePolicy.abort:
            flagged = torch.stack(self._nonfinite_params).any(0).tolist()
            names = [name for name, bad in zip(self._names, flagged, strict=True) if bad]
            raise NonFiniteGradientsError(count, steps, names)
        verb = "applied anyway" if policy is NonFinitePolicy.warn else "skipped"
        log.warning("%d of %d optimiser steps had non-finite gradients (%s)", count, steps, verb)

    def state_dict(self) -> dict[str, object]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "clip_schedule": vars(self.clip_schedule),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimiser and the schedules, which then decay from the learning rate
        and clip range they had reached to 0 at this run's last update (``LinearDecay``)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        resumed = self.scheduler.last_epoch
        saved_clip = LinearDecay(**state["clip_schedule"]) if "clip_schedule" in state else None
        clip_fraction = 1.0 if saved_clip is None else saved_clip(resumed)
        self.clip_schedule = LinearDecay(self.num_updates, resumed, clip_fraction)
        if not self.config.anneal_lr:
            self.scheduler.lr_lambdas[0] = _constant
            return
        fraction = self.scheduler.get_last_lr()[0] / self.scheduler.base_lrs[0]
        self.scheduler.lr_lambdas[0] = LinearDecay(self.num_updates, resumed, fraction)
        log.info(
            "learning rate: %.3g at update %d, decaying linearly to 0 at update %d",
            fraction * self.config.learning_rate,
            resumed,
            self.num_updates,
        )


def _column_means(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of each column of ``x`` [B, D] over the rows ``mask`` [B, 1] keeps."""
    if mask is None:
        return x.mean(0)
    keep = mask.to(x.dtype)
    return (x * keep).sum(0) / keep.sum().clamp(min=1.0)


def policy_parameters(module: nn.Module) -> int:
    """Number of trainable parameters, for run metadata."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
