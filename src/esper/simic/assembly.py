"""Where an env's spaces meet the agent package: the policy, its batching and its learner.

``agents/`` never sees gymnasium: this module turns the env's observation and action
spaces, and the action heads the env declares, into the plain sizes and specs the agent
package takes. The config check (``config.py``) runs the same derivations on a probe env
at the door, so an env the agents cannot handle stops the run before anything is created.

An env with a ``MultiDiscrete`` action space may declare how its heads depend on each other
in ``metadata["action_heads"]`` (gymnasium copies an env's metadata to its vector envs)::

    {
        "names": ("op", "slot", ...),        # one name per MultiDiscrete dimension
        "relevance": [[True, ...], ...],     # [n_ops][n_heads]: which heads each op uses
        "conditional": "slot",               # the head masked per op, or None
    }

Without a declaration every head is independent and always counts.
"""

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch

from esper.simic.agents.batching import Batching, SequenceChunks, ShuffledSteps, Windows
from esper.simic.agents.factored import FactoredSpec
from esper.simic.agents.heads import ActionSpec, ContinuousActions, DiscreteActions
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.policy import Policy
from esper.simic.agents.ppo import PPOLearner
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.gradients import build_collector
from esper.simic.settings import AgentConfig, RNNImpl, SimicConfig

ACTION_HEADS_KEY = "action_heads"
"""The env metadata key that declares factored action heads."""


class UnsupportedSpaceError(ValueError):
    """An observation or action space the agents cannot handle; one line naming it."""


def observation_size(space: gym.Space) -> int:
    """The length of the flat observation vector the policy's first layer takes."""
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return int(space.shape[0])
    raise UnsupportedSpaceError(
        f"observation space {space} is not supported: expected a flat (1-D) Box"
    )


def action_spec(space: gym.Space, metadata: Mapping[str, Any]) -> ActionSpec:
    """What the policy's head must produce for ``space`` (and the env's declared heads)."""
    if isinstance(space, gym.spaces.Discrete):
        return DiscreteActions(int(space.n))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return ContinuousActions(int(space.shape[0]))
    if isinstance(space, gym.spaces.MultiDiscrete) and len(space.shape) == 1:
        sizes = [int(n) for n in space.nvec]
        declared = metadata.get(ACTION_HEADS_KEY)
        if declared is None:
            return FactoredSpec.independent(sizes)
        names = tuple(declared["names"])
        conditional = declared.get("conditional")
        return FactoredSpec(
            head_sizes=tuple(sizes),
            relevance=torch.as_tensor(declared["relevance"], dtype=torch.bool),
            conditional_head=None if conditional is None else names.index(conditional),
            head_names=names,
        )
    raise UnsupportedSpaceError(
        f"action space {space} is not supported: expected Discrete, a 1-D Box or a 1-D "
        "MultiDiscrete"
    )


def build_policy(agent: AgentConfig, obs_size: int, actions: ActionSpec) -> Policy:
    """Feed-forward PPO's actor-critic, or a recurrent one when ``agent.rnn`` is set."""
    if agent.rnn is None:
        return ActorCritic(obs_size, actions, agent.network, agent.head_ent_coefs)
    return RecurrentActorCritic(obs_size, actions, agent.network, agent.rnn, agent.head_ent_coefs)


def build_batching(agent: AgentConfig) -> Batching:
    """How the learner cuts a rollout into minibatches (``agents/batching.py``)."""
    if agent.rnn is None:
        return ShuffledSteps(agent.minibatch_size)
    if agent.rnn.impl is RNNImpl.esper:
        return Windows(agent.seq_len, agent.minibatch_size)
    return SequenceChunks(agent.seq_len, agent.minibatch_size, agent.burn_in)


def build_agent(
    settings: SimicConfig, envs: gym.vector.VectorEnv, device: torch.device, num_updates: int
) -> tuple[Policy, PPOLearner]:
    """The policy for ``envs``' spaces, on ``device``, and the learner that trains it."""
    agent = settings.agent
    obs_size = observation_size(envs.single_observation_space)
    actions = action_spec(envs.single_action_space, envs.metadata)
    policy = build_policy(agent, obs_size, actions)
    policy.to(device)
    learner = PPOLearner(
        policy, agent, build_collector(settings.collector), build_batching(agent), num_updates
    )
    return policy, learner
