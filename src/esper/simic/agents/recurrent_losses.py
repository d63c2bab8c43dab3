"""PPO's loss terms and statistics over padded sequences: only valid steps count.

Masked counterparts of ``losses.py`` (Schulman et al. 2017, arXiv:1707.06347) for ``[L, B]``
chunks with a boolean ``mask`` (True at valid steps). Every function first replaces its
inputs' padded entries by 0, so padding contributes nothing to the value AND nothing to
the gradient, even when it holds inf or NaN: masking only the output would not do, as a
non-finite padded input makes the backward pass compute 0 * inf = NaN. Means divide by
the number of valid steps, so a minibatch's loss is the per-step mean of the unpadded
PPO loss over the same steps.
"""

from typing import NamedTuple

import torch

from esper.simic.agents.losses import PolicyLossTerms


def _valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, 0.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the valid steps (0 when there are none)."""
    return _valid(x, mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance over the valid steps, as ``Tensor.var`` computes it unmasked."""
    centred = _valid(x - masked_mean(x, mask), mask)
    return centred.square().sum() / (mask.sum() - 1).clamp(min=1)


def masked_normalize_advantages(
    advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Zero mean, unit std over the valid steps; padded entries become 0."""
    advantages = _valid(advantages, mask)
    mean = masked_mean(advantages, mask)
    return _valid((advantages - mean) / (masked_var(advantages, mask).sqrt() + eps), mask)


def masked_clipped_surrogate_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float | torch.Tensor,
) -> PolicyLossTerms:
    """``losses.clipped_surrogate_loss`` over the valid steps: the negative clipped
    surrogate, the k3 approximate KL and the clip fraction."""
    log_ratio = _valid(logp_new, mask) - _valid(logp_old, mask)
    advantages = _valid(advantages, mask)
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip_coef).float(), mask)
    return PolicyLossTerms(loss, approx_kl, clipfrac)


def masked_value_loss(
    values_new: torch.Tensor,
    values_old: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    value_clip: float | None,
) -> torch.Tensor:
    """``losses.value_loss`` (half MSE, optionally the pessimistic clipped variant) over
    the valid steps."""
    values_new, values_old, returns = (_valid(x, mask) for x in (values_new, values_old, returns))
    unclipped = (values_new - returns).square()
    if value_clip is None:
        return 0.5 * masked_mean(unclipped, mask)
    clipped_values = values_old + (values_new - values_old).clamp(-value_clip, value_clip)
    clipped = (clipped_values - returns).square()
    return 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)


def masked_explained_variance(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``losses.explained_variance`` over the valid steps (NaN when the target is constant)."""
    predicted, target = _valid(predicted, mask), _valid(target, mask)
    return 1.0 - masked_var(target - predicted, mask) / masked_var(target, mask)


class SequenceLossTerms(NamedTuple):
    """The minibatch loss and its parts (scalars in ``ppo.STEP_METRICS`` order after it)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def sequence_ppo_loss(
    logp_new: torch.Tensor,
    entropy: torch.Tensor,
    values_new: torch.Tensor,
    logp_old: torch.Tensor,
    values_old: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_coef: float | torch.Tensor,
    value_clip: float | None,
    norm_adv: bool,
    ent_coef: float,
    vf_coef: float,
) -> SequenceLossTerms:
    """PPO's total loss, ``L^CLIP - ent_coef * H + vf_coef * L^V``, over the valid steps
    of ``[L, B]`` tensors, with advantages normalised over the minibatch's valid steps."""
    if norm_adv:
        advantages = masked_normalize_advantages(advantages, mask)
    policy = masked_clipped_surrogate_loss(logp_new, logp_old, advantages, mask, clip_coef)
    v_loss = masked_value_loss(values_new, values_old, returns, mask, value_clip)
    mean_entropy = masked_mean(entropy, mask)
    loss = policy.loss - ent_coef * mean_entropy + vf_coef * v_loss
    return SequenceLossTerms(
        loss, policy.loss, v_loss, mean_entropy, policy.approx_kl, policy.clipfrac
    )
