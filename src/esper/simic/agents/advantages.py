"""Generalised advantage estimation with time-limit bootstrapping."""

import torch


def bootstrap_truncated(
    rewards: torch.Tensor, truncated: torch.Tensor, final_values: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Fold the value of a truncated episode's final state into its last reward.

    A time limit is not part of the task, so the return after truncation is the
    value of the state the episode stopped in (Pardo et al. 2018, arXiv:1712.00378),
    not zero. Adding ``gamma * V(s_final)`` to the last reward lets GAE then treat
    every episode end alike (as Stable-Baselines3 does in ``collect_rollouts``).
    Shapes: all ``[T, N]``; ``final_values`` is read only where ``truncated``.
    """
    return rewards + gamma * torch.where(truncated, final_values, torch.zeros_like(final_values))


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE(lambda) (Schulman et al. 2016, arXiv:1506.02438, eq. 16).

    ``rewards, values, dones``: ``[T, N]``, where ``dones[t]`` marks that the episode
    ended with the transition taken at step ``t`` (terminated or truncated; truncation
    is already bootstrapped into ``rewards``). ``next_value``: ``[N]``, the value of
    the observation after the last step. Returns ``(advantages, returns)``, ``[T, N]``.
    """
    not_done = 1.0 - dones.to(rewards.dtype)
    # Everything but the recursion itself at once: the TD errors and the decay factors
    # (the same arithmetic, in the same order, as computing them step by step).
    following_values = torch.cat([values[1:], next_value.unsqueeze(0)])
    deltas = rewards + gamma * following_values * not_done - values
    decays = gamma * gae_lambda * not_done
    last_advantage = torch.zeros_like(next_value)
    advantages = []
    for delta, decay in zip(reversed(deltas.unbind(0)), reversed(decays.unbind(0)), strict=True):
        last_advantage = delta + decay * last_advantage
        advantages.append(last_advantage)
    advantages_t = torch.stack(advantages[::-1])
    return advantages_t, advantages_t + values
