"""The one interface the rollout, evaluation and the learner drive every policy through.

Feed-forward and recurrent actor-critics both implement ``Policy``; a feed-forward one
carries an empty state (``PolicyState.empty``), so no caller ever asks which kind of model
it holds: the rollout stores states, the batching strategy replays them, and the learner
calls ``forward`` on whatever minibatch the strategy made.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from esper.simic.agents.batches import TrainingBatch


class PolicyState(NamedTuple):
    """A recurrent state ``[K, N, H]`` (K = cores x layers); ``c`` is an LSTM's cell state.

    A feed-forward policy's state is ``[0, N, 0]``: it has no memory to carry, yet the
    rollout stores and resets it like any other.
    """

    h: torch.Tensor
    c: torch.Tensor | None

    @classmethod
    def empty(cls, num_envs: int, device: torch.device) -> "PolicyState":
        return cls(torch.zeros(0, num_envs, 0, device=device), None)

    def replace_where(self, condition: torch.Tensor, other: "PolicyState") -> "PolicyState":
        """This state with ``other``'s columns where ``condition`` [N] holds."""
        where = condition.reshape(1, -1, 1)
        h = torch.where(where, other.h, self.h)
        c = None if self.c is None or other.c is None else torch.where(where, other.c, self.c)
        return PolicyState(h, c)

    def layers(self, start: int, stop: int) -> "PolicyState":
        return PolicyState(self.h[start:stop], None if self.c is None else self.c[start:stop])

    def columns(self, index: torch.Tensor) -> "PolicyState":
        """The envs ``index`` (bool [N] or indices) of this state."""
        return PolicyState(self.h[:, index], None if self.c is None else self.c[:, index])


class PolicyOutput(NamedTuple):
    """A training pass over a ``TrainingBatch``: every tensor shaped like its steps."""

    dist: Distribution
    values: torch.Tensor
    entropy: torch.Tensor
    """Per-step entropy the loss rewards (factored heads: weighted per head)."""
    head_stats: torch.Tensor | None
    """[..., 2 * heads]: each factored head's entropy, then its masked-out probability
    mass (diagnostics); None for a single head."""


ActingStep = Callable[
    [torch.Tensor, PolicyState, torch.Tensor, torch.Tensor | None],
    tuple[torch.Tensor, torch.Tensor, torch.Tensor, PolicyState],
]
"""(obs [N, D], state, episode_start [N] bool, action mask [N, A] or None) -> (action,
its log-probability, value, state after the step)."""


class Policy(nn.Module, ABC):
    """What a model must offer to be trained by PPO here (an ``nn.Module`` besides)."""

    head_names: tuple[str, ...] = ()
    """Names of factored action heads, for per-head metrics; empty otherwise."""

    @abstractmethod
    def initial_state(self, num_envs: int) -> PolicyState:
        """The state at an episode start."""

    @abstractmethod
    def acting(self, deterministic: bool = False) -> ActingStep:
        """The acting step for the coming rollout or evaluation (parameters bound once:
        they change only between rollouts); ``deterministic`` takes the mode."""

    @abstractmethod
    def value(
        self, obs: torch.Tensor, state: PolicyState, episode_start: torch.Tensor
    ) -> torch.Tensor:
        """V(obs) [N] from ``state`` (to bootstrap past a rollout's end or a time limit)."""

    @abstractmethod
    def forward(self, batch: TrainingBatch) -> PolicyOutput:
        """The training pass over a minibatch made by the policy's batching strategy."""

    @abstractmethod
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group gradient statistics."""
