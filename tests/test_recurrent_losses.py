"""Masked PPO losses: padded steps change neither the loss nor any gradient."""

import gymnasium as gym
import pytest
import torch

from esper.simic.agents.losses import (
    clipped_surrogate_loss,
    explained_variance,
    normalize_advantages,
    value_loss,
)
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.agents.recurrent_losses import (
    masked_clipped_surrogate_loss,
    masked_explained_variance,
    masked_mean,
    masked_normalize_advantages,
    masked_value_loss,
    sequence_ppo_loss,
)
from esper.simic.agents.sequences import ChunkBatch, build_layout
from esper.simic.settings import NetworkConfig, RNNConfig

MASK = torch.tensor([[True, True, True], [True, False, True], [False, False, True]])


pytestmark = pytest.mark.usefixtures("one_thread")


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
    logp_new, logp_old, adv, v_new, v_old, ret = (torch.randn(6) * 0.5 for _ in range(6))
    for fill in (float("nan"), float("inf"), 1e6):
        pad = [_padded(x, fill) for x in (logp_new, logp_old, adv, v_new, v_old, ret)]
        masked = masked_clipped_surrogate_loss(pad[0], pad[1], pad[2], MASK, 0.2)
        plain = clipped_surrogate_loss(logp_new, logp_old, adv, 0.2)
        for a, b in zip(masked, plain, strict=True):
            torch.testing.assert_close(a, b)
        for clip in (None, 0.1):
            torch.testing.assert_close(
                masked_value_loss(pad[3], pad[4], pad[5], MASK, clip),
                value_loss(v_new, v_old, ret, clip),
            )
        torch.testing.assert_close(
            masked_explained_variance(pad[3], pad[5], MASK), explained_variance(v_new, ret)
        )
        normalized = masked_normalize_advantages(pad[2], MASK)
        torch.testing.assert_close(normalized[MASK], normalize_advantages(adv))
        assert torch.all(normalized[~MASK] == 0)


def test_padding_holding_nan_leaves_loss_and_gradients_untouched():
    torch.manual_seed(0)
    inputs = [torch.randn(6) for _ in range(7)]  # logp_new, entropy, values_new, old ...

    def loss_and_grads(fill: float):
        padded = [_padded(x, fill) for x in inputs]
        logp_new = padded[0].requires_grad_()
        entropy = padded[1].requires_grad_()
        values_new = padded[2].requires_grad_()
        terms = sequence_ppo_loss(
            logp_new, entropy, values_new, *padded[3:], MASK,
            clip_coef=0.2, value_clip=0.2, norm_adv=True, ent_coef=0.01, vf_coef=0.5,
        )  # fmt: skip
        terms.loss.backward()
        return torch.stack(terms), [x.grad for x in (logp_new, entropy, values_new)]

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
        2, gym.spaces.Discrete(2), NetworkConfig(actor_hidden=[8]), RNNConfig(hidden_size=8)
    )
    steps, envs = 8, 2
    dones = torch.zeros(steps, envs, dtype=torch.bool)
    dones[2, 0] = dones[4, 1] = True
    layout = build_layout(dones, torch.tensor([True, True]), seq_len=4)
    assert not layout.mask.all()
    state = torch.zeros(steps, envs, 1, 8)
    rollout = [torch.randn(steps, envs) for _ in range(4)]
    actions = torch.randint(0, 2, (steps, envs))
    chunks = ChunkBatch.from_rollout(
        layout, torch.randn(steps, envs, 2), actions, *rollout, None, state, state
    )

    def grads(batch: ChunkBatch) -> list[torch.Tensor]:
        policy.zero_grad()
        dist, values = policy.evaluate_chunks(batch)
        terms = sequence_ppo_loss(
            dist.log_prob(batch.actions), dist.entropy(), values, batch.logp, batch.values,
            batch.advantages, batch.returns, batch.mask,
            clip_coef=0.2, value_clip=None, norm_adv=True, ent_coef=0.01, vf_coef=0.5,
        )  # fmt: skip
        terms.loss.backward()
        return [terms.loss.detach(), *(p.grad.clone() for p in policy.parameters())]

    garbage = ~layout.mask
    noisy = chunks._replace(
        obs=torch.where(garbage[..., None], 1e3 * torch.randn_like(chunks.obs), chunks.obs),
        actions=torch.where(garbage, 1 - chunks.actions, chunks.actions),
        logp=torch.where(garbage, torch.nan, chunks.logp),
        advantages=torch.where(garbage, torch.inf, chunks.advantages),
    )
    for clean, dirty in zip(grads(chunks), grads(noisy), strict=True):
        torch.testing.assert_close(dirty, clean, atol=0.0, rtol=0.0)
