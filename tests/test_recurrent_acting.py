"""The rollout's recurrent step (``RecurrentActingPass``) against the policy's own modules."""

import pytest
import torch
from recurrent_reference import reference_step

from esper.simic.agents.heads import ActionSpec, ContinuousActions, DiscreteActions
from esper.simic.agents.policy import PolicyState
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.agents.recurrent_acting import RecurrentActingPass
from esper.simic.settings import NetworkConfig, RNNConfig, RNNType

OBS_DIM, NUM_ENVS = 3, 6
NETWORK = NetworkConfig(actor_hidden=[16], critic_hidden=[8], ortho_init=False)
POLICIES = [
    pytest.param(rnn_type, shared, layers, learned, id=f"{rnn_type.value}-{name}-{layers}")
    for rnn_type in RNNType
    for shared, learned, name in ((True, False, "shared"), (False, True, "separate-learned"))
    for layers in (1, 2)
]


def make_policy(
    rnn_type: RNNType, shared_core: bool, num_layers: int, learned: bool, space: ActionSpec
) -> RecurrentActorCritic:
    torch.manual_seed(0)
    rnn = RNNConfig(
        type=rnn_type,
        hidden_size=8,
        num_layers=num_layers,
        shared_core=shared_core,
        learned_initial_state=learned,
    )
    policy = RecurrentActorCritic(OBS_DIM, space, NETWORK, rnn)
    with torch.no_grad():  # a learned initial state that differs from zeros
        for param in (policy.initial_h, policy.initial_c):
            if isinstance(param, torch.nn.Parameter):
                param.normal_()
    return policy


def random_state(policy: RecurrentActorCritic) -> PolicyState:
    init = policy.initial_state(NUM_ENVS)
    return PolicyState(
        torch.randn_like(init.h), None if init.c is None else torch.randn_like(init.c)
    )


@pytest.mark.parametrize(("rnn_type", "shared", "layers", "learned"), POLICIES)
def test_acting_pass_steps_as_the_policy_does(rnn_type, shared, layers, learned):
    """Next state, value and the sampled action's log-probability match the modules over
    several steps with episode starts and an action mask; the same seed draws the same
    actions as sampling the modules's distribution."""
    policy = make_policy(rnn_type, shared, layers, learned, DiscreteActions(4))
    acting = RecurrentActingPass(policy)
    state = random_state(policy)
    for step in range(4):
        obs = torch.randn(NUM_ENVS, OBS_DIM)
        starts = torch.rand(NUM_ENVS) < 0.4
        mask = torch.rand(NUM_ENVS, 4) < 0.7
        mask[:, step % 4] = True
        torch.manual_seed(step)
        action, logp, value, next_state = acting(obs, state, starts, mask)
        dist, expected_value, expected_state = reference_step(policy, obs, state, starts, mask)
        torch.manual_seed(step)
        assert torch.equal(action, dist.sample())
        assert mask.gather(1, action.unsqueeze(1)).all()
        torch.testing.assert_close(logp, dist.log_prob(action))
        torch.testing.assert_close(value, expected_value)
        torch.testing.assert_close(next_state.h, expected_state.h)
        if expected_state.c is None:
            assert next_state.c is None
        else:
            torch.testing.assert_close(next_state.c, expected_state.c)
        state = next_state


def test_continuous_actions_sample_from_the_policy_distribution():
    space = ContinuousActions(2)
    policy = make_policy(RNNType.gru, False, 1, False, space)
    state, obs = random_state(policy), torch.randn(NUM_ENVS, OBS_DIM)
    starts = torch.zeros(NUM_ENVS, dtype=torch.bool)
    action, logp, value, _ = RecurrentActingPass(policy)(obs, state, starts)
    dist, expected_value, _ = reference_step(policy, obs, state, starts)
    assert action.shape == (NUM_ENVS, 2)
    torch.testing.assert_close(logp, dist.log_prob(action))
    torch.testing.assert_close(value, expected_value)


def test_deterministic_acting_takes_the_mode():
    policy = make_policy(RNNType.lstm, False, 1, True, DiscreteActions(4))
    state, obs = random_state(policy), torch.randn(NUM_ENVS, OBS_DIM)
    starts = torch.rand(NUM_ENVS) < 0.5
    action, logp, value, _ = policy.acting(deterministic=True)(obs, state, starts)
    dist, expected_value, _ = reference_step(policy, obs, state, starts)
    torch.testing.assert_close(action, dist.mode)
    torch.testing.assert_close(logp, dist.log_prob(action))
    torch.testing.assert_close(value, expected_value)
