"""Factored, masked MultiDiscrete distribution: hand-computed cases, masks, shapes, the env."""

import itertools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from esper.simic.agents.factored import FactoredDistribution, FactoredHead, FactoredSpec
from esper.simic.agents.heads import make_action_head
from esper.simic.agents.policy import PolicyState
from esper.simic.assembly import action_spec
from esper.simic.envs.registration import register_esper_envs
from esper.simic.envs.seed_lifecycle import HEAD_NAMES, NUM_BLUEPRINTS, split_action_mask
from esper.simic.rollout import RolloutStorage
from esper.simic.settings import NetworkConfig

LN = math.log

# Three ops: 0 (like WAIT) uses the op head only, 1 uses every head, 2 uses op and slot.
# Heads: op [3], slot [3] (conditional: a mask row per op), extra [3].
RELEVANCE = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
SPEC = FactoredSpec((3, 3, 3), RELEVANCE, conditional_head=1, head_names=("op", "slot", "extra"))
# op [T T F] | slot rows: op0 [T F F], op1 [T T F], op2 [F F F] | extra [T T F]
FLAT_MASK = torch.tensor([[1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0]], dtype=torch.bool)


def hand_logits() -> list[torch.Tensor]:
    """Masked probabilities: op [1/2, 1/2, 0], op1's slots [1/4, 3/4, 0], extra [1/5, 4/5, 0]."""
    op = torch.tensor([[0.0, 0.0, 0.0]])
    slot = torch.tensor([[0.0, 0.0, 0.0, 0.0, LN(3), 0.0, 0.0, 0.0, 0.0]])
    extra = torch.tensor([[0.0, LN(4), LN(5)]])
    return [z.requires_grad_() for z in (op, slot, extra)]


def hand_dist(logits: list[torch.Tensor] | None = None, batch: int = 1) -> FactoredDistribution:
    """The hand case, repeated ``batch`` times (log_prob does not broadcast)."""
    logits = [z.expand(batch, -1) for z in (hand_logits() if logits is None else logits)]
    mask = SPEC.split_mask(FLAT_MASK.expand(batch, -1))
    return FactoredDistribution(SPEC, RELEVANCE, logits, mask)


def test_log_prob_counts_relevant_heads_only():
    dist = hand_dist()
    full = dist.log_prob(torch.tensor([[1, 1, 0]]))
    assert full.item() == pytest.approx(LN(0.5) + LN(0.75) + LN(0.2), abs=1e-6)
    slot_only = dist.log_prob(torch.tensor([[2, 1, 1]]))  # op 2 masked; extra irrelevant
    assert slot_only.item() < -1e30
    waits = hand_dist(batch=4).log_prob(torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 2, 2]]))
    torch.testing.assert_close(waits, torch.full((4,), LN(0.5)))


def test_wait_puts_no_gradient_into_irrelevant_heads():
    logits = hand_logits()
    hand_dist(logits).log_prob(torch.tensor([[0, 1, 1]])).sum().backward()
    assert logits[0].grad is not None and logits[0].grad.abs().sum() > 0
    assert torch.equal(logits[1].grad, torch.zeros_like(logits[1]))
    assert torch.equal(logits[2].grad, torch.zeros_like(logits[2]))
    logits = hand_logits()
    hand_dist(logits).log_prob(torch.tensor([[1, 1, 0]])).sum().backward()
    assert all(z.grad.abs().sum() > 0 for z in logits)
    # op1's slot row only: the other ops' slot logits get nothing
    assert torch.equal(logits[1].grad[0, [0, 1, 2, 6, 7, 8]], torch.zeros(6))


def test_entropy_is_entropy_of_effective_action():
    dist = hand_dist()
    h_slot1 = -(0.25 * LN(0.25) + 0.75 * LN(0.75))
    h_extra = -(0.2 * LN(0.2) + 0.8 * LN(0.8))
    expected = torch.tensor([[LN(2), 0.5 * h_slot1, 0.5 * h_extra]])
    torch.testing.assert_close(dist.head_entropy(), expected)
    torch.testing.assert_close(dist.entropy(), expected.sum(-1))
    weights = torch.tensor([1.0, 0.0, 2.0])
    torch.testing.assert_close(dist.entropy(weights), (expected * weights).sum(-1))
    # Enumerate effective actions (irrelevant heads fixed to 0): a distribution whose
    # entropy is entropy().
    actions = torch.tensor(list(itertools.product(range(3), repeat=3)))
    canonical = (RELEVANCE[actions[:, 0]] | (actions == 0)).all(-1)
    actions = actions[canonical]
    p = hand_dist(batch=len(actions)).log_prob(actions).exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)
    p = p[p > 0]
    assert (-(p * p.log()).sum()).item() == pytest.approx(dist.entropy().item(), abs=1e-6)


def test_entropy_and_its_gradient_stay_finite_under_masks():
    logits = hand_logits()
    entropy = hand_dist(logits).entropy()
    entropy.sum().backward()
    assert torch.isfinite(entropy).all()
    assert all(torch.isfinite(z.grad).all() for z in logits)


def test_masked_mass_is_unmasked_softmax_on_illegal_values():
    mass = hand_dist().masked_mass()
    # op: 1/3 on op 2; slot: only op 1 uses it with positive probability, and its row puts
    # 1/5 of the raw softmax [1/5, 3/5, 1/5] on slot 2; extra: raw [1/10, 4/10, 5/10].
    torch.testing.assert_close(mass, torch.tensor([[1 / 3, 1 / 5, 1 / 2]]))
    assert not mass.requires_grad


def random_masks(generator: torch.Generator, batch: int) -> torch.Tensor:
    """Random flat masks for SPEC: op legal iff its row is non-empty; at least one legal op."""
    rows = torch.rand(batch, 3, 3, generator=generator) < 0.5
    rows[:, 0, 0] = True
    op = rows.any(-1)
    extra = torch.rand(batch, 3, generator=generator) < 0.5
    extra[:, 2] = True
    return torch.cat([op, rows.flatten(1), extra], dim=-1)


def test_sample_and_mode_respect_every_mask():
    generator = torch.Generator().manual_seed(0)
    batch = 4000
    mask = random_masks(generator, batch)
    logits = [torch.randn(batch, n, generator=generator) * 3 for n in SPEC.logit_sizes()]
    dist = FactoredDistribution(SPEC, RELEVANCE, logits, SPEC.split_mask(mask))
    op_mask, rows, extra_mask = SPEC.split_mask(mask)
    for actions in (dist.sample(), dist.mode):
        op, slot, extra = actions.unbind(-1)
        index = torch.arange(batch)
        assert op_mask[index, op].all()
        assert rows[index, op, slot].all()
        assert extra_mask[index, extra].all()
        assert torch.isfinite(dist.log_prob(actions)).all()
    sampled_ops = dist.sample()[:, 0]
    assert set(sampled_ops.tolist()) == {0, 1, 2}


def test_head_supports_leading_time_and_batch_dims():
    torch.manual_seed(0)
    head = FactoredHead(7, SPEC, ortho=False, entropy_weights={})
    features = torch.randn(4, 5, 7)
    mask = random_masks(torch.Generator().manual_seed(1), 20).reshape(4, 5, -1)
    dist, flat = head(features, mask), head(features.reshape(20, 7), mask.reshape(20, -1))
    actions = dist.sample()
    assert actions.shape == (4, 5, 3) and actions.dtype == torch.long
    torch.testing.assert_close(
        dist.log_prob(actions).reshape(20), flat.log_prob(actions.reshape(20, 3))
    )
    torch.testing.assert_close(dist.entropy().reshape(20), flat.entropy())
    torch.testing.assert_close(dist.masked_mass().reshape(20, 3), flat.masked_mass())
    torch.testing.assert_close(dist.mode.reshape(20, 3), flat.mode)


def test_make_action_head_builds_independent_factored_head_for_multidiscrete():
    space = gym.spaces.MultiDiscrete([3, 2, 4])
    head = make_action_head(5, action_spec(space, {}), NetworkConfig())
    assert isinstance(head, FactoredHead)
    assert head.spec.relevance.all() and head.spec.conditional_head is None
    features = torch.randn(6, 5)
    dist = head(features)
    actions = dist.sample()
    per_head = [
        torch.distributions.Categorical(logits=layer(features)).log_prob(actions[:, h])
        for h, layer in enumerate(head.heads)
    ]
    torch.testing.assert_close(dist.log_prob(actions), sum(per_head))
    assert torch.equal(dist.masked_mass(), torch.zeros(6, 3))
    with pytest.raises(ValueError, match="entropy weights for"):
        make_action_head(5, SPEC, NetworkConfig(), {"blueprint": 2.0})


def test_seed_lifecycle_declares_its_heads_and_samples_stay_legal():
    """The env's declared heads (metadata) give the op-conditioned slot head, the mask
    layout the env emits, and only legal actions."""
    register_esper_envs()
    env = gym.make("esper/SeedLifecycle-v0")
    num_slots = int(env.action_space.nvec[1])
    spec = action_spec(env.action_space, env.metadata)
    assert isinstance(spec, FactoredSpec)
    assert spec.head_sizes == tuple(int(n) for n in env.action_space.nvec)
    assert spec.head_names == HEAD_NAMES and spec.conditional_head == HEAD_NAMES.index("slot")
    torch.manual_seed(0)
    head = FactoredHead(env.observation_space.shape[0], spec, ortho=False, entropy_weights={})
    obs, info = env.reset(seed=0)
    ops = set()
    for _ in range(300):
        flat = np.asarray(info["action_mask"], dtype=bool)
        views = split_action_mask(flat, num_slots, NUM_BLUEPRINTS)
        parts = spec.split_mask(torch.as_tensor(flat))
        for view, part in zip(views, parts, strict=True):
            assert np.array_equal(view, part.numpy())
        with torch.no_grad():
            action = head(torch.as_tensor(obs) * 10, torch.as_tensor(flat)).sample()
        ops.add(int(action[0]))
        obs, _, terminated, truncated, info = env.step(action.numpy())
        assert not info["illegal_action"]
        if terminated or truncated:
            obs, info = env.reset()
    assert len(ops) >= 4  # the walk reached more than WAIT and GERMINATE


def test_rollout_storage_keeps_multidiscrete_actions_as_long_per_head():
    register_esper_envs()
    envs = gym.make_vec("esper/SeedLifecycle-v0", num_envs=2, vectorization_mode="sync")
    state = PolicyState.empty(2, torch.device("cpu"))
    storage = RolloutStorage.allocate(8, envs, 35, state, torch.device("cpu"))
    envs.close()
    assert storage.actions.shape == (8, 2, 5) and storage.actions.dtype == torch.long
