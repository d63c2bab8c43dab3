"""Feed-forward actor-critic networks for discrete and continuous action spaces."""

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from esper.simic.settings import Activation, NetworkConfig

if TYPE_CHECKING:
    from esper.simic.agents.factored import FactoredHead, FactoredSpec

_ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.tanh: nn.Tanh,
    Activation.relu: nn.ReLU,
    Activation.gelu: nn.GELU,
    Activation.silu: nn.SiLU,
}

# Gains of the orthogonal init used by the PPO implementations of OpenAI baselines and
# CleanRL ("The 37 Implementation Details of PPO", Huang et al. 2022, detail 2): hidden
# layers sqrt(2), the policy output 0.01 (near-uniform initial policy), the value output 1.
HIDDEN_GAIN = math.sqrt(2)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


def init_layer(layer: nn.Linear, gain: float, ortho: bool) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias; PyTorch's default init if not ``ortho``."""
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: list[int], activation: Activation, ortho: bool) -> nn.Sequential:
    """Hidden layers only; the caller adds the output layer with its own gain."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [
            init_layer(nn.Linear(in_dim, width), HIDDEN_GAIN, ortho),
            _ACTIVATIONS[activation](),
        ]
        in_dim = width
    return nn.Sequential(*layers)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Push illegal actions' logits to the most negative finite float.

    Finite rather than -inf so that Categorical's entropy (p * log p) stays 0 for
    masked actions instead of NaN (Huang & Ontañón 2020, arXiv:2006.14171).
    """
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """One action per row of ``probs`` [..., A]: ``argmax(probs / E)`` with E ~ Exp(1).

    This is the algorithm ``torch.multinomial`` itself runs for one sample (the exponential
    race, equivalent to the Gumbel-max trick: the smallest of independent ``E_i / p_i``, which
    are exponential with rate ``p_i``, is ``i`` with probability ``p_i``), on the same random
    numbers, so it draws the very same actions. It leaves out multinomial's input checks,
    three reductions read back to the host, which cost more than the sampling at a rollout
    step's size; ``RolloutRunner`` checks the log-probabilities once per rollout instead.
    """
    race = torch.empty_like(probs).exponential_()
    return (probs / race).argmax(-1)


def sample_with_log_prob(dist: Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """A sample of ``dist`` and its log-probability; a ``Categorical`` skips the multinomial
    checks and the broadcasting of ``log_prob`` (``sample_categorical``)."""
    if isinstance(dist, Categorical):
        action = sample_categorical(dist.probs)
        return action, dist.logits.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    action = dist.sample()
    return action, dist.log_prob(action)


class CategoricalHead(nn.Module):
    """Logits over a Discrete space, with optional invalid-action masking."""

    def __init__(self, in_dim: int, num_actions: int, ortho: bool) -> None:
        super().__init__()
        self.logits = init_layer(nn.Linear(in_dim, num_actions), POLICY_GAIN, ortho)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> Distribution:
        return Categorical(logits=masked_logits(self.logits(features), mask), validate_args=False)


class GaussianHead(nn.Module):
    """Diagonal Gaussian with a state-independent log-std; the env wrapper clips to bounds."""

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


def make_action_head(
    in_dim: int,
    action_space: gym.Space,
    config: NetworkConfig,
    spec: "FactoredSpec | None" = None,
) -> "CategoricalHead | GaussianHead | FactoredHead":
    """The head that matches the env's single action space.

    MultiDiscrete gets a factored head: ``spec`` (per-op head relevance, an op-conditioned
    head) or, by default, independent heads that are all always relevant.
    """
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalHead(in_dim, int(action_space.n), config.ortho_init)
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return GaussianHead(in_dim, action_space.shape[0], config.log_std_init, config.ortho_init)
    if isinstance(action_space, gym.spaces.MultiDiscrete) and len(action_space.shape) == 1:
        # factored.py builds on this module's helpers: imported here to break the cycle.
        from esper.simic.agents.factored import FactoredHead, FactoredSpec  # noqa: PLC0415

        spec = FactoredSpec.independent(action_space.nvec) if spec is None else spec
        if spec.head_sizes != tuple(int(n) for n in action_space.nvec):
            raise ValueError(f"factored spec {spec.head_sizes} does not match {action_space}")
        return FactoredHead(in_dim, spec, config.ortho_init)
    raise ValueError(
        f"unsupported action space {action_space}: expected Discrete, a 1-D Box or a 1-D "
        "MultiDiscrete"
    )


class ActorCritic(nn.Module):
    """Policy and value MLPs, separate by default or on one shared trunk."""

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        config: NetworkConfig,
        spec: "FactoredSpec | None" = None,
    ) -> None:
        super().__init__()
        self.actor_trunk = mlp(obs_dim, config.actor_hidden, config.activation, config.ortho_init)
        self.critic_trunk = (
            self.actor_trunk
            if config.shared_trunk
            else mlp(obs_dim, config.critic_hidden, config.activation, config.ortho_init)
        )
        actor_out = config.actor_hidden[-1] if config.actor_hidden else obs_dim
        critic_hidden = config.actor_hidden if config.shared_trunk else config.critic_hidden
        critic_out = critic_hidden[-1] if critic_hidden else obs_dim
        self.action_head = make_action_head(actor_out, action_space, config, spec)
        self.value_head = init_layer(nn.Linear(critic_out, 1), VALUE_GAIN, config.ortho_init)
        self.shared_trunk = config.shared_trunk

    def forward(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[Distribution, torch.Tensor]:
        """The action distribution and the value estimate, shape ``[B]``."""
        actor_features = self.actor_trunk(obs)
        critic_features = actor_features if self.shared_trunk else self.critic_trunk(obs)
        return self.action_head(actor_features, mask), self.value_head(critic_features).squeeze(-1)

    def acting(self) -> "ActingPass":
        """The rollout step (sample, log-probability, value) for the coming rollout."""
        return ActingPass(self)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.critic_trunk(obs)).squeeze(-1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group gradient statistics (a shared trunk is actor)."""
        actor = [*self.actor_trunk.parameters(), *self.action_head.parameters()]
        critic = [*self.value_head.parameters()]
        if not self.shared_trunk:
            critic = [*self.critic_trunk.parameters(), *critic]
        return {"actor": actor, "critic": critic}


Layer = Callable[[torch.Tensor], torch.Tensor]

# Activation modules whose forward is exactly this function of the input.
_FUNCTIONAL_ACTIVATIONS: dict[type[nn.Module], Layer] = {
    nn.Tanh: torch.tanh,
    nn.ReLU: torch.relu,
    nn.SiLU: nn.functional.silu,
}


def unwrap_layer(module: nn.Module) -> Layer:
    """``module`` as a plain function of its input, with its parameters bound now."""
    if isinstance(module, nn.Linear):
        return partial(nn.functional.linear, weight=module.weight, bias=module.bias)
    return _FUNCTIONAL_ACTIVATIONS.get(type(module), module)


def apply_layers(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


class ActionSampler:
    """A head's sampled action and its log-probability at a rollout step.

    A Categorical head samples from its logits directly (``sample_categorical``; one
    ``log_softmax``, which can differ from ``Categorical``'s ``logits - logsumexp`` in the
    last bit) instead of building a ``torch.distributions`` object, which costs more than
    the arithmetic at a rollout step's size. Other heads go through their distribution.
    """

    def __init__(self, head: nn.Module) -> None:
        self._head = head
        self._logits = unwrap_layer(head.logits) if isinstance(head, CategoricalHead) else None

    def __call__(
        self, features: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._logits is None:
            return sample_with_log_prob(self._head(features, mask))
        log_probs = masked_logits(self._logits(features), mask).log_softmax(-1)
        action = sample_categorical(log_probs.exp())
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)


class ActingPass:
    """``ActorCritic``'s rollout step: a sampled action, its log-probability and the value.

    At a rollout step's size (a few observations, 64-unit layers) ``nn.Module`` call
    overhead, parameter look-ups and building a ``torch.distributions`` object cost more than
    the arithmetic, so the layers are unwrapped into plain functions once and the head
    samples through an ``ActionSampler``. The runner takes a new pass per rollout:
    parameters change only in updates, between rollouts, and in place, so the bound ones
    stay the policy's own.
    """

    def __init__(self, policy: ActorCritic) -> None:
        self._actor = [unwrap_layer(m) for m in policy.actor_trunk]
        self._critic = (
            None if policy.shared_trunk else [unwrap_layer(m) for m in policy.critic_trunk]
        )
        self._sample = ActionSampler(policy.action_head)
        self._value = unwrap_layer(policy.value_head)

    def __call__(
        self, obs: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs`` [B, D], ``mask`` [B, A] -> action, log-probability and value, each [B]."""
        actor = apply_layers(self._actor, obs)
        critic = actor if self._critic is None else apply_layers(self._critic, obs)
        action, logp = self._sample(actor, mask)
        return action, logp, self._value(critic).squeeze(-1)
