"""Envs built from ``EnvConfig`` with gymnasium's own wrappers.

Per env, in order: ``gymnasium.make`` (after importing ``env.imports``; gymnasium itself
imports the module of a ``module:Name`` id), the wrappers of
``env.wrappers``, then flattening of a structured observation (``flatten_structured``).
Flattening per env rather than on the vector env keeps ``info["final_obs"]`` flat too,
which the rollout needs to bootstrap truncated episodes; the structured space is kept in
the env's metadata, where the policy's encoder finds it (``structured_observation_space``).

Then on the vector env: episode statistics, recorded on raw rewards before any
normalisation so ``rollout/episode_return`` is the task's true return; ``Box`` actions
clipped or squashed into their bounds, ``MultiBinary`` ones cast to int8; reward
normalisation. Observation normalisation lives in ``normalization.py`` (see there why it
is not a wrapper). A ``batched`` env steps in tensors on its device, with torch versions
of the statistics and reward wrappers (``tensor_wrappers.py``).
"""

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import VectorizeMode
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers import FlattenObservation
from gymnasium.wrappers import vector as vector_wrappers
from hydra.utils import instantiate

from esper.simic.envs.registration import register_esper_envs
from esper.simic.envs.tensor_wrappers import TensorEpisodeStatistics, TensorNormalizeReward
from esper.simic.settings import ActionBounds, EnvConfig, Vectorization

W = TypeVar("W")

STRUCTURED_SPACE_KEY = "structured_observation_space"
"""The env metadata key that keeps an observation space from before flattening."""


def import_env_modules(config: EnvConfig) -> None:
    """Register the ``esper/`` envs and import ``env.imports``, which register theirs."""
    register_esper_envs()
    for name in config.imports:
        importlib.import_module(name)


def wrapper_functions(config: EnvConfig) -> list[Callable[[gym.Env], gym.Env]]:
    """``env.wrappers`` as functions of an env (picklable, for async workers)."""
    return [partial(instantiate, dict(spec)) for spec in config.wrappers]


def is_flat(space: gym.Space) -> bool:
    """A 1-D ``Box`` of real values: what the policy takes without flattening."""
    return (
        isinstance(space, gym.spaces.Box)
        and len(space.shape) == 1
        and np.issubdtype(space.dtype, np.floating)
    )


def flatten_structured(env: gym.Env) -> gym.Env:
    """``env`` with its observations flattened by gymnasium (one-hots for discrete parts,
    ``Dict`` and ``Tuple`` concatenated), its structured space kept in the metadata; a flat
    ``Box`` env unchanged."""
    if is_flat(env.observation_space):
        return env
    flat = FlattenObservation(env)
    flat.metadata = {**env.metadata, STRUCTURED_SPACE_KEY: env.observation_space}
    return flat


def structured_observation_space(envs: VectorEnv) -> gym.Space:
    """One env's observation space before flattening."""
    return envs.metadata.get(STRUCTURED_SPACE_KEY, envs.single_observation_space)


def _make_kwargs(config: EnvConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(config.kwargs)
    if config.max_episode_steps is not None:
        kwargs["max_episode_steps"] = config.max_episode_steps
    return kwargs


def make_vector_env(
    config: EnvConfig, *, gamma: float, num_envs: int | None = None, device: str = "cpu"
) -> VectorEnv:
    """Build the vector env a run trains (or evaluates) on.

    Same-step autoreset: when an episode ends, the step returns the next episode's
    first observation and puts the last one in ``info["final_obs"]``, which the
    rollout needs to bootstrap truncated episodes (PPO's time-limit handling,
    Pardo et al. 2018, arXiv:1712.00378). ``gamma`` is the agent's discount, which
    reward normalisation uses for its running return. ``device`` is where a ``batched``
    env computes (the env's registered ``vector_entry_point``, same-step autoreset too).
    """
    import_env_modules(config)
    count = num_envs if num_envs is not None else config.num_envs
    if config.vectorization is Vectorization["batched"]:
        return _make_batched(config, gamma, count, torch.device(device))
    envs = gym.make_vec(
        config.id,
        num_envs=count,
        vectorization_mode=config.vectorization.value,
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
        wrappers=[*wrapper_functions(config), flatten_structured],
        **_make_kwargs(config),
    )
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    space = envs.single_action_space
    if isinstance(space, gym.spaces.Box):
        # The policy samples from an unbounded Gaussian; the env only ever sees legal actions.
        if config.action_bounds is ActionBounds.clip:
            envs = vector_wrappers.ClipAction(envs)
        else:
            envs = vector_wrappers.TransformAction(envs, partial(_squash, space=space))
    if isinstance(space, gym.spaces.MultiBinary):
        # Bernoulli samples are 0/1 floats; the env gets flags of MultiBinary's own dtype.
        envs = vector_wrappers.TransformAction(envs, partial(np.asarray, dtype=space.dtype))
    if config.normalize_reward:
        envs = vector_wrappers.NormalizeReward(envs, gamma=gamma)
        envs = vector_wrappers.ClipReward(envs, -config.clip_reward, config.clip_reward)
    return envs


def _make_batched(
    config: EnvConfig, gamma: float, num_envs: int, device: torch.device
) -> VectorEnv:
    """The env's own batched vector env, stepping in tensors on ``device``, with the same
    statistics and reward normalisation as above, computed there (:mod:`.tensor_wrappers`).

    The door (``config.check_batched``) has refused what these cannot do: per-env
    wrappers, time limits, observation normalisation.
    """
    envs = gym.make_vec(
        config.id,
        num_envs=num_envs,
        vectorization_mode=VectorizeMode.VECTOR_ENTRY_POINT,
        device=str(device),
        tensors=True,
        **_make_kwargs(config),
    )
    envs = TensorEpisodeStatistics(envs, device)
    if config.normalize_reward:
        envs = TensorNormalizeReward(envs, gamma, config.clip_reward, device)
    return envs


def _squash(actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """Unbounded Gaussian samples onto ``space``'s bounds through tanh."""
    unit = (np.tanh(actions) + 1.0) / 2.0
    return (space.low + unit * (space.high - space.low)).astype(space.dtype)


def find_wrapper(envs: VectorEnv, wrapper_type: type[W]) -> W | None:
    """The first wrapper of this type in the stack, outermost first."""
    env: Any = envs
    while isinstance(env, gym.vector.VectorWrapper):
        if isinstance(env, wrapper_type):
            return env
        env = env.env
    return None
