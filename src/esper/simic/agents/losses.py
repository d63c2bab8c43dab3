"""PPO's loss terms as pure functions of tensors (Schulman et al. 2017, arXiv:1707.06347)."""

from typing import NamedTuple

import torch


class PolicyLossTerms(NamedTuple):
    loss: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor


def clipped_surrogate_loss(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantages: torch.Tensor,
    clip_coef: float | torch.Tensor,
) -> PolicyLossTerms:
    """Negative clipped surrogate objective L^CLIP (eq. 7), averaged over the batch.

    ``approx_kl`` is the low-variance, unbiased k3 estimator of KL(old || new),
    ``(r - 1) - log r`` (Schulman, "Approximating KL divergence", 2020,
    http://joschu.net/blog/kl-approx.html); ``clipfrac`` is the fraction of samples
    whose ratio left ``[1 - clip, 1 + clip]``.
    """
    log_ratio = logp_new - logp_old
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return PolicyLossTerms(loss, approx_kl, clipfrac)


def value_loss(
    values_new: torch.Tensor,
    values_old: torch.Tensor,
    returns: torch.Tensor,
    value_clip: float | None,
) -> torch.Tensor:
    """Half the mean squared error to the returns; with ``value_clip``, the pessimistic
    maximum of the clipped and unclipped errors (OpenAI baselines' PPO2, as in
    Huang et al. 2022, "The 37 Implementation Details of PPO", detail 9)."""
    unclipped = (values_new - returns).square()
    if value_clip is None:
        return 0.5 * unclipped.mean()
    clipped_values = values_old + (values_new - values_old).clamp(-value_clip, value_clip)
    clipped = (clipped_values - returns).square()
    return 0.5 * torch.maximum(unclipped, clipped).mean()


def normalize_advantages(advantages: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit std per minibatch: the step size stops depending on reward scale."""
    return (advantages - advantages.mean()) / (advantages.std() + eps)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target]: 1 is a perfect critic, <= 0 no better than
    a constant. NaN when the target is constant."""
    return 1.0 - (target - predicted).var() / target.var()
