"""Tests for the memory environments: StatelessCartPole is CartPole minus velocities, and
CueRecall's returns are exactly those its docstring promises."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from esper.simic.envs.memory import CueRecallEnv
from esper.simic.envs.registration import register_esper_envs

CARTPOLE_ID = "esper/StatelessCartPole-v0"
CUE_RECALL_ID = "esper/CueRecall-v0"


@pytest.fixture(autouse=True)
def _registered() -> None:
    register_esper_envs()


def make_stateless_cartpole() -> gym.Env:
    # registration.py sets no time limit yet; CartPole-v1's is 500 steps.
    return gym.make(CARTPOLE_ID, max_episode_steps=500)


def balancing_action(full_obs: np.ndarray) -> int:
    """A linear controller on CartPole's full state that balances for 500 steps."""
    x, x_dot, theta, theta_dot = full_obs
    return int(theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0)


def run_cue_recall(env: gym.Env, policy, seed: int, options: dict | None = None):
    """Play one episode; return (observations acted on, rewards, terminated flags)."""
    obs, _ = env.reset(seed=seed, options=options)
    observations, rewards, terminations = [obs], [], []
    while True:
        action = policy(observations)
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        terminations.append(terminated)
        assert not truncated
        if terminated:
            return observations, rewards, terminations
        observations.append(obs)


def constant_policy(action: int):
    """Always take ``action``: a memoryless policy."""
    return lambda _: action


def perfect_memory_policy(num_cues: int):
    """Answer, at the query, with the cue shown in the first observation; act 0 before."""

    def policy(observations: list[np.ndarray]) -> int:
        if observations[-1][-1] == 1.0:
            return int(np.argmax(observations[0][:num_cues]))
        return 0

    return policy


# --- StatelessCartPole ----------------------------------------------------------------------


def test_stateless_cartpole_passes_env_checker() -> None:
    # Render check skipped: it opens a "human" window and needs pygame (tested below).
    check_env(make_stateless_cartpole().unwrapped, skip_render_check=True)


def test_stateless_cartpole_observation_space_is_cartpole_positions() -> None:
    env = make_stateless_cartpole()
    full = gym.make("CartPole-v1").observation_space
    assert env.observation_space.shape == (2,)
    assert env.observation_space.dtype == np.float32
    np.testing.assert_array_equal(env.observation_space.low, full.low[[0, 2]])
    np.testing.assert_array_equal(env.observation_space.high, full.high[[0, 2]])
    # x threshold 2.4 and 12 degrees, both doubled so a failing state is still in bounds.
    np.testing.assert_allclose(env.observation_space.high, [4.8, 2 * 12 * 2 * np.pi / 360])
    assert env.action_space == gym.spaces.Discrete(2)


@pytest.mark.parametrize("seed", [0, 1, 7, 123])
def test_stateless_cartpole_matches_cartpole_under_random_actions(seed: int) -> None:
    ours, reference = make_stateless_cartpole(), gym.make("CartPole-v1")
    obs, _ = ours.reset(seed=seed)
    full, _ = reference.reset(seed=seed)
    np.testing.assert_array_equal(obs, full[[0, 2]])
    rng = np.random.default_rng(seed)
    for _ in range(500):
        action = int(rng.integers(2))
        obs, reward, terminated, truncated, _ = ours.step(action)
        full, ref_reward, ref_terminated, ref_truncated, _ = reference.step(action)
        np.testing.assert_array_equal(obs, full[[0, 2]])
        assert (reward, terminated, truncated) == (ref_reward, ref_terminated, ref_truncated)
        if terminated or truncated:
            break
    assert terminated, "random actions should drop the pole well within 500 steps"


def test_stateless_cartpole_truncates_at_500_like_cartpole() -> None:
    ours, reference = make_stateless_cartpole(), gym.make("CartPole-v1")
    ours.reset(seed=3)
    full, _ = reference.reset(seed=3)
    total = 0.0
    for step in range(1, 501):
        action = balancing_action(full)
        obs, reward, terminated, truncated, _ = ours.step(action)
        full, _, ref_terminated, ref_truncated, _ = reference.step(action)
        np.testing.assert_array_equal(obs, full[[0, 2]])
        total += reward
        assert (terminated, truncated) == (ref_terminated, ref_truncated) == (False, step == 500)
    assert total == 500.0


def test_stateless_cartpole_is_deterministic_under_a_seed() -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        env = make_stateless_cartpole()
        obs, _ = env.reset(seed=seed)
        trajectory = [obs]
        for action in [0, 1, 1, 0, 1, 0, 0, 1]:
            trajectory.append(env.step(action)[0])
        return trajectory

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


# --- CueRecall ------------------------------------------------------------------------------


def test_cue_recall_passes_env_checker() -> None:
    check_env(gym.make(CUE_RECALL_ID).unwrapped)
    check_env(gym.make(CUE_RECALL_ID, num_cues=2, delay=1, num_distractors=1).unwrapped)


def test_cue_recall_defaults_and_spaces() -> None:
    env = gym.make(CUE_RECALL_ID).unwrapped
    assert isinstance(env, CueRecallEnv)
    assert (env.num_cues, env.delay, env.num_distractors) == (4, 8, 4)
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, shape=(9,), dtype=np.float32)
    assert (env.optimal_return, env.memoryless_return, env.episode_length) == (1.0, 0.25, 10)


@pytest.mark.parametrize(
    ("num_cues", "delay", "num_distractors"), [(2, 1, 1), (3, 5, 2), (4, 8, 4)]
)
def test_cue_recall_episode_layout(num_cues: int, delay: int, num_distractors: int) -> None:
    env = CueRecallEnv(num_cues=num_cues, delay=delay, num_distractors=num_distractors)
    for seed in range(20):
        observations, rewards, terminations = run_cue_recall(
            env, perfect_memory_policy(num_cues), seed
        )
        assert len(rewards) == delay + 2 == env.episode_length
        assert terminations == [False] * (delay + 1) + [True]
        assert rewards[:-1] == [0.0] * (delay + 1)
        cue_part = np.array([o[:num_cues] for o in observations])
        distractor_part = np.array([o[num_cues:-1] for o in observations])
        query_flag = np.array([o[-1] for o in observations])
        # Cue: one-hot at step 0 only. Distractor: one-hot at steps 1..delay only.
        assert cue_part.sum(axis=1).tolist() == [1.0] + [0.0] * (delay + 1)
        assert distractor_part.sum(axis=1).tolist() == [0.0] + [1.0] * delay + [0.0]
        assert query_flag.tolist() == [0.0] * (delay + 1) + [1.0]


@pytest.mark.parametrize(("num_cues", "delay"), [(2, 1), (3, 4), (4, 8), (6, 20)])
def test_cue_recall_perfect_memory_gets_exactly_optimal_return(num_cues: int, delay: int) -> None:
    env = CueRecallEnv(num_cues=num_cues, delay=delay)
    rng = np.random.default_rng(0)
    policy = perfect_memory_policy(num_cues)

    def noisy_during_delay(observations: list[np.ndarray]) -> int:
        # Actions before the query are ignored, so random ones must not cost anything.
        if observations[-1][-1] == 1.0:
            return policy(observations)
        return int(rng.integers(num_cues))

    for seed in range(200):
        _, rewards, _ = run_cue_recall(env, noisy_during_delay, seed)
        assert sum(rewards) == env.optimal_return == 1.0


def test_cue_recall_wrong_answer_earns_zero() -> None:
    env = CueRecallEnv(num_cues=3, delay=2)
    for cue in range(3):
        _, rewards, _ = run_cue_recall(
            env, constant_policy((cue + 1) % 3), seed=0, options={"cue": cue}
        )
        assert sum(rewards) == 0.0


@pytest.mark.parametrize("num_cues", [2, 3, 4])
def test_cue_recall_constant_action_gets_memoryless_return(num_cues: int) -> None:
    env = CueRecallEnv(num_cues=num_cues, delay=3)
    # Exactly: over every cue, a constant answer is right for one cue in num_cues.
    for action in range(num_cues):
        returns = [
            sum(run_cue_recall(env, constant_policy(action), seed=cue, options={"cue": cue})[1])
            for cue in range(num_cues)
        ]
        assert np.mean(returns) == env.memoryless_return == 1.0 / num_cues
    # Statistically, with cues drawn by the env: 4000 episodes, 5 binomial standard errors.
    returns = [sum(run_cue_recall(env, constant_policy(0), seed)[1]) for seed in range(4000)]
    p = 1.0 / num_cues
    assert abs(np.mean(returns) - p) < 5 * np.sqrt(p * (1 - p) / 4000)


def test_cue_recall_only_the_first_observation_depends_on_the_cue() -> None:
    num_cues, delay = 4, 6
    env = CueRecallEnv(num_cues=num_cues, delay=delay, num_distractors=3)
    for seed in range(50):
        episodes = [
            run_cue_recall(env, constant_policy(0), seed, options={"cue": cue})[0]
            for cue in range(num_cues)
        ]
        # Same seed, different cue: every observation after the cue step is bit-identical,
        # distractors and the query alike, so no memoryless policy can beat a guess.
        for later in episodes[1:]:
            np.testing.assert_array_equal(np.array(later[1:]), np.array(episodes[0][1:]))
        # Drawing the cue (rather than fixing it) leaves the distractors unchanged.
        drawn = run_cue_recall(env, constant_policy(0), seed)[0]
        np.testing.assert_array_equal(np.array(drawn[1:]), np.array(episodes[0][1:]))


def test_cue_recall_distractors_vary() -> None:
    env = CueRecallEnv(num_cues=2, delay=8, num_distractors=4)
    seen = {
        tuple(np.argmax(o[2:-1]) for o in run_cue_recall(env, constant_policy(0), seed)[0][1:-1])
        for seed in range(20)
    }
    assert len(seen) > 1
    assert {slot for episode in seen for slot in episode} == {0, 1, 2, 3}


def test_cue_recall_is_deterministic_under_a_seed() -> None:
    env_a, env_b = gym.make(CUE_RECALL_ID), gym.make(CUE_RECALL_ID)
    for seed in range(10):
        obs_a = run_cue_recall(env_a, constant_policy(1), seed)[0]
        obs_b = run_cue_recall(env_b, constant_policy(1), seed)[0]
        np.testing.assert_array_equal(np.array(obs_a), np.array(obs_b))
    cues = {int(np.argmax(run_cue_recall(env_a, constant_policy(1), s)[0][0])) for s in range(40)}
    assert cues == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_cues": 1}, "num_cues must be at least 2"),
        ({"delay": 0}, "delay must be at least 1"),
        ({"num_distractors": 0}, "num_distractors must be at least 1"),
    ],
)
def test_cue_recall_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CueRecallEnv(**kwargs)


def test_cue_recall_rejects_misuse() -> None:
    env = CueRecallEnv(num_cues=2, delay=1)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    with pytest.raises(ValueError, match=r"options\['cue'\]"):
        env.reset(options={"cue": 2})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be in"):
        env.step(2)
    for _ in range(3):
        terminated = env.step(0)[2]
    assert terminated
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
