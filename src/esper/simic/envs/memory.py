"""Partially observable environments that a policy can solve only with memory.

Both exist to tell recurrent PPO from feed-forward PPO: each hides something the optimal
action depends on, so a policy that sees only the current observation is capped below the
optimum, while one that carries a hidden state across steps can reach it.

* :class:`StatelessCartPoleEnv` hides CartPole's velocities; they must be inferred from
  consecutive positions (the "velocity-removed" CartPole of Heess et al., 2015,
  "Memory-based control with recurrent neural networks", arXiv:1512.04455).
* :class:`CueRecallEnv` shows a cue once and asks for it back after a delay of pure noise,
  so its optimal and best memoryless returns are known exactly (1 and ``1 / num_cues``).
"""

from typing import Any

import numpy as np
from gymnasium import Env, spaces
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from numpy.typing import NDArray

# CartPole's observation is (x, x_dot, theta, theta_dot); these are the components kept.
_POSITION_INDICES: list[int] = [0, 2]


class StatelessCartPoleEnv(CartPoleEnv):
    """CartPole-v1 observed through (cart position, pole angle) only.

    Dynamics, reward, termination and rendering are CartPoleEnv's own; only the observation
    drops the two velocities. Without them the current observation cannot tell a pole that
    is falling from one that is recovering, so a feed-forward policy balances poorly, while a
    recurrent policy can recover the velocities from successive observations.

    The 500-step time limit of CartPole-v1 comes, as for CartPole-v1, from the ``TimeLimit``
    wrapper that ``gymnasium.make`` adds from the registered ``max_episode_steps``.
    """

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(render_mode=render_mode)
        full_space = self.observation_space
        assert isinstance(full_space, spaces.Box)
        self.observation_space = spaces.Box(
            low=full_space.low[_POSITION_INDICES],
            high=full_space.high[_POSITION_INDICES],
            dtype=np.float32,
        )

    def step(
        self, action: int | np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance CartPole's physics by one step; observe only its positions."""
        obs, reward, terminated, truncated, info = super().step(action)
        return obs[_POSITION_INDICES], reward, terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset CartPole (same seeding and ``options`` bounds); observe only its positions."""
        obs, info = super().reset(seed=seed, options=options)
        return obs[_POSITION_INDICES], info


class CueRecallEnv(Env[NDArray[np.float32], np.int64]):
    """Remember a cue through ``delay`` steps of noise, then name it.

    An episode is ``delay + 2`` steps, each observation a float32 vector in [0, 1] laid out as
    ``[cue one-hot (num_cues) | distractor one-hot (num_distractors) | query flag]``:

    * step 0 (the observation from ``reset``): the cue, drawn uniformly, shown one-hot;
    * steps 1..``delay``: one distractor slot, drawn uniformly and independently of the cue;
      the cue part is zero;
    * step ``delay + 1``: only the query flag is set; the action taken here is the answer.

    Actions before the query are ignored and earn 0. The answer earns 1 if it equals the cue,
    else 0, and ends the episode. So the return is the recall accuracy:

    * ``optimal_return`` = 1, reached by remembering the cue;
    * ``memoryless_return`` = ``1 / num_cues``, the best any policy of the current observation
      can expect, because the query observation is the same whatever the cue.

    No time feature is included: the query flag already says when to answer, and the phase
    never depends on the cue, so it would add input without adding information.
    ``reset(options={"cue": k})`` fixes the cue (for probes and tests); the distractors are
    drawn before the cue, so a seed gives the same distractors whatever the cue.
    """

    def __init__(self, num_cues: int = 4, delay: int = 8, num_distractors: int = 4) -> None:
        if num_cues < 2:
            raise ValueError(f"num_cues must be at least 2 for recall to matter, got {num_cues}")
        if delay < 1:
            raise ValueError(f"delay must be at least 1 step for memory to matter, got {delay}")
        if num_distractors < 1:
            raise ValueError(f"num_distractors must be at least 1, got {num_distractors}")
        self.num_cues = num_cues
        self.delay = delay
        self.num_distractors = num_distractors
        self.observation_space = spaces.Box(
            low=0.0, high=1.0, shape=(num_cues + num_distractors + 1,), dtype=np.float32
        )
        self.action_space = spaces.Discrete(num_cues)
        self._cue = 0
        self._distractors: NDArray[np.int64] = np.zeros(delay, dtype=np.int64)
        # Index of the observation the agent is acting on; None before reset and after the end.
        self._t: int | None = None

    @property
    def optimal_return(self) -> float:
        """Return of a policy that remembers the cue: it always answers correctly."""
        return 1.0

    @property
    def memoryless_return(self) -> float:
        """Best expected return of a policy of the current observation alone (a guess)."""
        return 1.0 / self.num_cues

    @property
    def episode_length(self) -> int:
        """Steps per episode: act on the cue, on each of ``delay`` distractors, then answer."""
        return self.delay + 2

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode; ``options={"cue": k}`` fixes the cue instead of drawing it."""
        super().reset(seed=seed)
        self._distractors = self.np_random.integers(self.num_distractors, size=self.delay)
        cue = (options or {}).get("cue")
        if cue is None:
            self._cue = int(self.np_random.integers(self.num_cues))
        elif isinstance(cue, int | np.integer) and 0 <= cue < self.num_cues:
            self._cue = int(cue)
        else:
            raise ValueError(f"options['cue'] must be an int in [0, {self.num_cues}), got {cue!r}")
        self._t = 0
        return self._observation(0), {}

    def step(
        self, action: np.int64 | int
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Ignore the action until the query; then score it against the cue and end."""
        if self._t is None:
            raise RuntimeError("call reset() before step(), and again after the episode ends")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in {self.action_space}, got {action!r}")
        if self._t == self.delay + 1:
            self._t = None
            reward = 1.0 if int(action) == self._cue else 0.0
            # The episode is over; the final observation is blank.
            return np.zeros(self.observation_space.shape, np.float32), reward, True, False, {}
        self._t += 1
        return self._observation(self._t), 0.0, False, False, {}

    def _observation(self, t: int) -> NDArray[np.float32]:
        obs = np.zeros(self.observation_space.shape, np.float32)
        if t == 0:
            obs[self._cue] = 1.0
        elif t <= self.delay:
            obs[self.num_cues + self._distractors[t - 1]] = 1.0
        else:
            obs[-1] = 1.0
        return obs
