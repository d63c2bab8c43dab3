"""Vector environments built from ``EnvConfig`` with gymnasium's own wrappers.

Wrapper order matters: episode statistics are recorded on raw rewards, before any
normalisation, so ``rollout/episode_return`` is the task's true return. Observation
normalisation lives in ``normalization.py`` (see there why it is not a wrapper).
"""

from typing import Any, TypeVar

import gymnasium as gym
from gymnasium.envs.registration import VectorizeMode
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.wrappers import vector as vector_wrappers

from esper.simic.envs.registration import register_esper_envs
from esper.simic.settings import EnvConfig, Vectorization

W = TypeVar("W")


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
    register_esper_envs()
    make_kwargs: dict[str, Any] = dict(config.kwargs)
    if config.max_episode_steps is not None:
        make_kwargs["max_episode_steps"] = config.max_episode_steps
    count = num_envs if num_envs is not None else config.num_envs
    if config.vectorization is Vectorization["batched"]:
        envs = gym.make_vec(
            config.id,
            num_envs=count,
            vectorization_mode=VectorizeMode.VECTOR_ENTRY_POINT,
            device=device,
            **make_kwargs,
        )
    else:
        envs = gym.make_vec(
            config.id,
            num_envs=count,
            vectorization_mode=config.vectorization.value,
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **make_kwargs,
        )
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        # The policy samples from an unbounded Gaussian; the env only ever sees legal actions.
        envs = vector_wrappers.ClipAction(envs)
    if config.normalize_reward:
        envs = vector_wrappers.NormalizeReward(envs, gamma=gamma)
        envs = vector_wrappers.ClipReward(envs, -config.clip_reward, config.clip_reward)
    return envs


def find_wrapper(envs: VectorEnv, wrapper_type: type[W]) -> W | None:
    """The first wrapper of this type in the stack, outermost first."""
    env: Any = envs
    while isinstance(env, gym.vector.VectorWrapper):
        if isinstance(env, wrapper_type):
            return env
        env = env.env
    return None
