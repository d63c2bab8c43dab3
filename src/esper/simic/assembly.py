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

Structured observations reach the policy flattened in gymnasium's order
(``envs/factory.py``); ``observation_layout`` describes that flat vector from the
structured space, so the policy's encoder knows which entries are one-hots, flags, real
values or pixels.
"""

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from esper.simic.agents.batching import Batching, SequenceChunks, ShuffledSteps, Windows
from esper.simic.agents.data_parallel import DataParallel
from esper.simic.agents.encoders import (
    ObservationEncoder,
    ObservationPart,
    PartKind,
    nature_cnn_fits,
)
from esper.simic.agents.factored import FactoredSpec
from esper.simic.agents.heads import (
    ActionSpec,
    BinaryActions,
    ContinuousActions,
    DiscreteActions,
)
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.policy import Policy
from esper.simic.agents.ppo import PPOLearner
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.envs.factory import structured_observation_space
from esper.simic.gradients import build_collector
from esper.simic.settings import AgentConfig, RNNImpl, SimicConfig

ACTION_HEADS_KEY = "action_heads"
"""The env metadata key that declares factored action heads."""


class UnsupportedSpaceError(ValueError):
    """An observation or action space the agents cannot handle; one line naming it."""


SUPPORTED_OBSERVATIONS = (
    "Box (any shape; uint8 images HxWxC or CxHxW of 36x36 or more through a CNN), Discrete, "
    "MultiDiscrete, MultiBinary, and Dict or Tuple of these"
)


def is_image(space: gym.Space) -> bool:
    """A uint8 ``Box`` of rank 3 with bounds [0, 255], as Stable-Baselines3 decides."""
    return (
        isinstance(space, gym.spaces.Box)
        and space.dtype == np.uint8
        and len(space.shape) == 3
        and bool(np.all(space.low == 0))
        and bool(np.all(space.high == 255))
    )


def _image_part(space: gym.spaces.Box) -> ObservationPart:
    shape = tuple(int(n) for n in space.shape)
    # Channels are the smallest of the first and last dimensions (SB3's rule).
    channels_last = shape[-1] < shape[0]
    height, width = shape[:2] if channels_last else shape[1:]
    if not nature_cnn_fits(height, width):
        raise UnsupportedSpaceError(
            f"image observation {space} is too small for the Nature CNN: it needs 36x36 "
            "pixels or more (resize it with gymnasium.wrappers.ResizeObservation)"
        )
    return ObservationPart(
        PartKind.image, int(np.prod(shape)), (shape[0], shape[1], shape[2]), channels_last
    )


def observation_layout(space: gym.Space) -> list[ObservationPart]:
    """The parts of ``space`` flattened by ``gymnasium.spaces.utils.flatten``, in its order."""
    if is_image(space):
        assert isinstance(space, gym.spaces.Box)
        return [_image_part(space)]
    if isinstance(space, gym.spaces.Box):
        return [ObservationPart(PartKind.box, int(np.prod(space.shape)))]
    if isinstance(space, gym.spaces.Discrete):
        return [ObservationPart(PartKind.one_hot, int(space.n))]
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [ObservationPart(PartKind.one_hot, int(np.sum(space.nvec)))]
    if isinstance(space, gym.spaces.MultiBinary):
        return [ObservationPart(PartKind.binary, int(np.prod(space.shape)))]
    if isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        parts = space.spaces.values() if isinstance(space, gym.spaces.Dict) else space.spaces
        return [part for sub in parts for part in observation_layout(sub)]
    raise UnsupportedSpaceError(
        f"observation space {space} is not supported: expected {SUPPORTED_OBSERVATIONS}"
    )


def normalizable_entries(layout: list[ObservationPart]) -> np.ndarray:
    """Which entries of the flat observation observation normalisation may touch: real
    values only, never one-hots, flags or pixels."""
    return np.concatenate([np.full(p.size, p.kind is PartKind.box) for p in layout])


def action_spec(space: gym.Space, metadata: Mapping[str, Any]) -> ActionSpec:
    """What the policy's head must produce for ``space`` (and the env's declared heads)."""
    if isinstance(space, gym.spaces.Discrete):
        return DiscreteActions(int(space.n))
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return ContinuousActions(int(space.shape[0]))
    if isinstance(space, gym.spaces.MultiBinary) and len(space.shape) == 1:
        return BinaryActions(int(space.shape[0]))
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
        f"action space {space} is not supported: expected Discrete, a 1-D Box, a 1-D "
        "MultiDiscrete or a 1-D MultiBinary"
    )


def build_policy(
    agent: AgentConfig, layout: list[ObservationPart] | int, actions: ActionSpec
) -> Policy:
    """Feed-forward PPO's actor-critic, or a recurrent one when ``agent.rnn`` is set, over
    observations of ``layout`` (or a flat vector of that many real values)."""
    encoder = layout if isinstance(layout, int) else ObservationEncoder(layout)
    if agent.rnn is None:
        return ActorCritic(encoder, actions, agent.network, agent.head_ent_coefs)
    return RecurrentActorCritic(encoder, actions, agent.network, agent.rnn, agent.head_ent_coefs)


def build_batching(agent: AgentConfig) -> Batching:
    """How the learner cuts a rollout into minibatches (``agents/batching.py``)."""
    if agent.rnn is None:
        return ShuffledSteps(agent.minibatch_size)
    if agent.rnn.impl is RNNImpl.esper:
        return Windows(agent.seq_len, agent.minibatch_size)
    return SequenceChunks(agent.seq_len, agent.minibatch_size, agent.burn_in)


def build_agent(
    settings: SimicConfig,
    envs: gym.vector.VectorEnv,
    device: torch.device,
    num_updates: int,
    data_parallel: DataParallel | None = None,
) -> tuple[Policy, PPOLearner]:
    """The policy for ``envs``' spaces, on ``device``, and the learner that trains it
    (with ``data_parallel``, on this rank's share of every minibatch)."""
    agent = settings.agent
    layout = observation_layout(structured_observation_space(envs))
    actions = action_spec(envs.single_action_space, envs.metadata)
    policy = build_policy(agent, layout, actions)
    policy.to(device)
    learner = PPOLearner(
        policy,
        agent,
        build_collector(settings.collector),
        build_batching(agent),
        num_updates,
        data_parallel,
    )
    return policy, learner
