"""The recurrent actor-critic: resets, sequence replay vs stepping, burn-in, telemetry."""

import pytest
import torch
from recurrent_reference import chunk_batch, reference_step, replay

from esper.simic.agents import batches
from esper.simic.agents.batching import SequenceChunks, hidden_state_stats
from esper.simic.agents.heads import ActionSpec, ContinuousActions, DiscreteActions
from esper.simic.agents.policy import PolicyState
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.agents.sequences import build_layout
from esper.simic.settings import NetworkConfig, RNNConfig, RNNType

OBS_DIM = 3
DISCRETE = DiscreteActions(4)
# PyTorch's default init gives larger outputs than the 0.01-gain policy layer, so that
# comparisons are not trivially met by near-zero logits.
NETWORK = NetworkConfig(actor_hidden=[16], critic_hidden=[8], ortho_init=False)
CORES = [
    pytest.param(rnn_type, shared, id=f"{rnn_type.value}-{'shared' if shared else 'separate'}")
    for rnn_type in RNNType
    for shared in (True, False)
]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_policy(
    rnn_type: RNNType = RNNType.lstm,
    shared_core: bool = True,
    num_layers: int = 2,
    learned_initial_state: bool = False,
    action_space: ActionSpec = DISCRETE,
    network: NetworkConfig = NETWORK,
) -> RecurrentActorCritic:
    torch.manual_seed(0)
    rnn = RNNConfig(
        type=rnn_type,
        hidden_size=8,
        num_layers=num_layers,
        shared_core=shared_core,
        learned_initial_state=learned_initial_state,
    )
    return RecurrentActorCritic(OBS_DIM, action_space, network, rnn)


def random_state(policy: RecurrentActorCritic, num_envs: int) -> PolicyState:
    init = policy.initial_state(num_envs)
    c = None if init.c is None else torch.randn_like(init.c)
    return PolicyState(torch.randn_like(init.h), c)


def step_rollout(policy, obs, actions, dones, first_starts, state):
    """Step the core over ``[T, N]`` as a rollout does; store the state before each step."""
    starts = torch.cat([first_starts[None], dones[:-1]])
    logps, values, hs, cs = [], [], [], []
    for t in range(obs.shape[0]):
        hs.append(state.h.transpose(0, 1))
        cs.append(None if state.c is None else state.c.transpose(0, 1))
        dist, value, state = reference_step(policy, obs[t], state, starts[t])
        logps.append(dist.log_prob(actions[t]))
        values.append(value)
    states_c = None if state.c is None else torch.stack(cs)
    return torch.stack(logps), torch.stack(values), torch.stack(hs), states_c, state


@pytest.mark.parametrize(("rnn_type", "shared"), CORES)
def test_step_resets_only_the_envs_whose_episode_starts(rnn_type, shared):
    policy = make_policy(rnn_type, shared)
    state = random_state(policy, 2)
    obs = torch.randn(2, OBS_DIM)
    dist, value, new = reference_step(policy, obs, state, torch.tensor([True, False]))
    fresh_dist, fresh_value, fresh = reference_step(
        policy, obs[:1], policy.initial_state(1), torch.tensor([False])
    )
    kept_dist, kept_value, kept = reference_step(
        policy,
        obs[1:],
        PolicyState(*(None if x is None else x[:, 1:] for x in state)),
        torch.tensor([False]),
    )
    torch.testing.assert_close(dist.logits, torch.cat([fresh_dist.logits, kept_dist.logits]))
    torch.testing.assert_close(value, torch.cat([fresh_value, kept_value]))
    torch.testing.assert_close(new.h, torch.cat([fresh.h, kept.h], dim=1))
    if rnn_type is RNNType.lstm:
        torch.testing.assert_close(new.c, torch.cat([fresh.c, kept.c], dim=1))
    else:
        assert new.c is None
    # value() reads the same critic path as a step.
    torch.testing.assert_close(policy.value(obs, state, torch.tensor([True, False])), value)


def test_learned_initial_state_is_the_reset_target_and_is_trained():
    policy = make_policy(learned_initial_state=True)
    with torch.no_grad():
        policy.initial_h.normal_()
        policy.initial_c.normal_()
    state = random_state(policy, 3)
    reset = policy.reset_state(state, torch.tensor([True, False, True]))
    torch.testing.assert_close(reset.h[:, [0, 2]], policy.initial_h.expand(-1, 2, -1))
    torch.testing.assert_close(reset.c[:, 1], state.c[:, 1])
    value = policy.value(torch.randn(3, OBS_DIM), state, torch.tensor([True, False, True]))
    value.sum().backward()
    assert policy.initial_h.grad.abs().sum() > 0
    assert "initial_h" in policy.state_dict()
    assert "initial_h" not in make_policy().state_dict()  # zeros are not checkpointed


@pytest.mark.parametrize(("rnn_type", "shared"), CORES)
def test_sequence_replay_equals_stepping_one_step_at_a_time(rnn_type, shared):
    policy = make_policy(rnn_type, shared)
    steps, envs = 7, 5
    obs = torch.randn(steps, envs, OBS_DIM)
    state = random_state(policy, envs)
    episode_start = torch.tensor([True, False, False, True, False])
    dist, values, _, _ = policy(chunk_batch(obs, state, episode_start))
    _, _, final = replay(policy, obs, state, episode_start)
    assert values.shape == (steps, envs)
    stepped = state
    for t in range(steps):
        step_dist, step_value, stepped = reference_step(
            policy, obs[t], stepped, episode_start & (t == 0)
        )
        torch.testing.assert_close(dist.logits[t], step_dist.logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values[t], step_value, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final.h, stepped.h, atol=1e-5, rtol=1e-5)
    if rnn_type is RNNType.lstm:
        torch.testing.assert_close(final.c, stepped.c, atol=1e-5, rtol=1e-5)


def test_sequence_replay_with_continuous_actions_and_a_shared_encoder():
    space = ContinuousActions(2)
    network = NetworkConfig(actor_hidden=[16], shared_trunk=True, ortho_init=False)
    policy = make_policy(RNNType.gru, shared_core=False, action_space=space, network=network)
    obs = torch.randn(4, 3, OBS_DIM)
    actions = torch.randn(4, 3, 2)
    state = policy.initial_state(3)
    dist, values, _, _ = policy(chunk_batch(obs, state, torch.ones(3, dtype=torch.bool)))
    assert dist.log_prob(actions).shape == (4, 3)
    for t in range(4):
        step_dist, value, state = reference_step(policy, obs[t], state, torch.full((3,), t == 0))
        torch.testing.assert_close(dist.log_prob(actions)[t], step_dist.log_prob(actions[t]))
        torch.testing.assert_close(values[t], value)


def test_action_masks_apply_to_every_replayed_step():
    policy = make_policy()
    mask = torch.tensor([True, False, True, False]).expand(5, 2, 4)
    batch = chunk_batch(
        torch.randn(5, 2, OBS_DIM), policy.initial_state(2), torch.ones(2, dtype=torch.bool), mask
    )
    dist = policy(batch).dist
    assert torch.all(dist.probs[..., [1, 3]] == 0)


class Rollout:
    """A rollout with episode ends mid-chunk, stepped by a policy, states stored per step."""

    def __init__(self, policy: RecurrentActorCritic) -> None:
        torch.manual_seed(1)
        steps, envs = 9, 3
        self.obs = torch.randn(steps, envs, OBS_DIM)
        self.actions = torch.randint(0, 4, (steps, envs))
        self.dones = torch.zeros(steps, envs, dtype=torch.bool)
        self.dones[2, 0] = self.dones[6, 1] = self.dones[3, 2] = self.dones[4, 2] = True
        self.first = torch.tensor([True, False, False])
        with torch.no_grad():
            self.logp, self.values, self.states_h, self.states_c, _ = step_rollout(
                policy, self.obs, self.actions, self.dones, self.first, random_state(policy, envs)
            )

    def chunks(self, burn_in: int, states_h: torch.Tensor | None = None):
        layout = build_layout(self.dones, self.first, seq_len=4, burn_in=burn_in)
        zeros = torch.zeros_like(self.values)
        rollout = batches.Rollout(
            self.obs, self.actions, self.logp, self.values, zeros, zeros, self.dones, None,
            self.states_h if states_h is None else states_h, self.states_c, self.first,
        )  # fmt: skip
        chunks, _ = SequenceChunks(seq_len=4, minibatch_size=64, burn_in=burn_in).prepare(rollout)
        return layout, chunks


@pytest.mark.parametrize("burn_in", [0, 2, 4])
@pytest.mark.parametrize(("rnn_type", "shared"), CORES)
def test_replaying_rollout_chunks_reproduces_the_rollout(rnn_type, shared, burn_in):
    policy = make_policy(rnn_type, shared)
    rollout = Rollout(policy)
    layout, chunks = rollout.chunks(burn_in)
    dist, values, _, _ = policy(chunks)
    mask = layout.mask
    assert int(mask.sum()) == rollout.values.numel()
    expected_logp, expected_values = layout.gather(rollout.logp), layout.gather(rollout.values)
    torch.testing.assert_close(
        dist.log_prob(chunks.actions)[mask], expected_logp[mask], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(values[mask], expected_values[mask], atol=1e-5, rtol=1e-5)


def test_burn_in_rebuilds_a_stale_chunk_start_state_without_gradient():
    policy = make_policy()
    rollout = Rollout(policy)
    layout, _ = rollout.chunks(burn_in=2)
    continuing = layout.has_burn_in
    assert continuing.any()
    # Corrupt the states stored at the first step of every chunk that continues an
    # episode, as if the weights had moved since the rollout.
    stale = rollout.states_h.clone().flatten(0, 1)
    stale[layout.index[0, continuing]] += 5.0
    stale = stale.reshape_as(rollout.states_h)
    expected = layout.gather(rollout.values)

    # Burn-in replays the two steps before each such chunk from the (intact) state there.
    layout, chunks = rollout.chunks(burn_in=2, states_h=stale)
    burn_obs = chunks.memory.burn_in_obs.clone().requires_grad_()
    memory = chunks.memory._replace(burn_in_obs=burn_obs)
    values = policy(chunks._replace(memory=memory)).values
    torch.testing.assert_close(values[layout.mask], expected[layout.mask], atol=1e-5, rtol=1e-5)
    values.sum().backward()
    assert burn_obs.grad is None  # the burn-in replay carries no gradient

    # Without burn-in the same chunks start from the corrupted states.
    layout, chunks = rollout.chunks(burn_in=0, states_h=stale)
    values = policy(chunks).values
    assert not torch.allclose(values[:, continuing], expected[:, continuing], atol=1e-3)


def test_parameter_groups_partition_the_parameters():
    for shared in (True, False):
        for trunk in (True, False):
            network = NetworkConfig(actor_hidden=[16], shared_trunk=trunk)
            policy = make_policy(shared_core=shared, learned_initial_state=True, network=network)
            groups = policy.parameter_groups()
            ids = [id(p) for group in groups.values() for p in group]
            assert len(ids) == len(set(ids))
            assert set(ids) == {id(p) for p in policy.parameters()}
            recurrent = {id(p) for p in groups["recurrent"]}
            assert id(policy.initial_h) in recurrent
            assert {id(p) for p in policy.critic_core.parameters()} <= recurrent


def test_hidden_state_stats_against_hand_values():
    h = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # norms 5 and 0
    c = torch.tensor([[0.0, 10.0], [-3.0, 0.1]])  # |tanh|: 0, 1.0, 0.995, 0.1
    stats = hidden_state_stats(h, c)
    assert stats["recurrent/hidden_norm"].item() == pytest.approx(2.5)
    assert stats["recurrent/cell_norm"].item() == pytest.approx((10.0 + (9.01) ** 0.5) / 2)
    assert stats["recurrent/saturated_frac"].item() == pytest.approx(0.5)
    gru = hidden_state_stats(torch.tensor([[0.995, -0.999, 0.5, 0.0]]), None)
    assert set(gru) == {"recurrent/hidden_norm", "recurrent/saturated_frac"}
    assert gru["recurrent/saturated_frac"].item() == pytest.approx(0.5)


def test_core_init_is_orthogonal_with_zero_biases():
    torch.manual_seed(0)
    policy = RecurrentActorCritic(OBS_DIM, DISCRETE, NetworkConfig(), RNNConfig(hidden_size=8))
    for name, param in policy.actor_core.named_parameters():
        if name.startswith("bias"):
            assert torch.all(param == 0)
        else:  # semi-orthogonal: orthonormal rows or columns, whichever are fewer
            gram = param @ param.T if param.shape[0] <= param.shape[1] else param.T @ param
            torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-5, rtol=0)
