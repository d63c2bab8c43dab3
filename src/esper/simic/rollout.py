"""Rollout collection into preallocated tensors, and evaluation, for any ``Policy``.

Storage is shaped ``[T, N, ...]`` (time, env) and allocated once per run, so a rollout
writes into slots instead of growing Python lists of tensors. Every policy carries a state
across steps and rollouts (empty for a feed-forward one) that is reset where episodes
start; the storage keeps the state before every step so that training can replay any
chunk. Evaluation steps the policy through the same acting path as the rollout.

Two kinds of vector env: every gymnasium env speaks NumPy, and its arrays become tensors
here; a tensor env (the batched seed-lifecycle env, ``envs.tensor_wrappers``) takes the
action tensor and returns tensors on its device, which stay there: no per-step copy to
the host and back, and its finished episodes are read back once per rollout.
"""

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from esper.simic.agents.advantages import bootstrap_truncated, compute_gae
from esper.simic.agents.batches import Rollout
from esper.simic.agents.policy import Policy, PolicyState
from esper.simic.envs.normalization import Normalizer

ACTION_MASK_KEY = "action_mask"
"""Where an env with invalid actions puts its boolean mask in ``info``."""


def _info_mask(info: dict, device: torch.device) -> torch.Tensor | None:
    mask = info.get(ACTION_MASK_KEY)
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        return mask.to(device)  # a tensor env's: no copy on its own device
    return torch.as_tensor(np.asarray(mask, dtype=bool), device=device)


def _env_actions(action: torch.Tensor, tensors: bool) -> torch.Tensor | np.ndarray:
    """The policy's actions as the env takes them: the tensor itself, or a NumPy copy."""
    return action if tensors else action.cpu().numpy()


def _check_log_probs(logp: torch.Tensor) -> None:
    """Fail on a NaN/Inf log-probability, i.e. a policy whose action probabilities are not
    finite: what ``torch.multinomial`` refuses at every draw, checked once per rollout."""
    bad = ~torch.isfinite(logp)
    if bad.any():
        step, env = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"non-finite action log-probability at rollout step {step}, env {env}: "
            "the policy's output is NaN or Inf"
        )


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
    states_h: torch.Tensor  # [T, N, K, H]; K = 0 for a feed-forward policy
    states_c: torch.Tensor | None  # [T, N, K, H], an LSTM's cell state

    @classmethod
    def allocate(
        cls,
        num_steps: int,
        envs: VectorEnv,
        mask_dim: int | None,
        state: PolicyState,
        device: torch.device,
    ) -> "RolloutStorage":
        obs_shape = envs.single_observation_space.shape
        action_space = envs.single_action_space
        discrete = isinstance(action_space, gym.spaces.Discrete | gym.spaces.MultiDiscrete)
        action_dtype = torch.long if discrete else torch.float32
        lead = (num_steps, envs.num_envs)

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(*lead, *shape, dtype=dtype, device=device)

        def state_slots(tensor: torch.Tensor) -> torch.Tensor:
            return zeros(tensor.shape[0], tensor.shape[2])

        return cls(
            obs=zeros(*obs_shape),
            actions=zeros(*action_space.shape, dtype=action_dtype),
            logp=zeros(),
            values=zeros(),
            rewards=zeros(),
            dones=zeros(dtype=torch.bool),
            action_masks=None if mask_dim is None else zeros(mask_dim, dtype=torch.bool),
            states_h=state_slots(state.h),
            states_c=None if state.c is None else state_slots(state.c),
        )


@dataclass
class EpisodeStats:
    """Episodes that finished during one rollout (raw, unnormalised returns)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


class EpisodeRecorder:
    """Keeps each step's episode-statistics entries and reads the finished ones once.

    The entries are gymnasium's ``RecordEpisodeStatistics`` arrays or a tensor env's
    tensors (``TensorEpisodeStatistics``); either way they are stacked and masked at the
    end of the rollout, in step-then-env order, so a device is synchronised once.
    """

    def __init__(self) -> None:
        self._returns: list[Any] = []  # [N] per step with an ``episode`` entry
        self._lengths: list[Any] = []
        self._finished: list[Any] = []

    def record(self, info: dict) -> None:
        """Keep the step's ``episode`` entries (present where some env finished)."""
        if "episode" in info:
            self._returns.append(info["episode"]["r"])
            self._lengths.append(info["episode"]["l"])
            self._finished.append(info["_episode"])

    def stats(self) -> EpisodeStats:
        """The finished episodes' returns and lengths."""
        if not self._finished:
            return EpisodeStats()
        stack = torch.stack if isinstance(self._finished[0], torch.Tensor) else np.stack
        finished = stack(self._finished)
        return EpisodeStats(
            stack(self._returns)[finished].tolist(), stack(self._lengths)[finished].tolist()
        )


class RolloutRunner:
    """Steps the training envs with the current policy and fills the storage."""

    def __init__(
        self,
        envs: VectorEnv,
        policy: Policy,
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
        self.storage = RolloutStorage.allocate(num_steps, envs, mask_dim, self.state, device)

    def restart(self, seed: int) -> None:
        """Begin fresh episodes (at the start, and after a resume: env state is not saved)."""
        obs, info = self.envs.reset(seed=seed)
        self.env_tensors = isinstance(obs, torch.Tensor)
        self.next_obs = self._tensor(self.normalizer(obs, update=True))
        self.next_mask = _info_mask(info, self.device)
        self.episode_start = torch.ones(self.envs.num_envs, dtype=torch.bool, device=self.device)
        self.state = self.policy.initial_state(self.envs.num_envs)

    def _tensor(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def collect(self) -> tuple[Rollout, EpisodeStats]:
        """Run one rollout and return it with its advantages, plus the finished episodes.

        The copies are made outside inference mode, so the update can differentiate
        through them.
        """
        first_starts = self.episode_start.clone()
        advantages, returns, episodes = self._run()
        return self._rollout(advantages, returns, first_starts), episodes

    @torch.inference_mode()
    def _run(self) -> tuple[torch.Tensor, torch.Tensor, EpisodeStats]:
        """Step the envs ``T`` times.

        Per step only what the next step needs becomes a tensor: a NumPy env's rewards and
        episode ends stay NumPy rows (a tensor env's stay its tensors), actions,
        log-probabilities, values and states a list, and each field is copied into the
        storage once at the end. At CartPole's size a tensor conversion or slot write
        costs about as much as a layer of the policy.
        """
        storage, episodes = self.storage, EpisodeRecorder()
        num_steps = storage.obs.shape[0]
        obs_slots = storage.obs.unbind(0)
        act = self.policy.acting()
        actions, logps, values, states = [], [], [], []
        if self.env_tensors:
            rewards = torch.empty_like(storage.rewards)
            dones = torch.empty_like(storage.dones)
        else:
            rewards = np.empty(storage.rewards.shape, dtype=np.float32)
            dones = np.empty(storage.dones.shape, dtype=bool)
        for t in range(num_steps):
            obs_slots[t].copy_(self.next_obs)
            if storage.action_masks is not None:
                storage.action_masks[t] = self.next_mask
            states.append(self.state)
            action, logp, value, self.state = act(
                self.next_obs, self.state, self.episode_start, self.next_mask
            )
            actions.append(action)
            logps.append(logp)
            values.append(value)
            step = self.envs.step(_env_actions(action, self.env_tensors))
            obs, reward, terminated, truncated, info = step
            if self.env_tensors:
                rewards[t] = self._bootstrap_all(reward, terminated, truncated, info)
                torch.logical_or(terminated, truncated, out=dones[t])
                self.episode_start = dones[t]
            else:
                rewards[t] = reward
                if truncated.any():
                    reward_t = torch.as_tensor(rewards[t], device=self.device)
                    bootstrapped = self._bootstrap(reward_t, terminated, truncated, info)
                    rewards[t] = bootstrapped.cpu().numpy()
                np.logical_or(terminated, truncated, out=dones[t])
                # A view of this rollout's own ``dones`` row, which no later step overwrites.
                self.episode_start = torch.from_numpy(dones[t]).to(self.device)
            self.next_obs = self._tensor(self.normalizer(obs, update=True))
            self.next_mask = _info_mask(info, self.device)
            episodes.record(info)
        torch.stack(actions, out=storage.actions)
        torch.stack(logps, out=storage.logp)
        torch.stack(values, out=storage.values)
        storage.states_h.copy_(torch.stack([s.h for s in states]).transpose(1, 2))
        if storage.states_c is not None:
            storage.states_c.copy_(torch.stack([s.c for s in states]).transpose(1, 2))
        storage.rewards.copy_(torch.as_tensor(rewards))
        storage.dones.copy_(torch.as_tensor(dones))
        _check_log_probs(storage.logp)
        next_value = self.policy.value(self.next_obs, self.state, self.episode_start)
        advantages, returns = compute_gae(
            storage.rewards, storage.values, storage.dones, next_value, self.gamma, self.gae_lambda
        )
        return advantages, returns, episodes.stats()

    def _bootstrap_all(
        self,
        reward: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        info: dict,
    ) -> torch.Tensor:
        """A tensor env's rewards, bootstrapped where a time limit cut the episode.

        The env says on the host whether any episode ended (``final_obs`` is in
        ``info``); which were cut stays on the device, so every row is valued and
        ``torch.where`` keeps the cut ones, rather than a copy deciding per step.
        """
        reward = reward.to(self.device, torch.float32)
        if "final_obs" not in info:
            return reward
        cut = (truncated & ~terminated).to(self.device)
        final_obs = self._tensor(self.normalizer(info["final_obs"], update=False))
        no_reset = torch.zeros_like(cut)
        final_values = self.policy.value(final_obs, self.state, no_reset)
        return bootstrap_truncated(reward, cut, final_values, self.gamma)

    def _bootstrap(
        self, reward: torch.Tensor, terminated: np.ndarray, truncated: np.ndarray, info: dict
    ) -> torch.Tensor:
        """Add ``gamma * V(final obs)`` to the rewards of episodes cut by a time limit.

        A recurrent policy values the final observation from the state its last step
        returned, continuing the episode's memory.
        """
        cut = truncated & ~terminated
        if not cut.any():
            return reward
        final_obs = self._tensor(self.normalizer(np.stack(info["final_obs"][cut]), update=False))
        cut_t = torch.as_tensor(cut, device=self.device)
        no_reset = torch.zeros(int(cut.sum()), dtype=torch.bool, device=self.device)
        final_values = torch.zeros_like(reward)
        final_values[cut_t] = self.policy.value(final_obs, self.state.columns(cut_t), no_reset)
        return bootstrap_truncated(reward, cut_t, final_values, self.gamma)

    def _rollout(
        self, advantages: torch.Tensor, returns: torch.Tensor, first_starts: torch.Tensor
    ) -> Rollout:
        s = self.storage

        def copy(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.clone()

        return Rollout(
            obs=s.obs.clone(),
            actions=s.actions.clone(),
            logp=s.logp.clone(),
            values=s.values.clone(),
            advantages=advantages.clone(),
            returns=returns.clone(),
            dones=s.dones.clone(),
            action_masks=copy(s.action_masks),
            states_h=s.states_h.clone(),
            states_c=copy(s.states_c),
            first_starts=first_starts,
        )


@torch.inference_mode()
def evaluate(
    envs: VectorEnv,
    policy: Policy,
    normalizer: Normalizer,
    deterministic: bool,
    device: torch.device,
    seed: int,
) -> np.ndarray:
    """Returns of one episode per eval env (``num_envs`` episodes in all), acting through
    the policy's rollout step (its mode when ``deterministic``).

    Counting only each env's first episode avoids the bias towards short episodes
    that comes from taking the first K episodes to finish across envs.
    """
    obs, info = envs.reset(seed=seed)
    tensors = isinstance(obs, torch.Tensor)
    num_envs = envs.num_envs
    act = policy.acting(deterministic)
    state = policy.initial_state(num_envs)
    episode_start = torch.ones(num_envs, dtype=torch.bool, device=device)
    returns = torch.zeros(num_envs, dtype=torch.float64, device=device)
    finished = torch.zeros(num_envs, dtype=torch.bool, device=device)
    # One flag read per step (whether all are done); a tensor env's rewards stay put.
    while not bool(finished.all()):
        obs_t = torch.as_tensor(normalizer(obs, update=False), dtype=torch.float32, device=device)
        action, _, _, state = act(obs_t, state, episode_start, _info_mask(info, device))
        obs, _, terminated, truncated, info = envs.step(_env_actions(action, tensors))
        episode_start = torch.as_tensor(terminated | truncated, device=device)
        if "episode" in info:
            ended = torch.as_tensor(info["_episode"], device=device) & ~finished
            episode_returns = torch.as_tensor(info["episode"]["r"], device=device)
            returns = torch.where(ended, episode_returns.double(), returns)
            finished |= ended
    return returns.cpu().numpy()
