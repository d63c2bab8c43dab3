"""Episode statistics and reward normalisation for vector envs that step in torch tensors.

A tensor env (the batched seed-lifecycle env) takes its actions as a tensor and returns
observations, rewards, terminations, truncations and ``info["action_mask"]`` as tensors
on its device. gymnasium's vector ``RecordEpisodeStatistics`` and ``NormalizeReward``
compute in NumPy, which would copy every step's rewards to the host; these two do the
same arithmetic in torch, on the env's device, with no host synchronisation per step:

* :class:`TensorEpisodeStatistics` puts ``info["episode"]`` (``r``, ``l``) and
  ``info["_episode"]`` on every step (rows valid where ``_episode`` holds), so that the
  rollout reads the finished episodes back once per rollout, not per step;
* :class:`TensorNormalizeReward` is gymnasium's ``NormalizeReward`` (same-step
  autoreset) followed by ``ClipReward``; it subclasses ``NormalizeReward`` so that
  checkpoints find and save its running statistics as they do gymnasium's.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers import vector as vector_wrappers


def _check_same_step(env: VectorEnv) -> None:
    mode = env.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(f"tensor wrappers need same-step autoreset, got {mode}")


class TensorEpisodeStatistics(VectorWrapper):
    """Undiscounted return and length of each env's episode, kept on the env's device."""

    def __init__(self, env: VectorEnv, device: torch.device) -> None:
        super().__init__(env)
        _check_same_step(env)
        self.episode_returns = torch.zeros(self.num_envs, dtype=torch.float64, device=device)
        self.episode_lengths = torch.zeros(self.num_envs, dtype=torch.long, device=device)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.episode_returns.zero_()
        self.episode_lengths.zero_()
        return super().reset(**kwargs)

    def step(self, actions: Any) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs, rewards, terminations, truncations, infos = self.env.step(actions)
        # Same-step autoreset: every step counts towards the episode it ends or continues.
        self.episode_returns += rewards
        self.episode_lengths += 1
        dones = terminations | truncations
        infos["episode"] = {"r": self.episode_returns.clone(), "l": self.episode_lengths.clone()}
        infos["_episode"] = dones
        self.episode_returns.masked_fill_(dones, 0.0)
        self.episode_lengths.masked_fill_(dones, 0)
        return obs, rewards, terminations, truncations, infos


class TensorRunningMeanStd:
    """gymnasium's ``RunningMeanStd`` (shape ``()``) on a device, float64.

    ``mean``, ``var`` and ``count`` read and write as NumPy values, as gymnasium's do, so
    checkpoints save and restore them unchanged; reading them synchronises, once.
    """

    def __init__(self, device: torch.device) -> None:
        self._mean = torch.zeros((), dtype=torch.float64, device=device)
        self._var = torch.ones((), dtype=torch.float64, device=device)
        self._count = torch.full((), 1e-4, dtype=torch.float64, device=device)
        self.sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None
        """Set in a data-parallel run: every batch then spans all ranks' envs."""

    def update(self, x: torch.Tensor) -> None:
        """Fold in a batch, as ``update_mean_var_count_from_moments`` does (float32 moments
        of a float32 batch, as NumPy takes them; float64 sums when they span ranks)."""
        size: float | torch.Tensor = x.shape[0]
        if self.sum_over_ranks is None:
            batch_mean = x.mean().double()
            batch_var = x.var(correction=0).double()
        else:
            wide = x.double()
            moments = torch.stack([wide.new_tensor(float(size)), wide.sum(), wide.square().sum()])
            size, total_sum, squares = self.sum_over_ranks(moments).unbind()
            batch_mean = total_sum / size
            batch_var = (squares / size - batch_mean.square()).clamp(min=0)
        delta = batch_mean - self._mean
        total = self._count + size
        m2 = self._var * self._count + batch_var * size
        m2 = m2 + delta * delta * self._count * size / total
        self._mean = self._mean + delta * size / total
        self._var = m2 / total
        self._count = total

    @property
    def var_tensor(self) -> torch.Tensor:
        """The variance where it lives, for use without a synchronisation."""
        return self._var

    @property
    def mean(self) -> np.ndarray:
        return np.array(self._mean.item())

    @mean.setter
    def mean(self, value: np.ndarray) -> None:
        self._mean = torch.as_tensor(value, dtype=torch.float64, device=self._mean.device)

    @property
    def var(self) -> np.ndarray:
        return np.array(self._var.item())

    @var.setter
    def var(self, value: np.ndarray) -> None:
        self._var = torch.as_tensor(value, dtype=torch.float64, device=self._var.device)

    @property
    def count(self) -> float:
        return float(self._count.item())

    @count.setter
    def count(self, value: float) -> None:
        self._count = torch.as_tensor(value, dtype=torch.float64, device=self._count.device)


class TensorNormalizeReward(vector_wrappers.NormalizeReward):
    """``NormalizeReward(gamma)`` then ``ClipReward(-clip, clip)``, in torch on ``device``."""

    def __init__(
        self,
        env: VectorEnv,
        gamma: float,
        clip: float,
        device: torch.device,
        epsilon: float = 1e-8,
    ) -> None:
        VectorWrapper.__init__(self, env)
        _check_same_step(env)
        self.gamma, self.epsilon, self.clip = gamma, epsilon, clip
        self.return_rms = TensorRunningMeanStd(device)
        # float32, as gymnasium keeps it.
        self.accumulated_reward = torch.zeros(self.num_envs, dtype=torch.float32, device=device)
        self._update_running_mean = True

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self.accumulated_reward.zero_()
        return VectorWrapper.reset(self, **kwargs)

    def step(self, actions: Any) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        discounted = self.accumulated_reward * self.gamma * (~terminated)
        self.accumulated_reward.copy_(discounted + reward)
        if self._update_running_mean:
            self.return_rms.update(self.accumulated_reward)
        # Same-step autoreset: the envs that ended start their next return now.
        self.accumulated_reward.masked_fill_(terminated | truncated, 0.0)
        scaled = reward / torch.sqrt(self.return_rms.var_tensor + self.epsilon)
        return obs, scaled.clamp(-self.clip, self.clip), terminated, truncated, info
