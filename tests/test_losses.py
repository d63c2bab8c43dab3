"""PPO's loss pieces against values computed by hand."""

import math

import pytest
import torch

from esper.simic.agents.losses import (
    clipped_surrogate_loss,
    explained_variance,
    normalize_advantages,
    value_loss,
)


def test_surrogate_equals_minus_advantage_weighted_ratio_inside_the_clip_range():
    logp_old = torch.zeros(2)
    logp_new = torch.log(torch.tensor([1.1, 0.95]))
    adv = torch.tensor([2.0, -1.0])
    terms = clipped_surrogate_loss(logp_new, logp_old, adv, clip_coef=0.2)
    assert terms.loss.item() == pytest.approx(-(1.1 * 2.0 + 0.95 * -1.0) / 2)
    assert terms.clipfrac.item() == 0.0


def test_surrogate_clips_only_in_the_direction_that_would_overshoot():
    logp_old = torch.zeros(4)
    logp_new = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    terms = clipped_surrogate_loss(logp_new, logp_old, adv, clip_coef=0.2)
    # min(r*A, clip(r)*A): 1.2, -1.5, 0.5, -0.8 (pessimistic bound, eq. 7)
    assert terms.loss.item() == pytest.approx(-(1.2 - 1.5 + 0.5 - 0.8) / 4)
    assert terms.clipfrac.item() == 1.0


def test_surrogate_gradient_vanishes_where_clipped():
    logp_new = torch.log(torch.tensor([1.5, 1.1])).requires_grad_()
    terms = clipped_surrogate_loss(logp_new, torch.zeros(2), torch.ones(2), clip_coef=0.2)
    terms.loss.backward()
    assert logp_new.grad[0].item() == 0.0
    assert logp_new.grad[1].item() == pytest.approx(-1.1 / 2)


def test_approx_kl_is_the_k3_estimator():
    ratio = torch.tensor([0.5, 2.0])
    terms = clipped_surrogate_loss(ratio.log(), torch.zeros(2), torch.ones(2), clip_coef=0.2)
    expected = ((0.5 - 1 - math.log(0.5)) + (2.0 - 1 - math.log(2.0))) / 2
    assert terms.approx_kl.item() == pytest.approx(expected)


def test_value_loss_unclipped_is_half_mse():
    loss = value_loss(torch.tensor([1.0, 3.0]), torch.zeros(2), torch.tensor([0.0, 1.0]), None)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 4.0) / 2)


def test_value_clip_takes_the_pessimistic_error():
    new = torch.tensor([2.0, 0.05])
    old = torch.tensor([0.0, 0.0])
    returns = torch.tensor([2.0, 1.0])
    loss = value_loss(new, old, returns, value_clip=0.1)
    # sample 0: unclipped 0, clipped (0.1-2)^2 = 3.61 -> 3.61
    # sample 1: unclipped 0.9025, clipped (0.05-1)^2 = 0.9025 -> 0.9025
    assert loss.item() == pytest.approx(0.5 * (3.61 + 0.9025) / 2)


def test_normalized_advantages_have_zero_mean_unit_std():
    adv = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv.std().item() == pytest.approx(1.0, abs=1e-6)


def test_explained_variance_perfect_constant_and_worse():
    target = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((3,), 2.0), target).item() == pytest.approx(0.0)
    assert explained_variance(-target, target).item() < 0
