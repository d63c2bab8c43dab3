"""The feed-forward actor-critic: an observation encoder, then policy and value MLPs."""

from collections.abc import Mapping

import torch
from torch import nn

from esper.simic.agents.batches import TrainingBatch
from esper.simic.agents.encoders import ObservationInput, as_encoder
from esper.simic.agents.heads import ActionSampler, ActionSpec, make_action_head, policy_output
from esper.simic.agents.layers import VALUE_GAIN, apply_layers, init_layer, mlp, unwrap_layer
from esper.simic.agents.policy import Policy, PolicyOutput, PolicyState
from esper.simic.settings import NetworkConfig


class ActorCritic(Policy):
    """Policy and value MLPs, separate by default or on one shared trunk, over the features
    of one observation encoder that both share (as SB3's policies share their features
    extractor: a CNN is the costly part)."""

    def __init__(
        self,
        observations: ObservationInput,
        actions: ActionSpec,
        config: NetworkConfig,
        entropy_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = as_encoder(observations)
        obs_dim = self.encoder.out_dim
        self.actor_trunk = mlp(obs_dim, config.actor_hidden, config.activation, config.ortho_init)
        self.critic_trunk = (
            self.actor_trunk
            if config.shared_trunk
            else mlp(obs_dim, config.critic_hidden, config.activation, config.ortho_init)
        )
        actor_out = config.actor_hidden[-1] if config.actor_hidden else obs_dim
        critic_hidden = config.actor_hidden if config.shared_trunk else config.critic_hidden
        critic_out = critic_hidden[-1] if critic_hidden else obs_dim
        self.action_head = make_action_head(actor_out, actions, config, entropy_weights)
        self.value_head = init_layer(nn.Linear(critic_out, 1), VALUE_GAIN, config.ortho_init)
        self.shared_trunk = config.shared_trunk
        self.head_names = self.action_head.head_names

    def forward(self, batch: TrainingBatch) -> PolicyOutput:
        """The action distribution and the value estimate over a minibatch of steps."""
        features = self.encoder(batch.obs)
        actor_features = self.actor_trunk(features)
        critic_features = actor_features if self.shared_trunk else self.critic_trunk(features)
        values = self.value_head(critic_features).squeeze(-1)
        return policy_output(self.action_head, actor_features, batch.action_masks, values)

    def initial_state(self, num_envs: int) -> PolicyState:
        return PolicyState.empty(num_envs, self.value_head.weight.device)

    def acting(self, deterministic: bool = False) -> "ActingPass":
        """The rollout step (sample, log-probability, value) for the coming rollout."""
        return ActingPass(self, deterministic)

    def value(
        self, obs: torch.Tensor, state: PolicyState, episode_start: torch.Tensor
    ) -> torch.Tensor:
        return self.value_head(self.critic_trunk(self.encoder(obs))).squeeze(-1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group gradient statistics (a shared trunk and the
        encoder count as actor)."""
        actor = [
            *self.encoder.parameters(),
            *self.actor_trunk.parameters(),
            *self.action_head.parameters(),
        ]
        critic = [*self.value_head.parameters()]
        if not self.shared_trunk:
            critic = [*self.critic_trunk.parameters(), *critic]
        return {"actor": actor, "critic": critic}


class ActingPass:
    """``ActorCritic``'s acting step: an action, its log-probability and the value.

    At a rollout step's size (a few observations, 64-unit layers) ``nn.Module`` call
    overhead, parameter look-ups and building a ``torch.distributions`` object cost more than
    the arithmetic, so the layers are unwrapped into plain functions once and the head
    samples through an ``ActionSampler``. The runner takes a new pass per rollout:
    parameters change only in updates, between rollouts, and in place, so the bound ones
    stay the policy's own.
    """

    def __init__(self, policy: ActorCritic, deterministic: bool = False) -> None:
        # The identity encoder (flat observations) is skipped, not called.
        self._encode = None if policy.encoder.is_identity else policy.encoder
        self._actor = [unwrap_layer(m) for m in policy.actor_trunk]
        self._critic = (
            None if policy.shared_trunk else [unwrap_layer(m) for m in policy.critic_trunk]
        )
        self._sample = ActionSampler(policy.action_head, deterministic)
        self._value = unwrap_layer(policy.value_head)

    def __call__(
        self,
        obs: torch.Tensor,
        state: PolicyState,
        episode_start: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PolicyState]:
        """``obs`` [B, D], ``mask`` [B, A] -> action, log-probability and value, each [B],
        and the (empty) state, unchanged."""
        if self._encode is not None:
            obs = self._encode(obs)
        actor = apply_layers(self._actor, obs)
        critic = actor if self._critic is None else apply_layers(self._critic, obs)
        action, logp = self._sample(actor, mask)
        return action, logp, self._value(critic).squeeze(-1), state
