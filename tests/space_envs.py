"""Small synthetic envs with the spaces gymnasium's built-ins lack, registered under
``spaces_test/`` when imported: a ``Dict`` observation, an image, ``MultiBinary`` actions.

Each has a simple rule a policy can learn, so a run over them is a real training run.
"""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

EPISODE_STEPS = 8


class DictObservationEnv(gym.Env):
    """Walk a line of 5 cells to a target; observed as a position and target (Discrete)
    and a noise vector (Box). Reward 1 on reaching the target, which then moves."""

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Discrete(5),
                "target": spaces.Discrete(5),
                "noise": spaces.Box(-1.0, 1.0, (2,), np.float32),
            }
        )
        self.action_space = spaces.Discrete(3)
        self._position = self._target = self._t = 0

    def _obs(self) -> dict[str, Any]:
        noise = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return {"position": self._position, "target": self._target, "noise": noise}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self._position, self._target = (int(v) for v in self.np_random.integers(5, size=2))
        self._t = 0
        return self._obs(), {}

    def step(self, action: int) -> tuple:
        self._position = int(np.clip(self._position + int(action) - 1, 0, 4))
        reward = float(self._position == self._target)
        if reward:
            self._target = int(self.np_random.integers(5))
        self._t += 1
        return self._obs(), reward, False, self._t >= EPISODE_STEPS, {}


class ImageEnv(gym.Env):
    """A 36x36 grey image with a bright half, left or right; reward 1 for naming the side.
    ``channels_last`` chooses HxWxC (as gymnasium renders) or CxHxW (as frame stacks)."""

    def __init__(self, channels_last: bool = True) -> None:
        shape = (36, 36, 1) if channels_last else (2, 36, 36)
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(2)
        self.channels_last = channels_last
        self._side = self._t = 0

    def _obs(self) -> np.ndarray:
        image = np.zeros(self.observation_space.shape, np.uint8)
        columns = slice(0, 18) if self._side == 0 else slice(18, 36)
        if self.channels_last:
            image[:, columns, :] = 255
        else:
            image[:, :, columns] = 255
        return image

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self._side, self._t = int(self.np_random.integers(2)), 0
        return self._obs(), {}

    def step(self, action: int) -> tuple:
        reward = float(int(action) == self._side)
        self._side = int(self.np_random.integers(2))
        self._t += 1
        return self._obs(), reward, False, self._t >= EPISODE_STEPS, {}


class CopyBitsEnv(gym.Env):
    """Observe 4 random bits, act with 4 bits (``MultiBinary``): reward is the fraction
    copied right, so random play earns 0.5 a step and a perfect copy 1."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (4,), np.float32)
        self.action_space = spaces.MultiBinary(4)
        self._bits = np.zeros(4, np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self._bits = self.np_random.integers(2, size=4).astype(np.float32)
        self._t = 0
        return self._bits.copy(), {}

    def step(self, action: np.ndarray) -> tuple:
        assert action.dtype == np.int8 and self.action_space.contains(action), action
        reward = float(np.mean(np.asarray(action) == self._bits))
        self._bits = self.np_random.integers(2, size=4).astype(np.float32)
        self._t += 1
        return self._bits.copy(), reward, False, self._t >= EPISODE_STEPS, {}


IDS = {
    "spaces_test/DictObservation-v0": DictObservationEnv,
    "spaces_test/Image-v0": ImageEnv,
    "spaces_test/CopyBits-v0": CopyBitsEnv,
}
for env_id, entry_point in IDS.items():
    if env_id not in gym.envs.registry:
        gym.register(env_id, entry_point=entry_point)
