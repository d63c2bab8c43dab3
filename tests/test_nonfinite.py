"""collector.on_nonfinite: skip, abort and warn, in the learner and the trainer."""

import gymnasium as gym
import pytest
import torch
from conftest import needs_compile

from esper.simic import train as train_module
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.ppo import NonFiniteGradientsError, PPOLearner, RolloutBatch
from esper.simic.gradients import CollectorConfig, NonFinitePolicy, build_collector
from esper.simic.settings import AgentConfig, NetworkConfig
from esper.simic.testing import run_training


@pytest.fixture(params=[False, pytest.param(True, marks=needs_compile)], ids=["eager", "compiled"])
def compiled(request: pytest.FixtureRequest) -> bool:
    """Every policy must hold on the compiled whole-step path too."""
    return request.param


def make_learner(policy_name: str, compile_step: bool = False) -> PPOLearner:
    torch.manual_seed(0)
    network = NetworkConfig(actor_hidden=[8], critic_hidden=[8])
    policy = ActorCritic(4, gym.spaces.Discrete(2), network)
    config = AgentConfig(minibatch_size=16, update_epochs=2, anneal_lr=False, compile=compile_step)
    collector = build_collector(CollectorConfig(on_nonfinite=NonFinitePolicy(policy_name)))
    return PPOLearner(policy, config, collector, num_updates=10)


def batch(poison: bool) -> RolloutBatch:
    generator = torch.Generator().manual_seed(1)
    advantages = torch.randn(32, generator=generator)
    if poison:
        advantages[3] = float("nan")
    return RolloutBatch(
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
    metrics = learner.update(batch(poison=True), torch.Generator().manual_seed(0))
    # Two epochs of two minibatches; the NaN advantage poisons one minibatch per epoch.
    assert metrics["train/nonfinite_steps"] == 2.0
    after = weights(learner)
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert any(changed), "the clean steps must still train"
    assert all(torch.isfinite(p).all() for p in after)
    state = learner.optimizer.state[next(iter(learner.policy.parameters()))]
    assert state["step"].item() == 2.0  # only the two clean steps counted


def test_clean_update_reports_zero(compiled):
    metrics = make_learner("skip", compiled).update(
        batch(poison=False), torch.Generator().manual_seed(0)
    )
    assert metrics["train/nonfinite_steps"] == 0.0


def test_warn_applies_the_step_and_logs(caplog, compiled):
    learner = make_learner("warn", compiled)
    metrics = learner.update(batch(poison=True), torch.Generator().manual_seed(0))
    # The first step is poisoned and applied, so NaN weights poison every later step.
    assert metrics["train/nonfinite_steps"] == 4.0
    assert not all(torch.isfinite(p).all() for p in learner.policy.parameters())
    assert "non-finite gradients (applied anyway)" in caplog.text


def test_abort_names_the_parameters_and_keeps_weights_finite(compiled):
    learner = make_learner("abort", compiled)
    with pytest.raises(NonFiniteGradientsError) as error:
        learner.update(batch(poison=True), torch.Generator().manual_seed(0))
    assert "action_head.logits.weight" in error.value.parameters
    assert all(torch.isfinite(p).all() for p in learner.policy.parameters())


def test_trainer_checkpoints_then_aborts_with_the_update(tiny, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_update = PPOLearner.update

    def update_then_fail(self, batch, generator):
        calls["n"] += 1
        if calls["n"] == 3:
            raise NonFiniteGradientsError(1, 4, ["critic_trunk.0.weight"])
        return real_update(self, batch, generator)

    monkeypatch.setattr(PPOLearner, "update", update_then_fail)
    with pytest.raises(train_module.TrainingAbortedError, match=r"update 3: 1 of 4 .*critic_trunk"):
        run_training([*tiny, "collector.on_nonfinite=abort"], tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "nonfinite_abort.pt", weights_only=False)
    assert state["counters"]["update"] == 2
