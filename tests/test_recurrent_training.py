"""Recurrent PPO wired into the runner and trainer: state storage, resets, telemetry."""

import json

import numpy as np
import pytest
import torch
from recurrent_reference import chunk_batch

from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.assembly import action_spec
from esper.simic.envs.factory import make_vector_env
from esper.simic.envs.normalization import IdentityNormalizer
from esper.simic.rollout import RolloutRunner, evaluate
from esper.simic.settings import EnvConfig, NetworkConfig, RNNConfig, RNNType
from esper.simic.testing import run_training


def make_runner(rnn_type: RNNType, num_steps: int = 24) -> RolloutRunner:
    torch.manual_seed(0)
    envs = make_vector_env(
        EnvConfig(id="esper/CueRecall-v0", num_envs=3, kwargs={"delay": 2}), gamma=0.99
    )
    policy = RecurrentActorCritic(
        envs.single_observation_space.shape[0],
        action_spec(envs.single_action_space, {}),
        NetworkConfig(actor_hidden=[16]),
        RNNConfig(type=rnn_type, hidden_size=8),
    )
    return RolloutRunner(
        envs, policy, num_steps, 0.99, 0.95, IdentityNormalizer(), torch.device("cpu"), 0
    )


@pytest.mark.parametrize("rnn_type", [RNNType.lstm, RNNType.gru])
def test_rollout_stores_the_state_before_each_step_and_resets_at_episode_starts(rnn_type):
    runner = make_runner(rnn_type)
    rollout, _ = runner.collect()
    states = rollout.states_h  # [T, N, K, H]
    assert states.shape == (24, 3, 1, 8)
    assert rollout.first_starts.all()
    # CueRecall with delay 2 lasts 4 steps: episodes start at t = 0, 4, 8, ...; the state
    # stored there is the state carried over, and the policy resets it before use.
    assert torch.equal(rollout.dones[3::4], torch.ones(6, 3, dtype=torch.bool))
    # Replaying each episode from a zero state reproduces the stored log-probs.
    policy = runner.policy
    for start in range(0, 24, 4):
        obs = rollout.obs[start : start + 4]
        state = policy.initial_state(3)
        with torch.no_grad():
            dist, values, _, _ = policy(chunk_batch(obs, state, torch.ones(3, dtype=torch.bool)))
        torch.testing.assert_close(
            dist.log_prob(rollout.actions[start : start + 4]), rollout.logp[start : start + 4]
        )
        torch.testing.assert_close(values, rollout.values[start : start + 4])
    if rnn_type is RNNType.lstm:
        assert rollout.states_c is not None and rollout.states_c.shape == states.shape
    else:
        assert rollout.states_c is None


def test_state_carries_over_between_rollouts():
    runner = make_runner(RNNType.lstm, num_steps=6)  # episodes of 4 steps straddle rollouts
    runner.collect()
    second, _ = runner.collect()
    assert not second.first_starts.any()  # step 6 is mid-episode for every env
    assert second.states_h[0].abs().sum() > 0


def test_recurrent_eval_returns_one_episode_per_env():
    runner = make_runner(RNNType.lstm)
    envs = make_vector_env(
        EnvConfig(id="esper/CueRecall-v0", num_envs=5, kwargs={"delay": 2}), gamma=0.99
    )
    returns = evaluate(envs, runner.policy, IdentityNormalizer(), True, torch.device("cpu"), seed=3)
    assert returns.shape == (5,)
    assert set(np.unique(returns)) <= {0.0, 1.0}


def test_recurrent_run_logs_hidden_state_health_and_core_gradients(tiny, tmp_path):
    run_training([*tiny, "agent=recurrent_ppo", "env.id=esper/StatelessCartPole-v0"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    update = next(r for r in rows if "train/policy_loss" in r)
    for key in (
        "recurrent/hidden_norm",
        "recurrent/cell_norm",
        "recurrent/saturated_frac",
        "grad/recurrent_norm",
        "grad/actor_norm",
        "grad/critic_norm",
    ):
        assert key in update, key
    assert 0.0 <= update["recurrent/saturated_frac"] <= 1.0


def test_recurrent_runs_are_deterministic(tiny, tmp_path):
    overrides = [*tiny, "agent=recurrent_ppo", "agent.rnn.type=gru", "agent.burn_in=2"]
    run_training(overrides, tmp_path / "a")
    run_training(overrides, tmp_path / "b")
    read = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
        for line in (d / "metrics.jsonl").read_text().splitlines()
    ]
    assert read(tmp_path / "a") == read(tmp_path / "b")
