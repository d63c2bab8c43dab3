"""PPO's one loss: its pieces against values computed by hand, and, with a mask, padded
steps changing neither the loss nor any gradient."""

import math

import pytest
import torch

from esper.simic.agents.batches import Rollout
from esper.simic.agents.batching import SequenceChunks
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.losses import (
    LossCoefficients,
    explained_variance,
    masked_mean,
    normalize_advantages,
    ppo_loss,
    value_loss,
)
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.settings import NetworkConfig, RNNConfig

MASK = torch.tensor([[True, True, True], [True, False, True], [False, False, True]])
SURROGATE_ONLY = LossCoefficients(
    clip_coef=0.2, value_clip=None, norm_adv=False, ent_coef=0.0, vf_coef=0.0
)

pytestmark = pytest.mark.usefixtures("one_thread")


def surrogate(logp_new, logp_old, adv, mask=None, clip=0.2):
    """ppo_loss with only its clipped surrogate term weighted in."""
    zeros = torch.zeros_like(logp_new)
    coefficients = SURROGATE_ONLY._replace(clip_coef=clip)
    return ppo_loss(logp_new, zeros, zeros, logp_old, zeros, adv, zeros, mask, coefficients)


def test_surrogate_equals_minus_advantage_weighted_ratio_inside_the_clip_range():
    logp_new = torch.log(torch.tensor([1.1, 0.95]))
    terms = surrogate(logp_new, torch.zeros(2), torch.tensor([2.0, -1.0]))
    assert terms.loss.item() == pytest.approx(-(1.1 * 2.0 + 0.95 * -1.0) / 2)
    assert terms.loss.item() == terms.policy_loss.item()
    assert terms.clipfrac.item() == 0.0


def test_surrogate_clips_only_in_the_direction_that_would_overshoot():
    logp_new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    terms = surrogate(logp_new, torch.zeros(4), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    # min(r*A, clip(r)*A): 1.2, -1.5, 0.5, -0.8 (pessimistic bound, eq. 7)
    assert terms.loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8) / 4)
    assert terms.clipfrac.item() == 1.0


def test_surrogate_gradient_vanishes_where_clipped():
    logp_new = torch.log(torch.tensor([1.5, 1.1])).requires_grad_()
    surrogate(logp_new, torch.zeros(2), torch.ones(2)).loss.backward()
    assert logp_new.grad[0].item() == 0.0
    assert logp_new.grad[1].item() == pytest.approx(-1.1 / 2)


def test_approx_kl_is_the_k3_estimator():
    ratio = torch.tensor([0.5, 2.0])
    terms = surrogate(ratio.log(), torch.zeros(2), torch.ones(2))
    expected = ((0.5 - 1 - math.log(0.5)) + (2.0 - 1 - math.log(2.0))) / 2
    assert terms.approx_kl.item() == pytest.approx(expected)


def test_total_loss_weighs_entropy_and_value_terms():
    logp = torch.log(torch.tensor([1.1, 0.9]))
    entropy, values, returns = torch.tensor([0.5, 0.7]), torch.zeros(2), torch.tensor([1.0, 3.0])
    coefficients = LossCoefficients(0.2, None, False, ent_coef=0.1, vf_coef=0.5)
    adv = torch.tensor([1.0, -1.0])
    terms = ppo_loss(
        logp, entropy, values, torch.zeros(2), values, adv, returns, None, coefficients
    )
    assert terms.entropy.item() == pytest.approx(0.6)
    assert terms.value_loss.item() == pytest.approx(0.5 * (1.0 + 9.0) / 2)
    expected = terms.policy_loss - 0.1 * terms.entropy + 0.5 * terms.value_loss
    assert terms.loss.item() == pytest.approx(expected.item())


def test_value_loss_unclipped_is_half_mse():
    loss = value_loss(
        torch.tensor([1.0, 3.0]), torch.zeros(2), torch.tensor([0.0, 1.0]), None, None
    )
    assert loss.item() == pytest.approx(0.5 * (1.0 + 4.0) / 2)


def test_value_clip_takes_the_pessimistic_error():
    new, old, returns = torch.tensor([2.0, 0.05]), torch.zeros(2), torch.tensor([2.0, 1.0])
    loss = value_loss(new, old, returns, None, value_clip=0.1)
    # sample 0: unclipped 0, clipped (0.1-2)^2 = 3.61 -> 3.61
    # sample 1: unclipped 0.9025, clipped (0.05-1)^2 = 0.9025 -> 0.9025
    assert loss.item() == pytest.approx(0.5 * (3.61 + 0.9025) / 2)


def test_normalized_advantages_have_zero_mean_unit_std():
    adv = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0]), None)
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv.std().item() == pytest.approx(1.0, abs=1e-6)


def test_explained_variance_perfect_constant_and_worse():
    target = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((3,), 2.0), target).item() == pytest.approx(0.0)
    assert explained_variance(-target, target).item() < 0


def _padded(valid: torch.Tensor, fill: float) -> torch.Tensor:
    """Lay ``valid`` (in row-major mask order) into a [3, 3] tensor padded with ``fill``."""
    out = torch.full(MASK.shape, fill)
    out[MASK] = valid
    return out


def test_masked_mean_counts_valid_steps_only():
    x = _padded(torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0, 8.0]), float("nan"))
    assert masked_mean(x, MASK).item() == pytest.approx(4.0)
    assert masked_mean(x, torch.zeros_like(MASK)).item() == 0.0


def test_masked_terms_equal_the_unmasked_ones_on_the_valid_steps():
    torch.manual_seed(0)
    logp_new, entropy, v_new, logp_old, v_old, adv, ret = (torch.randn(6) * 0.5 for _ in range(7))
    for fill in (float("nan"), float("inf"), 1e6):
        pad = [_padded(x, fill) for x in (logp_new, entropy, v_new, logp_old, v_old, adv, ret)]
        for coefficients in (
            LossCoefficients(0.2, None, True, 0.01, 0.5),
            LossCoefficients(0.2, 0.1, False, 0.0, 1.0),
        ):
            masked = ppo_loss(*pad, MASK, coefficients)
            plain = ppo_loss(
                logp_new, entropy, v_new, logp_old, v_old, adv, ret, None, coefficients
            )
            for a, b in zip(masked, plain, strict=True):
                torch.testing.assert_close(a, b)
        torch.testing.assert_close(
            explained_variance(pad[2], pad[6], MASK), explained_variance(v_new, ret)
        )
        normalized = normalize_advantages(pad[5], MASK)
        torch.testing.assert_close(normalized[MASK], normalize_advantages(adv, None))
        assert torch.all(normalized[~MASK] == 0)


def test_padding_holding_nan_leaves_loss_and_gradients_untouched():
    torch.manual_seed(0)
    inputs = [torch.randn(6) for _ in range(7)]  # logp_new, entropy, values_new, old ...
    coefficients = LossCoefficients(0.2, 0.2, True, 0.01, 0.5)

    def loss_and_grads(fill: float):
        padded = [_padded(x, fill) for x in inputs]
        for x in padded[:3]:
            x.requires_grad_()
        terms = ppo_loss(*padded, MASK, coefficients)
        terms.loss.backward()
        return torch.stack(terms).detach(), [x.grad for x in padded[:3]]

    clean_terms, clean_grads = loss_and_grads(0.0)
    nan_terms, nan_grads = loss_and_grads(float("nan"))
    torch.testing.assert_close(nan_terms, clean_terms)
    for clean, nan in zip(clean_grads, nan_grads, strict=True):
        assert torch.isfinite(nan).all()
        torch.testing.assert_close(nan, clean)
        assert torch.all(nan[~MASK] == 0)


def test_garbage_in_padded_observations_changes_no_parameter_gradient():
    torch.manual_seed(0)
    policy = RecurrentActorCritic(
        2, DiscreteActions(2), NetworkConfig(actor_hidden=[8]), RNNConfig(hidden_size=8)
    )
    steps, envs = 8, 2
    dones = torch.zeros(steps, envs, dtype=torch.bool)
    dones[2, 0] = dones[4, 1] = True
    state = torch.zeros(steps, envs, 1, 8)
    rollout = Rollout(
        torch.randn(steps, envs, 2), torch.randint(0, 2, (steps, envs)),
        *(torch.randn(steps, envs) for _ in range(4)), dones, None, state, state,
        torch.tensor([True, True]),
    )  # fmt: skip
    chunks, _ = SequenceChunks(seq_len=4, minibatch_size=64, burn_in=0).prepare(rollout)
    assert chunks.mask is not None and not chunks.mask.all()
    coefficients = LossCoefficients(0.2, None, True, 0.01, 0.5)

    def grads(batch):
        policy.zero_grad()
        out = policy(batch)
        terms = ppo_loss(
            out.dist.log_prob(batch.actions), out.entropy, out.values, batch.logp, batch.values,
            batch.advantages, batch.returns, batch.mask, coefficients,
        )  # fmt: skip
        terms.loss.backward()
        return [terms.loss.detach(), *(p.grad.clone() for p in policy.parameters())]

    garbage = ~chunks.mask
    noisy = chunks._replace(
        obs=torch.where(garbage[..., None], 1e3 * torch.randn_like(chunks.obs), chunks.obs),
        actions=torch.where(garbage, 1 - chunks.actions, chunks.actions),
        logp=torch.where(garbage, torch.nan, chunks.logp),
        advantages=torch.where(garbage, torch.inf, chunks.advantages),
    )
    for clean, dirty in zip(grads(chunks), grads(noisy), strict=True):
        torch.testing.assert_close(dirty, clean, atol=0.0, rtol=0.0)
