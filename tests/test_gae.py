"""GAE and time-limit bootstrapping against answers computed by hand."""

import pytest
import torch

from esper.simic.agents.advantages import bootstrap_truncated, compute_gae


def reference_gae(rewards, values, dones, next_value, gamma, lam):
    """The textbook recursion written out on Python floats, one env."""
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        following = next_value if t == len(rewards) - 1 else values[t + 1]
        not_done = 0.0 if dones[t] else 1.0
        delta = rewards[t] + gamma * following * not_done - values[t]
        running = delta + gamma * lam * not_done * running
        advantages[t] = running
    return advantages


def test_constant_value_policy_final_reward_by_hand():
    # V = 1 everywhere, one episode of 3 steps with reward only at the end (terminated).
    # gamma = 0.5, lambda = 1: A_t = discounted return - V.
    rewards = torch.tensor([[0.0], [0.0], [1.0]])
    values = torch.ones(3, 1)
    dones = torch.tensor([[False], [False], [True]])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([5.0]), gamma=0.5, gae_lambda=1.0)
    # returns: 0.25, 0.5, 1.0 (the next value 5 lies past the terminal state: ignored)
    assert ret[:, 0].tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert adv[:, 0].tolist() == pytest.approx([-0.75, -0.5, 0.0])


def test_lambda_zero_is_one_step_td():
    rewards = torch.tensor([[1.0], [2.0]])
    values = torch.tensor([[0.5], [0.25]])
    dones = torch.zeros(2, 1, dtype=torch.bool)
    adv, _ = compute_gae(rewards, values, dones, torch.tensor([4.0]), gamma=0.9, gae_lambda=0.0)
    assert adv[:, 0].tolist() == pytest.approx([1.0 + 0.9 * 0.25 - 0.5, 2.0 + 0.9 * 4.0 - 0.25])


def test_truncated_episode_bootstraps_from_final_observation_value():
    # Env 0: episode truncated at t=1 (time limit) with V(final obs) = 10, then a new
    # episode starts at t=2. Env 1: terminated at t=1 (no bootstrap).
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    values = torch.tensor([[2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    truncated = torch.tensor([[False, False], [True, False], [False, False]])
    terminated = torch.tensor([[False, False], [False, True], [False, False]])
    final_values = torch.tensor([[0.0, 0.0], [10.0, 99.0], [0.0, 0.0]])
    next_value = torch.tensor([5.0, 5.0])

    boot = bootstrap_truncated(rewards, truncated, final_values, gamma)
    torch.testing.assert_close(boot, torch.tensor([[1.0, 1.0], [1.0 + 9.0, 1.0], [1.0, 1.0]]))

    dones = truncated | terminated
    adv, ret = compute_gae(boot, values, dones, next_value, gamma, lam)
    # Env 0 by hand: t=2: 1 + .9*5 - 4 = 1.5; t=1: 10 - 3 = 7 (episode ended);
    # t=0: delta = 1 + .9*3 - 2 = 1.7, A = 1.7 + .72*7 = 6.74.
    assert adv[:, 0].tolist() == pytest.approx([6.74, 7.0, 1.5])
    # Env 1, terminated: t=1: 1 - 3 = -2; t=0: 1.7 + .72*(-2) = 0.26.
    assert adv[:, 1].tolist() == pytest.approx([0.26, -2.0, 1.5])
    assert torch.allclose(ret, adv + values)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99, 1.0])
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_matches_reference_recursion_on_random_rollouts(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(16, 3, generator=generator)
    values = torch.randn(16, 3, generator=generator)
    dones = torch.rand(16, 3, generator=generator) < 0.2
    next_value = torch.randn(3, generator=generator)
    adv, _ = compute_gae(rewards, values, dones, next_value, gamma, lam)
    for env in range(3):
        expected = reference_gae(
            rewards[:, env].tolist(),
            values[:, env].tolist(),
            dones[:, env].tolist(),
            float(next_value[env]),
            gamma,
            lam,
        )
        assert adv[:, env].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
