"""agent.on_nonfinite: skip, abort and warn, in the learner and the trainer."""

import pytest
import torch
from compile_support import needs_compile

from esper.simic import train as train_module
from esper.simic.agents.batches import Rollout
from esper.simic.agents.batching import ShuffledSteps
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.ppo import NonFiniteGradientsError, PPOLearner
from esper.simic.gradients import CollectorConfig, NonFinitePolicy, build_collector
from esper.simic.settings import AgentConfig, NetworkConfig
from esper.simic.testing import run_training, steps_rollout


@pytest.fixture(params=[False, pytest.param(True, marks=needs_compile)], ids=["eager", "compiled"])
def compiled(request: pytest.FixtureRequest) -> bool:
    """Every policy must hold on the compiled whole-step path too."""
    return request.param


def make_learner(policy_name: str, compile_step: bool = False) -> PPOLearner:
    torch.manual_seed(0)
    network = NetworkConfig(actor_hidden=[8], critic_hidden=[8])
    policy = ActorCritic(4, DiscreteActions(2), network)
    config = AgentConfig(
        minibatch_size=16,
        update_epochs=2,
        anneal_lr=False,
        compile=compile_step,
        on_nonfinite=NonFinitePolicy(policy_name),
    )
    collector = build_collector(CollectorConfig())
    return PPOLearner(policy, config, collector, ShuffledSteps(16), num_updates=10)


def batch(poison: bool) -> Rollout:
    """A 32-step rollout of one env; ``poison`` puts a NaN into one advantage."""
    generator = torch.Generator().manual_seed(1)
    advantages = torch.randn(32, generator=generator)
    if poison:
        advantages[3] = float("nan")
    return steps_rollout(
        obs=torch.randn(32, 4, generator=generator),
        actions=torch.randint(0, 2, (32,), generator=generator),
        logp=torch.full((32,), -0.69),
        values=torch.zeros(32),
        advantages=advantages,
        returns=torch.randn(32, generator=generator),
        action_masks=None,
    )


def weights(learner: PPOLearner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in learner.policy.parameters()]


def test_skip_drops_every_poisoned_step_and_counts_it(compiled):
    learner = make_learner("skip", compiled)
    before = weights(learner)
    metrics = learner.learn(batch(poison=True), torch.Generator().manual_seed(0))
    # Two epochs of two minibatches; the NaN advantage poisons one minibatch per epoch.
    assert metrics["train/nonfinite_steps"] == 2.0
    after = weights(learner)
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert any(changed), "the clean steps must still train"
    assert all(torch.isfinite(p).all() for p in after)
    state = learner.optimizer.state[next(iter(learner.policy.parameters()))]
    assert state["step"].item() == 2.0  # only the two clean steps counted


def test_clean_update_reports_zero(compiled):
    metrics = make_learner("skip", compiled).learn(
        batch(poison=False), torch.Generator().manual_seed(0)
    )
    assert metrics["train/nonfinite_steps"] == 0.0


def test_warn_applies_the_step_and_logs(caplog, compiled):
    learner = make_learner("warn", compiled)
    metrics = learner.learn(batch(poison=True), torch.Generator().manual_seed(0))
    # The first step is poisoned and applied, so NaN weights poison every later step.
    assert metrics["train/nonfinite_steps"] == 4.0
    assert not all(torch.isfinite(p).all() for p in learner.policy.parameters())
    assert "non-finite gradients (applied anyway)" in caplog.text


def test_abort_names_the_parameters_and_keeps_weights_finite(compiled):
    learner = make_learner("abort", compiled)
    with pytest.raises(NonFiniteGradientsError) as error:
        learner.learn(batch(poison=True), torch.Generator().manual_seed(0))
    assert "action_head.logits.weight" in error.value.parameters
    assert all(torch.isfinite(p).all() for p in learner.policy.parameters())


def test_trainer_checkpoints_the_state_before_the_failing_update(tiny, tmp_path, monkeypatch):
    """The failing update's clean steps and schedule step are applied before it raises: the
    checkpoint must hold the weights and schedule after update 2 all the same."""
    calls = {"n": 0}
    real_learn = PPOLearner.learn
    after_update_2 = {}

    def learn_then_fail(self, rollout, generator):
        calls["n"] += 1
        if calls["n"] < 3:
            return real_learn(self, rollout, generator)
        after_update_2.update({k: v.clone() for k, v in self.policy.state_dict().items()})
        real_learn(self, rollout, generator)
        raise NonFiniteGradientsError(1, 4, ["critic_trunk.0.weight"])

    monkeypatch.setattr(PPOLearner, "learn", learn_then_fail)
    with pytest.raises(train_module.TrainingAbortedError, match=r"update 3: 1 of 4 .*critic_trunk"):
        run_training([*tiny, "agent.on_nonfinite=abort"], tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "nonfinite_abort.pt", weights_only=True)
    assert state["counters"] == {"update": 2, "global_step": 128}
    assert state["learner"]["scheduler"]["last_epoch"] == 2
    for key, value in after_update_2.items():
        torch.testing.assert_close(state["policy"][key], value, rtol=0, atol=0)
