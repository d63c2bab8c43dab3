"""Feed-forward rollout collection: what the storage holds (an empty state for a
feed-forward policy), and a broken policy's error."""

import pytest
import torch

from esper.simic.agents.networks import ActorCritic
from esper.simic.assembly import action_spec
from esper.simic.envs.factory import make_vector_env
from esper.simic.envs.normalization import IdentityNormalizer
from esper.simic.rollout import RolloutRunner
from esper.simic.settings import EnvConfig, NetworkConfig
from esper.simic.testing import observation_batch


def make_runner(num_steps: int = 40) -> RolloutRunner:
    torch.manual_seed(0)
    # Episodes cut at 10 steps, so the rollout crosses time limits.
    envs = make_vector_env(
        EnvConfig(id="CartPole-v1", num_envs=3, max_episode_steps=10), gamma=0.99
    )
    policy = ActorCritic(4, action_spec(envs.single_action_space, {}), NetworkConfig())
    return RolloutRunner(
        envs, policy, num_steps, 0.99, 0.95, IdentityNormalizer(), torch.device("cpu"), 0
    )


def test_rollout_stores_the_policy_outputs_at_the_stored_observations():
    runner = make_runner()
    rollout, episodes = runner.collect()
    obs = rollout.obs.reshape(-1, 4)
    with torch.no_grad():
        dist, values, _, _ = runner.policy(observation_batch(obs))
    actions = rollout.actions.reshape(-1)
    torch.testing.assert_close(rollout.logp.reshape(-1), dist.log_prob(actions))
    torch.testing.assert_close(rollout.values.reshape(-1), values)
    # Every episode ends within 10 steps, so each env finished at least 3 in 40 steps.
    assert rollout.dones.sum(0).min() >= 3
    assert len(episodes.returns) == int(rollout.dones.sum())
    assert rollout.first_starts.all()
    assert rollout.states_h.shape == (40, 3, 0, 0) and rollout.states_c is None
    # The next rollout starts where this one stopped.
    second, _ = runner.collect()
    assert torch.equal(second.first_starts, rollout.dones[-1])


def test_truncated_steps_bootstrap_their_final_value():
    runner = make_runner()
    rollout, _ = runner.collect()
    # CartPole pays 1 per step; a truncated step adds gamma * V(final obs), so only steps
    # that ended an episode carry another reward, and the time limit cut some of them.
    rewards = runner.storage.rewards
    assert (rewards != 1.0).any()
    assert ((rewards != 1.0) <= rollout.dones).all()


def test_non_finite_policy_output_is_an_error():
    runner = make_runner()
    with torch.no_grad():
        runner.policy.action_head.logits.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite action log-probability at rollout step 0"):
        runner.collect()
