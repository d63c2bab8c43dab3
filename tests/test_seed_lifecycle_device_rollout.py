"""The rollout on a tensor env (``env.vectorization=batched``): observations, masks and
rewards stay on the env's device, and the numbers are those of the NumPy path."""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers import vector as vector_wrappers

from esper.simic.agents.networks import ActorCritic
from esper.simic.assembly import action_spec, build_policy, observation_layout
from esper.simic.envs.factory import make_vector_env, structured_observation_space
from esper.simic.envs.normalization import IdentityNormalizer
from esper.simic.envs.seed_lifecycle.vector import SeedLifecycleVectorEnv
from esper.simic.envs.tensor_wrappers import TensorEpisodeStatistics, TensorNormalizeReward
from esper.simic.rollout import RolloutRunner, evaluate
from esper.simic.settings import NetworkConfig
from esper.simic.testing import compose_settings
from esper.simic.train import restore_reward_normalizer, reward_normalizer_state

GAMMA = 0.99
CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
)
# Five-epoch episodes and 7-step rollouts: the second rollout crosses an episode end.
TINY_REAL_HOST = [
    "+experiment=seed_lifecycle_mlp_rppo",
    "env.num_envs=3",
    "++env.kwargs.max_epochs=5",
    "agent.num_steps=7",
]


def numpy_batched_env(settings: Any) -> VectorEnv:
    """The batched env speaking NumPy under gymnasium's own wrappers: the rollout's path
    before tensor envs, the reference for the tensor path's numbers."""
    env = settings.env
    envs = SeedLifecycleVectorEnv(env.num_envs, **env.kwargs)
    envs = vector_wrappers.RecordEpisodeStatistics(envs)
    envs = vector_wrappers.NormalizeReward(envs, gamma=GAMMA)
    return vector_wrappers.ClipReward(envs, -env.clip_reward, env.clip_reward)


def real_host_runner(envs: VectorEnv, settings: Any, device: str) -> RolloutRunner:
    torch.manual_seed(0)
    layout = observation_layout(structured_observation_space(envs))
    actions = action_spec(envs.single_action_space, envs.metadata)
    policy = build_policy(settings.agent, layout, actions).to(device)
    agent = settings.agent
    return RolloutRunner(
        envs, policy, agent.num_steps, GAMMA, 0.95, IdentityNormalizer(), torch.device(device), 3
    )


def two_rollouts(runner: RolloutRunner) -> list[dict[str, Any]]:
    torch.manual_seed(1)  # the policy's samples
    out = []
    for _ in range(2):
        rollout, episodes = runner.collect()
        out.append(
            {
                **rollout._asdict(),
                "rewards": runner.storage.rewards.clone(),
                "episode_returns": episodes.returns,
                "episode_lengths": episodes.lengths,
            }
        )
    return out


def test_tensor_env_rollout_equals_the_numpy_rollout(one_thread):
    settings, _ = compose_settings(TINY_REAL_HOST)
    tensor_envs = make_vector_env(settings.env, gamma=GAMMA)
    assert isinstance(tensor_envs.reset(seed=0)[0], torch.Tensor)
    expected = two_rollouts(real_host_runner(numpy_batched_env(settings), settings, "cpu"))
    actual = two_rollouts(real_host_runner(tensor_envs, settings, "cpu"))
    for want, got in zip(expected, actual, strict=True):
        for key in ("obs", "actions", "logp", "values", "rewards", "advantages", "returns"):
            torch.testing.assert_close(got[key], want[key], msg=key)
        for key in ("dones", "action_masks", "states_h", "first_starts"):
            assert torch.equal(got[key], want[key]), key
        assert got["episode_lengths"] == want["episode_lengths"]
        np.testing.assert_allclose(got["episode_returns"], want["episode_returns"], rtol=1e-6)
    # The second rollout crossed an episode end, where reward normalisation restarts.
    assert actual[1]["dones"].any() and actual[1]["episode_lengths"] == [5, 5, 5]


class _Spy(VectorWrapper):
    """Records the type of every action the env receives and of what it returns."""

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        self.seen: set[str] = set()

    def step(self, actions: Any) -> Any:
        self.seen.add(f"action {type(actions).__name__}")
        obs, reward, terminated, truncated, info = self.env.step(actions)
        for name, value in [
            ("obs", obs),
            ("reward", reward),
            ("terminated", terminated),
            ("truncated", truncated),
            ("mask", info["action_mask"]),
        ]:
            self.seen.add(f"{name} {type(value).__name__}")
        return obs, reward, terminated, truncated, info


def test_the_batched_env_steps_in_tensors_under_the_rollout(one_thread):
    settings, _ = compose_settings(TINY_REAL_HOST)
    base = SeedLifecycleVectorEnv(settings.env.num_envs, tensors=True, **settings.env.kwargs)
    spy = _Spy(base)
    cpu = torch.device("cpu")
    envs = TensorNormalizeReward(TensorEpisodeStatistics(spy, cpu), GAMMA, 10.0, cpu)
    real_host_runner(envs, settings, "cpu").collect()
    assert spy.seen == {
        f"{name} Tensor" for name in ("action", "obs", "reward", "terminated", "truncated", "mask")
    }


class CountdownEnv(VectorEnv):
    """A tensor env of pure device ops: episodes of 5 steps, reward = action, with time
    limits (truncation) on odd envs. Nothing in it reads a value back to the host."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.num_envs, self.device = num_envs, device
        self.single_observation_space = gym.spaces.Box(-10.0, 10.0, (2,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(
            self.single_observation_space, num_envs
        )
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.odd = torch.arange(num_envs, device=device) % 2 == 1
        self.t = 0

    def _obs(self) -> torch.Tensor:
        clock = torch.full((self.num_envs,), float(self.t % 5), device=self.device)
        return torch.stack([clock, self.odd.float()], dim=1)

    def _mask(self) -> torch.Tensor:
        return torch.ones(self.num_envs, 2, dtype=torch.bool, device=self.device)

    def reset(self, **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        self.t = 0
        return self._obs(), {"action_mask": self._mask()}

    def step(self, actions: torch.Tensor) -> Any:
        assert isinstance(actions, torch.Tensor)
        self.t += 1
        reward = actions.to(self.device, torch.float64)
        ended = torch.full((self.num_envs,), self.t % 5 == 0, device=self.device)
        info: dict[str, Any] = {"action_mask": self._mask()}
        if self.t % 5 == 0:
            info["final_obs"] = self._obs() + 1.0
            info["_final_obs"] = np.ones(self.num_envs, dtype=bool)
        return self._obs(), reward, ended & ~self.odd, ended & self.odd, info


class _HostReads:
    """Counts every way a tensor's values reach Python or NumPy."""

    NAMES = ("cpu", "numpy", "tolist", "item", "__bool__", "__int__", "__float__", "__array__")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(original))

    def _counting(self, original: Any) -> Any:
        def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(tensor, *args, **kwargs)

        return wrapper


def countdown_runner(num_steps: int, device: torch.device) -> RolloutRunner:
    torch.manual_seed(0)
    envs = TensorNormalizeReward(
        TensorEpisodeStatistics(CountdownEnv(4, device), device), GAMMA, 10.0, device
    )
    policy = ActorCritic(2, action_spec(envs.single_action_space, {}), NetworkConfig()).to(device)
    return RolloutRunner(envs, policy, num_steps, GAMMA, 0.95, IdentityNormalizer(), device, 0)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_a_tensor_env_rollout_reads_the_host_per_rollout_not_per_step(monkeypatch, device):
    device = torch.device(device)
    reads = []
    for num_steps in (5, 20):
        runner = countdown_runner(num_steps, device)
        counter = _HostReads(monkeypatch)
        rollout, episodes = runner.collect()
        reads.append(counter.count)
        monkeypatch.undo()
        assert rollout.obs.device.type == device.type
        assert len(episodes.returns) == 4 * (num_steps // 5)
    # Four times the steps, the same reads: a constant per rollout (the log-probability
    # check and the episode statistics), none per step.
    assert reads[0] == reads[1] <= 3


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_tensor_env_truncations_bootstrap_and_episodes_are_counted(device):
    device = torch.device(device)
    runner = countdown_runner(10, device)
    rollout, episodes = runner.collect()
    rewards, actions = runner.storage.rewards, rollout.actions.float()
    ends = torch.zeros(10, dtype=torch.bool, device=device)
    ends[[4, 9]] = True
    odd = torch.arange(4, device=device) % 2 == 1
    cut = ends[:, None] & odd[None, :]
    assert torch.equal(rollout.dones, ends[:, None].expand(10, 4))
    # Normalised rewards are the actions scaled by one positive factor per step: zero
    # where the action was 0 unless the time limit added gamma * V(final obs).
    assert ((rewards == 0) == ((actions == 0) & ~cut)).all()
    assert sorted(episodes.lengths) == [5] * 8


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_evaluation_on_a_tensor_env_returns_each_envs_first_episode(device):
    device = torch.device(device)
    runner = countdown_runner(5, device)
    envs = TensorEpisodeStatistics(CountdownEnv(4, device), device)
    returns = evaluate(envs, runner.policy, IdentityNormalizer(), True, device, seed=0)
    assert returns.shape == (4,) and ((returns >= 0) & (returns <= 5)).all()
    # Deterministic actions on identical observations: the env pairs (0, 2), (1, 3) agree.
    assert returns[0] == returns[2] and returns[1] == returns[3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_real_host_rollout_stays_on_cuda(one_thread):
    settings, _ = compose_settings(TINY_REAL_HOST)
    envs = make_vector_env(settings.env, gamma=GAMMA, device="cuda")
    runner = real_host_runner(envs, settings, "cuda")
    rollout, episodes = runner.collect()
    rollout, episodes = runner.collect()
    assert runner.next_obs.device.type == "cuda" and rollout.action_masks.device.type == "cuda"
    assert runner.storage.rewards.device.type == "cuda"
    assert episodes.lengths == [5, 5, 5]


def test_a_tensor_envs_reward_statistics_checkpoint_as_gymnasiums():
    runner = countdown_runner(10, torch.device("cpu"))
    runner.collect()
    state = reward_normalizer_state(runner.envs)
    assert state["return_rms"]["count"] > 10  # 1e-4 + ten steps' updates
    fresh = countdown_runner(10, torch.device("cpu"))
    restore_reward_normalizer(fresh.envs, state)
    assert reward_normalizer_state(fresh.envs) == state
