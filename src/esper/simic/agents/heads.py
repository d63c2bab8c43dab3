"""Action heads: the distribution a policy's features become, for each kind of action.

The head is chosen from an ``ActionSpec`` that the env adapter derives from the env's
action space and the heads the env declares; this package never sees a gymnasium space.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal

from esper.simic.agents.factored import FactoredHead, FactoredSpec
from esper.simic.agents.layers import (
    POLICY_GAIN,
    init_layer,
    masked_logits,
    sample_categorical,
    unwrap_layer,
)
from esper.simic.agents.policy import PolicyOutput
from esper.simic.settings import NetworkConfig


def sample_with_log_prob(
    dist: Distribution, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sample of ``dist`` (its mode when ``deterministic``) and its log-probability; a
    ``Categorical`` skips the multinomial checks and the broadcasting of ``log_prob``
    (``sample_categorical``)."""
    if isinstance(dist, Categorical):
        action = dist.logits.argmax(-1) if deterministic else sample_categorical(dist.probs)
        return action, dist.logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    action = dist.mode if deterministic else dist.sample()
    return action, dist.log_prob(action)


@dataclass(frozen=True)
class DiscreteActions:
    """One categorical choice among ``n`` (gymnasium's ``Discrete``)."""

    n: int
    head_names: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ContinuousActions:
    """A real vector of ``dim`` entries (a 1-D ``Box``), sampled from a diagonal Gaussian."""

    dim: int
    head_names: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class BinaryActions:
    """``n`` independent on/off choices (gymnasium's ``MultiBinary``), one Bernoulli each."""

    n: int
    head_names: ClassVar[tuple[str, ...]] = ()


ActionSpec = DiscreteActions | ContinuousActions | BinaryActions | FactoredSpec
"""What the policy's head must produce; the env adapter derives it from the action space
and the heads the env declares (``FactoredSpec``)."""


class CategoricalHead(nn.Module):
    """Logits over a Discrete space, with optional invalid-action masking."""

    head_names: tuple[str, ...] = ()

    def __init__(self, in_dim: int, num_actions: int, ortho: bool) -> None:
        super().__init__()
        self.logits = init_layer(nn.Linear(in_dim, num_actions), POLICY_GAIN, ortho)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> Distribution:
        return Categorical(logits=masked_logits(self.logits(features), mask), validate_args=False)

    def entropy_terms(self, dist: Distribution) -> tuple[torch.Tensor, None]:
        """Per-step entropy for the loss, and per-head diagnostics (none: one head)."""
        return dist.entropy(), None


class GaussianHead(nn.Module):
    """Diagonal Gaussian with a state-independent log-std; the env wrappers clip or squash
    the sample into the bounds (``env.action_bounds``)."""

    head_names: tuple[str, ...] = ()

    def __init__(self, in_dim: int, action_dim: int, log_std_init: float, ortho: bool) -> None:
        super().__init__()
        self.mean = init_layer(nn.Linear(in_dim, action_dim), POLICY_GAIN, ortho)
        self.log_std = nn.Parameter(torch.full((action_dim,), log_std_init))

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> Distribution:
        if mask is not None:
            raise ValueError("action masks apply to Discrete action spaces only")
        mean = self.mean(features)
        std = self.log_std.exp().expand_as(mean)
        return Independent(Normal(mean, std, validate_args=False), 1, validate_args=False)

    def entropy_terms(self, dist: Distribution) -> tuple[torch.Tensor, None]:
        return dist.entropy(), None


class _Flags(Bernoulli):
    """``Bernoulli`` whose mode is 1 at probability one half too (torch's is NaN there)."""

    @property
    def mode(self) -> torch.Tensor:
        return (self.logits >= 0).to(self.logits.dtype)


class BernoulliHead(nn.Module):
    """One logit per flag; the flags are independent given the features, so the joint
    log-probability and entropy are sums over flags (``Independent``). Actions are 0/1
    floats; the mode sets the flags whose probability is at least one half."""

    head_names: tuple[str, ...] = ()

    def __init__(self, in_dim: int, num_flags: int, ortho: bool) -> None:
        super().__init__()
        self.logits = init_layer(nn.Linear(in_dim, num_flags), POLICY_GAIN, ortho)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> Distribution:
        if mask is not None:
            raise ValueError("action masks apply to Discrete action spaces only")
        flags = _Flags(logits=self.logits(features), validate_args=False)
        return Independent(flags, 1, validate_args=False)

    def entropy_terms(self, dist: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
        entropy = dist.entropy()
        return entropy, entropy.new_zeros(*entropy.shape, 0)


ActionHead = CategoricalHead | GaussianHead | BernoulliHead | FactoredHead


def make_action_head(
    in_dim: int,
    actions: ActionSpec,
    config: NetworkConfig,
    entropy_weights: Mapping[str, float] | None = None,
) -> ActionHead:
    """The head that produces ``actions``; ``entropy_weights`` scale factored heads' shares
    of the entropy bonus, by head name (1 where absent)."""
    if isinstance(actions, DiscreteActions):
        return CategoricalHead(in_dim, actions.n, config.ortho_init)
    if isinstance(actions, ContinuousActions):
        return GaussianHead(in_dim, actions.dim, config.log_std_init, config.ortho_init)
    if isinstance(actions, BinaryActions):
        return BernoulliHead(in_dim, actions.n, config.ortho_init)
    return FactoredHead(in_dim, actions, config.ortho_init, entropy_weights or {})


def policy_output(
    head: ActionHead, features: torch.Tensor, mask: torch.Tensor | None, values: torch.Tensor
) -> PolicyOutput:
    """The training pass's output from the head's features and the critic's values."""
    dist = head(features, mask)
    entropy, head_stats = head.entropy_terms(dist)
    return PolicyOutput(dist, values, entropy, head_stats)


class ActionSampler:
    """A head's action (sampled, or the mode when ``deterministic``) and its log-probability
    at a rollout or evaluation step.

    A Categorical head works on its logits directly (``sample_categorical``; one
    ``log_softmax``, which can differ from ``Categorical``'s ``logits - logsumexp`` in the
    last bit) instead of building a ``torch.distributions`` object, which costs more than
    the arithmetic at a rollout step's size. Other heads go through their distribution.
    """

    def __init__(self, head: ActionHead, deterministic: bool = False) -> None:
        self._head = head
        self._deterministic = deterministic
        self._logits = unwrap_layer(head.logits) if isinstance(head, CategoricalHead) else None

    def __call__(
        self, features: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._logits is None:
            return sample_with_log_prob(self._head(features, mask), self._deterministic)
        log_probs = masked_logits(self._logits(features), mask).log_softmax(-1)
        action = (
            log_probs.argmax(-1) if self._deterministic else sample_categorical(log_probs.exp())
        )
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
