"""PPO's loss (Schulman et al. 2017, arXiv:1707.06347) as pure functions of tensors.

One loss for every batch layout: with ``mask`` None every step counts; with a boolean
``mask`` (True at valid steps of padded ``[L, C]`` chunks) only valid steps do. Masked
functions first replace padded inputs by 0, so padding contributes nothing to the value
AND nothing to the gradient, even when it holds inf or NaN (masking only the output would
make the backward pass compute 0 * inf = NaN); means divide by the number of valid steps,
so a minibatch's loss is the per-step mean of the unpadded loss over the same steps.
"""

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    """The minibatch loss to minimise and its parts (the parts detached, for metrics)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    """The low-variance, unbiased k3 estimator of KL(old || new), ``(r - 1) - log r``
    (Schulman, "Approximating KL divergence", 2020, http://joschu.net/blog/kl-approx.html)."""
    clipfrac: torch.Tensor
    """Fraction of steps whose probability ratio left ``[1 - clip, 1 + clip]``."""


class LossCoefficients(NamedTuple):
    clip_coef: float | torch.Tensor
    """The surrogate's clip range: a 0-dim tensor when it follows a schedule."""
    value_clip: float | None
    norm_adv: bool
    ent_coef: float
    vf_coef: float


def valid(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` with padded entries replaced by 0."""
    return x if mask is None else torch.where(mask, x, 0.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the valid steps (0 when there are none)."""
    if mask is None:
        return x.mean()
    return valid(x, mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Unbiased variance over the valid steps, as ``Tensor.var`` computes it unmasked."""
    if mask is None:
        return x.var()
    centred = valid(x - masked_mean(x, mask), mask)
    return centred.square().sum() / (mask.sum() - 1).clamp(min=1)


def normalize_advantages(
    advantages: torch.Tensor,
    mask: torch.Tensor | None,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Zero mean, unit std over the minibatch's valid steps: the step size stops depending
    on reward scale. Padded entries become 0. ``moments`` (mean, std) are given when the
    minibatch is larger than ``advantages``: a data-parallel rank holds only its share."""
    advantages = valid(advantages, mask)
    if moments is None and mask is None:
        moments = advantages.mean(), advantages.std()
    elif moments is None:
        moments = masked_mean(advantages, mask), masked_var(advantages, mask).sqrt()
    mean, std = moments
    return valid((advantages - mean) / (std + eps), mask)


def explained_variance(
    predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target] over the valid steps: 1 is a perfect
    critic, <= 0 no better than a constant. NaN when the target is constant."""
    predicted, target = valid(predicted, mask), valid(target, mask)
    return 1.0 - masked_var(target - predicted, mask) / masked_var(target, mask)


def value_loss(
    values_new: torch.Tensor,
    values_old: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None,
    value_clip: float | None,
) -> torch.Tensor:
    """Half the mean squared error to the returns; with ``value_clip``, the pessimistic
    maximum of the clipped and unclipped errors (OpenAI baselines' PPO2, as in
    Huang et al. 2022, "The 37 Implementation Details of PPO", detail 9)."""
    values_new, values_old, returns = (valid(x, mask) for x in (values_new, values_old, returns))
    unclipped = (values_new - returns).square()
    if value_clip is None:
        return 0.5 * masked_mean(unclipped, mask)
    clipped_values = values_old + (values_new - values_old).clamp(-value_clip, value_clip)
    clipped = (clipped_values - returns).square()
    return 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)


def ppo_loss(
    logp_new: torch.Tensor,
    entropy: torch.Tensor,
    values_new: torch.Tensor,
    logp_old: torch.Tensor,
    values_old: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor | None,
    coefficients: LossCoefficients,
    advantage_moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LossTerms:
    """``L^CLIP - ent_coef * H + vf_coef * L^V`` over the valid steps: the negative clipped
    surrogate objective (eq. 7), the entropy bonus and the value loss. ``advantage_moments``
    normalise the advantages instead of their own (``normalize_advantages``)."""
    clip = coefficients.clip_coef
    if coefficients.norm_adv:
        advantages = normalize_advantages(advantages, mask, advantage_moments)
    log_ratio = valid(logp_new, mask) - valid(logp_old, mask)
    advantages = valid(advantages, mask)
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    policy_loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    v_loss = value_loss(values_new, values_old, returns, mask, coefficients.value_clip)
    mean_entropy = masked_mean(entropy, mask)
    loss = policy_loss - coefficients.ent_coef * mean_entropy + coefficients.vf_coef * v_loss
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - log_ratio, mask)
        clipfrac = masked_mean(((ratio - 1.0).abs() > clip).float(), mask)
    return LossTerms(
        loss, policy_loss.detach(), v_loss.detach(), mean_entropy.detach(), approx_kl, clipfrac
    )
