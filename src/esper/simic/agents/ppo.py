"""The PPO update: epochs of minibatch gradient steps over one rollout.

Metrics stay tensors through the whole update and become Python numbers once at
its end, together with the gradient statistics (one host sync per update).
"""

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution
from torch.func import functional_call

from esper.simic.agents.factored import FactoredDistribution, FactoredHead
from esper.simic.agents.losses import (
    clipped_surrogate_loss,
    explained_variance,
    normalize_advantages,
    value_loss,
)
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.whole_step import CompiledStep
from esper.simic.gradients import AsyncGradientStats, GradientCollector, NonFinitePolicy
from esper.simic.settings import AgentConfig

if TYPE_CHECKING:
    from esper.simic.rollout import Rollout


class RolloutBatch(NamedTuple):
    """One rollout flattened over time and envs; every tensor is ``[B, ...]``."""

    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    action_masks: torch.Tensor | None

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        return RolloutBatch(*(None if t is None else t[index] for t in self))

    @classmethod
    def from_rollout(cls, rollout: "Rollout") -> "RolloutBatch":
        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])

        return cls(
            obs=flat(rollout.obs),
            actions=flat(rollout.actions),
            logp=flat(rollout.logp),
            values=flat(rollout.values),
            advantages=flat(rollout.advantages),
            returns=flat(rollout.returns),
            action_masks=flat(rollout.action_masks),
        )


class Minibatch(NamedTuple):
    """A minibatch as its indices into the rollout batch, for the compiled step: gathered
    inside the step's graph, the selection fuses into the loss instead of costing an
    indexing call per field and step."""

    batch: RolloutBatch
    index: torch.Tensor


log = logging.getLogger(__name__)


class NonFiniteGradientsError(RuntimeError):
    """Raised after an update under ``on_nonfinite=abort``; its steps were dropped."""

    def __init__(self, count: int, steps: int, parameters: list[str]) -> None:
        self.parameters = parameters
        super().__init__(
            f"{count} of {steps} optimiser steps had non-finite gradients "
            f"(parameters: {', '.join(parameters) or 'unknown'})"
        )


# The per-step scalars of one gradient step, in the order they are stacked.
STEP_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")


class PPOLearner:
    """Owns the optimiser and the learning-rate schedule of one policy.

    With ``config.compile`` each gradient step (forward, loss, backward, the gradient
    collector's statistics and clipping, the non-finite guard and Adam) runs as one
    compiled graph (``whole_step.CompiledStep``); eager is the default.
    """

    def __init__(
        self,
        policy: ActorCritic,
        config: AgentConfig,
        collector: GradientCollector,
        num_updates: int,
    ) -> None:
        self.policy = policy
        self.config = config
        self.collector = collector
        # Fused Adam: one kernel for all parameters instead of a Python loop of small ops.
        self.optimizer = torch.optim.Adam(
            policy.parameters(), lr=config.learning_rate, eps=config.adam_eps, fused=True
        )
        # Linear decay to 0 over the run (Huang et al. 2022, PPO detail 4).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda update: max(0.0, 1.0 - update / num_updates) if config.anneal_lr else 1.0,
        )
        self.num_updates = num_updates
        # The update's clip range, a tensor filled in place so a compiled step reads it anew.
        self.clip_coef = torch.tensor(config.clip_coef)
        self.parameter_groups = policy.parameter_groups()
        self._names, self._params = zip(*policy.named_parameters(), strict=True)
        head = policy.action_head
        self._factored = isinstance(head, FactoredHead)
        head_names = head.spec.head_names if isinstance(head, FactoredHead) else ()
        unknown = set(config.head_ent_coefs) - set(head_names)
        if unknown:
            raise ValueError(
                f"agent.head_ent_coefs names {sorted(unknown)}, but the action heads are "
                f"{list(head_names) or 'not factored'}"
            )
        # Per-head entropy weights (Esper's per-head entropy multipliers); 1 by default.
        self._head_weights = torch.tensor([config.head_ent_coefs.get(n, 1.0) for n in head_names])
        self.step_metric_names = (
            *STEP_METRICS,
            *(f"entropy/{name}" for name in head_names),
            *(f"masked_mass/{name}" for name in head_names),
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
            )
            if config.compile
            else None
        )

    def _forward_args(self, batch: Any) -> tuple[Any, ...]:
        """The arguments of the policy's training pass (``forward``) over a minibatch."""
        return batch.obs, batch.action_masks

    def _minibatch_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of one minibatch and its terms stacked as ``STEP_METRICS``."""
        return self._objective(*self.policy(*self._forward_args(batch)), batch)

    def _minibatches(
        self, batch: RolloutBatch, generator: torch.Generator
    ) -> Iterator[RolloutBatch | Minibatch]:
        """One epoch's shuffled minibatches of ``minibatch_size`` samples (as ``Minibatch``
        indices for the compiled step, which gathers them itself)."""
        order = torch.randperm(batch.obs.shape[0], generator=generator).to(batch.obs.device)
        for index in order.split(self.config.minibatch_size):
            yield batch.select(index) if self._compiled_step is None else Minibatch(batch, index)

    def _explained_variance(self, batch: RolloutBatch) -> torch.Tensor:
        return explained_variance(batch.values, batch.returns)

    def _objective(
        self, dist: Distribution, values: torch.Tensor, batch: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The PPO objective to minimise, and its terms stacked as ``STEP_METRICS``."""
        config = self.config
        logp = dist.log_prob(batch.actions)
        entropy_per_sample, head_scalars = self._entropy_terms(dist, None)
        entropy = entropy_per_sample.mean()
        advantages = normalize_advantages(batch.advantages) if config.norm_adv else batch.advantages
        policy_terms = clipped_surrogate_loss(logp, batch.logp, advantages, self.clip_coef)
        v_loss = value_loss(values, batch.values, batch.returns, config.value_clip)
        loss = policy_terms.loss - config.ent_coef * entropy + config.vf_coef * v_loss
        terms = [policy_terms.loss, v_loss, entropy, policy_terms.approx_kl, policy_terms.clipfrac]
        return loss, torch.cat([torch.stack(terms), head_scalars]).detach()

    def _entropy_terms(
        self, dist: Distribution | FactoredDistribution, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-sample entropy the loss uses and, for factored actions, each head's mean
        entropy and masked-out probability mass (over ``valid`` steps when given)."""
        if not isinstance(dist, FactoredDistribution):
            return dist.entropy(), torch.zeros(0)
        weights = self._head_weights.to(dist.relevance.device)
        per_head = torch.cat([dist.head_entropy(), dist.masked_mass()], dim=-1).detach()
        per_head = per_head.reshape(-1, per_head.shape[-1])
        if valid is None:
            head_means = per_head.mean(0)
        else:
            keep = valid.reshape(-1, 1).to(per_head.dtype)
            head_means = (per_head * keep).sum(0) / keep.sum().clamp(min=1.0)
        return dist.entropy(weights), head_means

    def _functional_loss(
        self, params: tuple[torch.Tensor, ...], minibatch: Minibatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``_minibatch_loss`` as a function of the parameters, for ``torch.func``."""
        batch = minibatch.batch.select(minibatch.index)
        parameters = dict(zip(self._names, params, strict=True))
        dist, values = functional_call(self.policy, parameters, self._forward_args(batch))
        return self._objective(dist, values, batch)

    def _gradient_step(self, batch: Any) -> tuple[torch.Tensor, AsyncGradientStats]:
        """Forward, loss, backward, gradient statistics with clipping, optimiser step."""
        if self._compiled_step is not None:
            step = self._compiled_step(batch)
            self._nonfinite_steps.append(step.nonfinite)
            if step.nonfinite_params is not None:
                self._nonfinite_params.append(step.nonfinite_params)
            return step.scalars, step.grad_stats
        loss, scalars = self._minibatch_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_stats = self.collector.collect_and_clip(
            self.parameter_groups, self.config.max_grad_norm
        )
        self._guard_nonfinite(grad_stats)
        self.optimizer.step()
        return scalars, grad_stats

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
        policy = self.collector.config.on_nonfinite
        if policy is not NonFinitePolicy.warn:
            self.optimizer.found_inf = nonfinite.float()
        if policy is NonFinitePolicy.abort:
            # One extra norm pass per step, paid only under abort, to name the culprits.
            per_param = [
                torch.linalg.vector_norm(p.grad) if p.grad is not None else torch.zeros(())
                for p in self._params
            ]
            self._nonfinite_params.append(~torch.isfinite(torch.stack(per_param)))

    def learn(self, rollout: "Rollout", generator: torch.Generator) -> dict[str, float]:
        """Update the policy on one rollout and return the update's metrics."""
        return self.update(RolloutBatch.from_rollout(rollout), generator)

    def update(
        self,
        batch: Any,
        generator: torch.Generator,
        telemetry: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Run the epochs over ``batch`` and return the update's metrics.

        ``telemetry``: extra 0-dim tensors read back in the update's one host sync.
        With ``target_kl`` set, the mean approximate KL of each epoch is read back
        (one sync per epoch) to stop early, as in OpenAI's Spinning Up PPO.
        """
        config = self.config
        telemetry = telemetry or {}
        step_scalars: list[torch.Tensor] = []
        grad_stats: list[AsyncGradientStats] = []
        self._nonfinite_steps, self._nonfinite_params = [], []
        self.clip_coef.fill_(self._scheduled_clip())
        epochs_run = 0
        for _ in range(config.update_epochs):
            epoch_start = len(step_scalars)
            for minibatch in self._minibatches(batch, generator):
                scalars, stats = self._gradient_step(minibatch)
                step_scalars.append(scalars)
                grad_stats.append(stats)
            epochs_run += 1
            if config.target_kl is not None:
                epoch_kl = torch.stack(step_scalars[epoch_start:])[:, 3].mean()
                if epoch_kl.item() > config.target_kl:
                    break
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        means = torch.stack(step_scalars).mean(0)
        summary = torch.cat(
            [
                means,
                self._explained_variance(batch).reshape(1),
                torch.stack(self._nonfinite_steps).sum().reshape(1).float(),
                *(value.reshape(1).float() for value in telemetry.values()),
            ]
        )
        values = summary.tolist()  # the update's host sync
        num_extra = len(telemetry)
        *step_means, explained, nonfinite_steps = values[: len(values) - num_extra]
        metrics = {
            f"train/{name}": v for name, v in zip(self.step_metric_names, step_means, strict=True)
        }
        metrics["train/explained_variance"] = explained
        metrics["train/nonfinite_steps"] = nonfinite_steps
        metrics["train/learning_rate"] = float(learning_rate)
        metrics["train/clip_coef"] = float(self.clip_coef)
        metrics["train/epochs"] = float(epochs_run)
        metrics.update(zip(telemetry, values[len(values) - num_extra :], strict=True))
        metrics.update(self.collector.materialize(grad_stats).as_metrics())
        if nonfinite_steps:
            self._report_nonfinite(int(nonfinite_steps), len(step_scalars))
        return metrics

    def _scheduled_clip(self) -> float:
        """``clip_coef``, decayed like the learning rate when ``anneal_clip`` (the scheduler's
        update count survives a resume, so the schedule does too)."""
        if not self.config.anneal_clip:
            return self.config.clip_coef
        remaining = max(0.0, 1.0 - self.scheduler.last_epoch / self.num_updates)
        return self.config.clip_coef * remaining

    def _report_nonfinite(self, count: int, steps: int) -> None:
        policy = self.collector.config.on_nonfinite
        if policy is NonFinitePolicy.abort:
            flagged = torch.stack(self._nonfinite_params).any(0).tolist()
            names = [name for name, bad in zip(self._names, flagged, strict=True) if bad]
            raise NonFiniteGradientsError(count, steps, names)
        verb = "applied anyway" if policy is NonFinitePolicy.warn else "skipped"
        log.warning("%d of %d optimiser steps had non-finite gradients (%s)", count, steps, verb)

    def state_dict(self) -> dict[str, object]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def policy_parameters(module: nn.Module) -> int:
    """Number of trainable parameters, for run metadata."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
