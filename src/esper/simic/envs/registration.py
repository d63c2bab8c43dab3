"""Registers esper-simic's own environments with gymnasium under the ``esper/`` namespace.

Entry points are strings, so gymnasium imports an environment's module only when
that environment is made: registering stays cheap.
"""

from typing import Any

import gymnasium as gym

_ESPER_ENVS: dict[str, tuple[str, dict[str, Any]]] = {
    # CartPole-v1's own time limit and solved threshold.
    "esper/StatelessCartPole-v0": (
        "esper.simic.envs.memory:StatelessCartPoleEnv",
        {"max_episode_steps": 500, "reward_threshold": 475.0},
    ),
    "esper/CueRecall-v0": ("esper.simic.envs.memory:CueRecallEnv", {}),
    "esper/SeedLifecycle-v0": (
        "esper.simic.envs.seed_lifecycle:SeedLifecycleEnv",
        # env.vectorization=batched: the real hosts of all envs trained as one batch.
        {"vector_entry_point": "esper.simic.envs.seed_lifecycle.vector:SeedLifecycleVectorEnv"},
    ),
}

# Ids with a batched vector env of their own (``env.vectorization=batched``).
BATCHED_ENVS = frozenset(
    env_id for env_id, (_, kwargs) in _ESPER_ENVS.items() if "vector_entry_point" in kwargs
)


def register_esper_envs() -> None:
    """Register every ``esper/`` environment once; calling again is a no-op."""
    for env_id, (entry_point, kwargs) in _ESPER_ENVS.items():
        if env_id not in gym.envs.registry:
            gym.register(id=env_id, entry_point=entry_point, **kwargs)
