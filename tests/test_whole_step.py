"""agent.compile: the whole gradient step as one graph matches the eager step on the same data."""

import copy

import pytest
import torch
from compile_support import needs_compile

from esper.simic.agents.batches import Rollout
from esper.simic.agents.batching import ShuffledSteps
from esper.simic.agents.factored import FactoredSpec
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.ppo import PPOLearner
from esper.simic.agents.whole_step import adam_
from esper.simic.gradients import CollectorConfig, CollectorName, build_collector
from esper.simic.settings import AgentConfig, NetworkConfig
from esper.simic.testing import steps_rollout

pytestmark = pytest.mark.timeout(600)

# op 0 uses the op head only, op 1 every head, op 2 op and slot; slot has a mask row per op.
RELEVANCE = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
SPEC = FactoredSpec((3, 3, 3), RELEVANCE, conditional_head=1, head_names=("op", "slot", "extra"))


def learner(
    compile_step: bool,
    collector: CollectorName = CollectorName.fused,
    factored: bool = False,
    detail: bool = False,
) -> PPOLearner:
    torch.manual_seed(0)
    actions = SPEC if factored else DiscreteActions(2)
    network = NetworkConfig(actor_hidden=[16, 16], critic_hidden=[16])
    policy = ActorCritic(4, actions, network, {"slot": 0.5} if factored else None)
    config = AgentConfig(
        minibatch_size=32, update_epochs=3, learning_rate=3e-3, compile=compile_step
    )
    collector_config = CollectorConfig(name=collector, detail=detail)
    return PPOLearner(
        policy, config, build_collector(collector_config), ShuffledSteps(32), num_updates=4
    )


def batch(factored: bool = False) -> Rollout:
    generator = torch.Generator().manual_seed(1)
    size = 64
    masks = None
    if factored:
        actions = torch.stack([torch.randint(0, 2, (size,), generator=generator)] * 3, dim=-1)
        masks = torch.ones(size, SPEC.mask_size, dtype=torch.bool)
        masks[:, 2] = False  # op 2 is illegal everywhere
    else:
        actions = torch.randint(0, 2, (size,), generator=generator)
    return steps_rollout(
        obs=torch.randn(size, 4, generator=generator),
        actions=actions,
        logp=torch.full((size,), -0.7),
        values=torch.randn(size, generator=generator),
        advantages=torch.randn(size, generator=generator),
        returns=torch.randn(size, generator=generator),
        action_masks=masks,
    )


def assert_same_update(eager: PPOLearner, compiled: PPOLearner, data: Rollout) -> None:
    """Two updates (the second at the annealed learning rate): same weights, moments, metrics."""
    for _ in range(2):
        expected = eager.learn(data, torch.Generator().manual_seed(0))
        got = compiled.learn(data, torch.Generator().manual_seed(0))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
    pairs = zip(eager.policy.parameters(), compiled.policy.parameters(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
        for name in ("step", "exp_avg", "exp_avg_sq"):
            state_a, state_b = eager.optimizer.state[a][name], compiled.optimizer.state[b][name]
            torch.testing.assert_close(state_b, state_a, rtol=1e-4, atol=1e-7)


@needs_compile
@pytest.mark.parametrize("collector", list(CollectorName))
def test_compiled_step_matches_eager_with_every_collector(collector):
    detail = collector is CollectorName.loop  # the opt-in element counts, on one collector
    eager, compiled = (
        learner(False, collector, detail=detail),
        learner(True, collector, detail=detail),
    )
    assert_same_update(eager, compiled, batch())


@needs_compile
def test_compiled_step_matches_eager_with_factored_masked_heads():
    eager, compiled = learner(False, factored=True), learner(True, factored=True)
    assert_same_update(eager, compiled, batch(factored=True))


@needs_compile
def test_compiled_state_round_trips_through_the_optimizer_state_dict():
    """The compiled step trains torch.optim.Adam's own state: a checkpoint taken from it
    resumes an eager learner exactly where the compiled one goes on."""
    compiled, resumed = learner(True), learner(False)
    data = batch()
    compiled.learn(data, torch.Generator().manual_seed(0))
    # Deep copies, as a checkpoint file is: the state dicts hold the live tensors.
    resumed.policy.load_state_dict(copy.deepcopy(compiled.policy.state_dict()))
    resumed.load_state_dict(copy.deepcopy(compiled.state_dict()))
    compiled.learn(data, torch.Generator().manual_seed(1))
    resumed.learn(data, torch.Generator().manual_seed(1))
    for a, b in zip(compiled.policy.parameters(), resumed.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_adam_matches_torch_and_skip_leaves_everything_untouched():
    torch.manual_seed(0)
    reference = torch.nn.Parameter(torch.randn(5, 3))
    optimizer = torch.optim.Adam([reference], lr=0.01, eps=1e-5)
    param = reference.detach().clone()
    exp_avg, exp_avg_sq, step = torch.zeros(5, 3), torch.zeros(5, 3), torch.zeros(())
    lr = torch.tensor(0.01)
    for _ in range(3):
        grad = torch.randn(5, 3)
        reference.grad = grad.clone()
        optimizer.step()
        adam_([param], [grad], [exp_avg], [exp_avg_sq], [step], lr, (0.9, 0.999), 1e-5, None)
    torch.testing.assert_close(param, reference.detach())
    state = optimizer.state[reference]
    torch.testing.assert_close(exp_avg_sq, state["exp_avg_sq"])
    before = [t.clone() for t in (param, exp_avg, exp_avg_sq, step)]
    poisoned = torch.full((5, 3), float("nan"))
    skip = torch.tensor(True)
    adam_([param], [poisoned], [exp_avg], [exp_avg_sq], [step], lr, (0.9, 0.999), 1e-5, skip)
    for old, new in zip(before, (param, exp_avg, exp_avg_sq, step), strict=True):
        assert torch.equal(old, new)
