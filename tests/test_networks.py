"""Actor-critic construction, initialisation and invalid-action masking."""

import gymnasium as gym
import pytest
import torch
from scipy.stats import chisquare

from esper.simic.agents.factored import FactoredSpec
from esper.simic.agents.heads import ContinuousActions, DiscreteActions, sample_with_log_prob
from esper.simic.agents.layers import POLICY_GAIN, masked_logits, sample_categorical
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.policy import PolicyState
from esper.simic.assembly import UnsupportedSpaceError, action_spec
from esper.simic.settings import Activation, NetworkConfig
from esper.simic.testing import observation_batch


def act(policy, obs, mask=None, deterministic=False):
    """The policy's acting step on ``obs`` from the empty state: action, logp, value."""
    state = PolicyState.empty(len(obs), obs.device)
    starts = torch.ones(len(obs), dtype=torch.bool)
    action, logp, value, _ = policy.acting(deterministic)(obs, state, starts, mask)
    return action, logp, value


def test_masked_actions_are_never_sampled_and_carry_no_probability():
    torch.manual_seed(0)
    policy = ActorCritic(3, DiscreteActions(4), NetworkConfig())
    obs = torch.randn(512, 3)
    mask = torch.tensor([True, False, True, False]).expand(512, 4)
    dist = policy(observation_batch(obs, mask)).dist
    actions = dist.sample()
    assert set(actions.unique().tolist()) == {0, 2}
    assert torch.all(dist.probs[:, [1, 3]] == 0)
    entropy = dist.entropy()
    assert torch.isfinite(entropy).all()
    assert torch.all(entropy <= torch.log(torch.tensor(2.0)) + 1e-6)


def test_masked_log_prob_renormalises_over_legal_actions():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, False, True]])
    dist = torch.distributions.Categorical(logits=masked_logits(logits, mask))
    expected = torch.log_softmax(torch.tensor([1.0, 3.0]), dim=0)
    torch.testing.assert_close(dist.log_prob(torch.tensor([0])), expected[:1])
    torch.testing.assert_close(dist.log_prob(torch.tensor([2])), expected[1:])
    assert dist.mode.item() == 2


def test_sample_categorical_draws_what_torch_multinomial_draws():
    # Same generator state in, same actions out: it is multinomial's one-sample algorithm.
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        probs = torch.softmax(3 * torch.randn(64, 5, generator=generator), -1)
        torch.manual_seed(seed)
        expected = torch.multinomial(probs, 1, replacement=True).squeeze(-1)
        torch.manual_seed(seed)
        assert torch.equal(sample_categorical(probs), expected)


def test_act_samples_the_policy_distribution_exactly():
    # Chi-square goodness of fit of 200k draws per row against the head's softmax, fixed seed.
    torch.manual_seed(0)
    policy = ActorCritic(3, DiscreteActions(5), NetworkConfig(ortho_init=False))
    obs = torch.randn(2, 3).repeat_interleave(100_000, 0)
    mask = torch.tensor([True, True, False, True, True]).expand(len(obs), 5)
    with torch.no_grad():
        dist, values, _, _ = policy(observation_batch(obs, mask))
        actions, logp, act_values = act(policy, obs, mask)
    torch.testing.assert_close(logp, dist.log_prob(actions))
    torch.testing.assert_close(act_values, values)
    for row in (slice(0, 100_000), slice(100_000, None)):
        counts = torch.bincount(actions[row], minlength=5)
        assert counts[2] == 0  # masked
        legal = [0, 1, 3, 4]
        probs = dist.probs[row][0, legal].double()
        expected = probs / probs.sum() * 100_000
        assert chisquare(counts[legal].double(), expected).pvalue > 1e-3


@pytest.mark.parametrize(
    ("space", "config"),
    [
        (DiscreteActions(3), NetworkConfig(shared_trunk=True, activation=Activation.relu)),
        (DiscreteActions(3), NetworkConfig(activation=Activation.gelu)),
        (ContinuousActions(2), NetworkConfig(activation=Activation.silu)),
        (FactoredSpec.independent([3, 2]), NetworkConfig()),
    ],
    ids=["shared-relu", "gelu", "gaussian-silu", "factored"],
)
def test_acting_pass_computes_what_the_modules_compute(space, config):
    torch.manual_seed(0)
    policy = ActorCritic(3, space, config)
    obs = torch.randn(16, 3)
    with torch.no_grad():
        dist, values, _, _ = policy(observation_batch(obs))
        actions, logp, act_values = act(policy, obs)
        modes, mode_logp, _ = act(policy, obs, deterministic=True)
    torch.testing.assert_close(act_values, values)
    torch.testing.assert_close(logp, dist.log_prob(actions))
    torch.testing.assert_close(modes, dist.mode)
    torch.testing.assert_close(mode_logp, dist.log_prob(dist.mode))


def test_sample_with_log_prob_matches_the_distribution_for_every_head():
    torch.manual_seed(0)
    logits = torch.randn(1000, 3)
    categorical = torch.distributions.Categorical(logits=logits)
    actions, logp = sample_with_log_prob(categorical)
    torch.testing.assert_close(logp, categorical.log_prob(actions))
    normal = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    sample, logp = sample_with_log_prob(normal)
    torch.testing.assert_close(logp, normal.log_prob(sample))
    mode, logp = sample_with_log_prob(categorical, deterministic=True)
    torch.testing.assert_close(mode, logits.argmax(-1))
    torch.testing.assert_close(logp, categorical.log_prob(mode))


def test_greedy_action_respects_the_mask():
    logits = torch.tensor([[5.0, 1.0]])
    dist = torch.distributions.Categorical(
        logits=masked_logits(logits, torch.tensor([[False, True]]))
    )
    assert dist.mode.item() == 1


def test_gaussian_policy_for_box_actions_with_state_independent_std():
    policy = ActorCritic(5, ContinuousActions(3), NetworkConfig(log_std_init=-0.5))
    dist, value, _, _ = policy(observation_batch(torch.randn(7, 5)))
    assert dist.sample().shape == (7, 3)
    assert dist.log_prob(torch.zeros(7, 3)).shape == (7,)
    assert value.shape == (7,)
    torch.testing.assert_close(dist.stddev, torch.full((7, 3), torch.tensor(-0.5).exp().item()))
    with pytest.raises(ValueError, match="Discrete"):
        policy(observation_batch(torch.randn(1, 5), torch.ones(1, 3, dtype=torch.bool)))


def test_orthogonal_init_gains():
    torch.manual_seed(0)
    policy = ActorCritic(
        8, DiscreteActions(6), NetworkConfig(actor_hidden=[64], critic_hidden=[64])
    )
    w = policy.action_head.logits.weight  # [6, 64]: orthonormal rows scaled by the gain
    torch.testing.assert_close(w @ w.T, POLICY_GAIN**2 * torch.eye(6), atol=1e-6, rtol=1e-4)
    assert torch.all(policy.action_head.logits.bias == 0)


def test_shared_trunk_feeds_both_heads_and_groups_parameters():
    separate = ActorCritic(4, DiscreteActions(2), NetworkConfig())
    shared = ActorCritic(4, DiscreteActions(2), NetworkConfig(shared_trunk=True))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(shared) < count(separate)
    for model in (separate, shared):
        groups = model.parameter_groups()
        grouped = [p for ps in groups.values() for p in ps]
        assert len(grouped) == len(list(model.parameters()))
        assert {id(p) for p in grouped} == {id(p) for p in model.parameters()}


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (gym.spaces.Discrete(4), DiscreteActions(4)),
        (gym.spaces.Box(-1.0, 1.0, shape=(3,)), ContinuousActions(3)),
    ],
)
def test_action_spec_of_a_gymnasium_space(space, expected):
    assert action_spec(space, {}) == expected


def test_unsupported_action_space_is_a_clear_error():
    with pytest.raises(UnsupportedSpaceError, match="action space Tuple"):
        action_spec(gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))), {})
