"""agent.anneal_clip: the surrogate's clip range decays linearly to 0, and binds as it shrinks."""

import copy

import pytest
import torch

from esper.simic.agents.batches import Rollout
from esper.simic.agents.batching import ShuffledSteps
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.ppo import PPOLearner
from esper.simic.gradients import CollectorConfig, build_collector
from esper.simic.settings import AgentConfig, NetworkConfig
from esper.simic.testing import observation_batch, steps_rollout

NUM_UPDATES = 4
LOG_RATIO = 0.1
"""Every sample's new/old probability ratio is exp(0.1) = 1.105 at the update's first step."""


def make_learner(anneal_clip: bool, compile_step: bool) -> PPOLearner:
    torch.manual_seed(0)
    policy = ActorCritic(4, DiscreteActions(2), NetworkConfig(actor_hidden=[8], critic_hidden=[8]))
    # One epoch of one minibatch: the update's clipfrac is that of its first, only step.
    config = AgentConfig(
        minibatch_size=32, update_epochs=1, anneal_clip=anneal_clip, compile=compile_step
    )
    collector = build_collector(CollectorConfig())
    return PPOLearner(policy, config, collector, ShuffledSteps(32), NUM_UPDATES)


def batch_at_ratio(policy: ActorCritic) -> Rollout:
    """A 32-step rollout of one env whose stored log-probabilities are 0.1 below the
    policy's own."""
    generator = torch.Generator().manual_seed(1)
    obs = torch.randn(32, 4, generator=generator)
    actions = torch.randint(0, 2, (32,), generator=generator)
    with torch.no_grad():
        dist, values, _, _ = policy(observation_batch(obs))
        logp = dist.log_prob(actions) - LOG_RATIO
    return steps_rollout(
        obs=obs,
        actions=actions,
        logp=logp,
        values=values,
        advantages=torch.randn(32, generator=generator),
        returns=torch.randn(32, generator=generator),
        action_masks=None,
    )


def run_updates(learner: PPOLearner) -> list[dict[str, float]]:
    generator = torch.Generator().manual_seed(0)
    return [learner.learn(batch_at_ratio(learner.policy), generator) for _ in range(NUM_UPDATES)]


@pytest.mark.parametrize("compile_step", [False, True], ids=["eager", "compiled"])
def test_annealed_clip_decays_and_binds(one_thread, compile_step):
    metrics = run_updates(make_learner(anneal_clip=True, compile_step=compile_step))
    clips = [m["train/clip_coef"] for m in metrics]
    assert clips == pytest.approx([0.2, 0.15, 0.1, 0.05])
    # A ratio of 1.105 lies inside [0.8, 1.2] and [0.85, 1.15], outside [0.9, 1.1].
    assert [m["train/clipfrac"] for m in metrics] == [0.0, 0.0, 1.0, 1.0]


def test_constant_clip_by_default(one_thread):
    metrics = run_updates(make_learner(anneal_clip=False, compile_step=False))
    assert [m["train/clip_coef"] for m in metrics] == pytest.approx([0.2] * NUM_UPDATES)
    assert [m["train/clipfrac"] for m in metrics] == [0.0] * NUM_UPDATES


def test_a_resumed_learner_continues_the_clip_schedule():
    """After two updates, a learner restored from the state dict with a doubled budget goes
    on from the clip range reached (0.1) down to 0 at its new last update."""
    learner = make_learner(anneal_clip=True, compile_step=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        learner.learn(batch_at_ratio(learner.policy), generator)
    state = copy.deepcopy(learner.state_dict())
    resumed = make_learner(anneal_clip=True, compile_step=False)
    resumed.num_updates = 2 * NUM_UPDATES
    resumed.load_state_dict(state)
    clips = [
        resumed.learn(batch_at_ratio(resumed.policy), generator)["train/clip_coef"]
        for _ in range(3)
    ]
    assert clips == pytest.approx([0.1, 0.1 * 5 / 6, 0.1 * 4 / 6])
