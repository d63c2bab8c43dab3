"""Rollout collection into preallocated tensors, and deterministic evaluation.

Storage is shaped ``[T, N, ...]`` (time, env) and allocated once per run, so a
rollout writes into slots instead of growing Python lists of tensors.
"""

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from esper.simic.agents.advantages import bootstrap_truncated, compute_gae
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.ppo import RolloutBatch
from esper.simic.envs.normalization import Normalizer

ACTION_MASK_KEY = "action_mask"
"""Where an env with invalid actions puts its boolean mask in ``info``."""


def _info_mask(info: dict, device: torch.device) -> torch.Tensor | None:
    mask = info.get(ACTION_MASK_KEY)
    return None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool), device=device)


@dataclass
class RolloutStorage:
    """One rollout of ``num_steps`` steps of ``num_envs`` envs."""

    obs: torch.Tensor  # [T, N, *obs_shape]
    actions: torch.Tensor  # [T, N, *action_shape]
    logp: torch.Tensor  # [T, N]
    values: torch.Tensor  # [T, N]
    rewards: torch.Tensor  # [T, N], truncated episodes already bootstrapped
    dones: torch.Tensor  # [T, N], the episode ended with this step's transition
    action_masks: torch.Tensor | None  # [T, N, num_actions]

    @classmethod
    def allocate(
        cls, num_steps: int, envs: VectorEnv, mask_dim: int | None, device: torch.device
    ) -> "RolloutStorage":
        obs_shape = envs.single_observation_space.shape
        action_space = envs.single_action_space
        action_dtype = (
            torch.long if isinstance(action_space, gym.spaces.Discrete) else torch.float32
        )
        lead = (num_steps, envs.num_envs)

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(*lead, *shape, dtype=dtype, device=device)

        return cls(
            obs=zeros(*obs_shape),
            actions=zeros(*action_space.shape, dtype=action_dtype),
            logp=zeros(),
            values=zeros(),
            rewards=zeros(),
            dones=zeros(dtype=torch.bool),
            action_masks=None if mask_dim is None else zeros(mask_dim, dtype=torch.bool),
        )


@dataclass
class EpisodeStats:
    """Episodes that finished during one rollout (raw, unnormalised returns)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def record(self, info: dict) -> None:
        """Read gymnasium's ``RecordEpisodeStatistics`` entries for envs that finished."""
        if "episode" not in info:
            return
        finished = info["_episode"]
        self.returns.extend(info["episode"]["r"][finished].tolist())
        self.lengths.extend(info["episode"]["l"][finished].tolist())


class RolloutRunner:
    """Steps the training envs with the current policy and fills the storage."""

    def __init__(
        self,
        envs: VectorEnv,
        policy: ActorCritic,
        num_steps: int,
        gamma: float,
        gae_lambda: float,
        normalizer: Normalizer,
        device: torch.device,
        seed: int,
    ) -> None:
        self.envs = envs
        self.policy = policy
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.normalizer = normalizer
        self.device = device
        self.restart(seed)
        mask_dim = None if self.next_mask is None else self.next_mask.shape[-1]
        self.storage = RolloutStorage.allocate(num_steps, envs, mask_dim, device)

    def restart(self, seed: int) -> None:
        """Begin fresh episodes (after a resume: env state is not checkpointed)."""
        obs, info = self.envs.reset(seed=seed)
        self.next_obs = self._tensor(self.normalizer(obs, update=True))
        self.next_mask = _info_mask(info, self.device)

    def _tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    @torch.inference_mode()
    def collect(self) -> tuple[RolloutBatch, EpisodeStats]:
        """Run one rollout and return it flattened, with advantages, plus finished episodes."""
        storage, episodes = self.storage, EpisodeStats()
        for t in range(storage.obs.shape[0]):
            storage.obs[t] = self.next_obs
            if storage.action_masks is not None:
                storage.action_masks[t] = self.next_mask
            dist, value = self.policy(self.next_obs, self.next_mask)
            action = dist.sample()
            storage.actions[t] = action
            storage.logp[t] = dist.log_prob(action)
            storage.values[t] = value
            obs, reward, terminated, truncated, info = self.envs.step(action.cpu().numpy())
            reward_t = torch.as_tensor(reward, dtype=torch.float32, device=self.device)
            if truncated.any():
                reward_t = self._bootstrap(reward_t, terminated, truncated, info)
            storage.rewards[t] = reward_t
            storage.dones[t] = torch.as_tensor(terminated | truncated, device=self.device)
            self.next_obs = self._tensor(self.normalizer(obs, update=True))
            self.next_mask = _info_mask(info, self.device)
            episodes.record(info)
        next_value = self.policy.value(self.next_obs)
        advantages, returns = compute_gae(
            storage.rewards, storage.values, storage.dones, next_value, self.gamma, self.gae_lambda
        )
        return self._flatten(advantages, returns), episodes

    def _bootstrap(
        self, reward: torch.Tensor, terminated: np.ndarray, truncated: np.ndarray, info: dict
    ) -> torch.Tensor:
        """Add ``gamma * V(final obs)`` to the rewards of episodes cut by a time limit."""
        cut = truncated & ~terminated
        if not cut.any():
            return reward
        final_obs = self.normalizer(np.stack(info["final_obs"][cut]), update=False)
        final_values = torch.zeros_like(reward)
        final_values[torch.as_tensor(cut, device=self.device)] = self.policy.value(
            self._tensor(final_obs)
        )
        return bootstrap_truncated(
            reward, torch.as_tensor(cut, device=self.device), final_values, self.gamma
        )

    def _flatten(self, advantages: torch.Tensor, returns: torch.Tensor) -> RolloutBatch:
        s = self.storage

        def flat(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, *t.shape[2:])

        # Clones leave inference mode: the update differentiates through these tensors.
        return RolloutBatch(
            obs=flat(s.obs).clone(),
            actions=flat(s.actions).clone(),
            logp=flat(s.logp).clone(),
            values=flat(s.values).clone(),
            advantages=flat(advantages).clone(),
            returns=flat(returns).clone(),
            action_masks=None if s.action_masks is None else flat(s.action_masks).clone(),
        )


@torch.inference_mode()
def evaluate(
    envs: VectorEnv,
    policy: ActorCritic,
    normalizer: Normalizer,
    deterministic: bool,
    device: torch.device,
    seed: int,
) -> np.ndarray:
    """Returns of one episode per eval env (``num_envs`` episodes in all).

    Counting only each env's first episode avoids the bias towards short episodes
    that comes from taking the first K episodes to finish across envs.
    """
    obs, info = envs.reset(seed=seed)
    returns = np.zeros(envs.num_envs)
    finished = np.zeros(envs.num_envs, dtype=bool)
    while not finished.all():
        obs_t = torch.as_tensor(normalizer(obs, update=False), dtype=torch.float32, device=device)
        dist, _ = policy(obs_t, _info_mask(info, device))
        action = dist.mode if deterministic else dist.sample()
        obs, _, terminated, truncated, info = envs.step(action.cpu().numpy())
        ended = (terminated | truncated) & ~finished
        if ended.any():
            returns[ended] = info["episode"]["r"][ended]
            finished |= ended
    return returns
