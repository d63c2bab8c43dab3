"""What the recurrent tests hold the policy's fast paths against: its modules, stepped or
replayed through torch's fused cores one call at a time."""

import torch

from esper.simic.agents.batches import SequenceMemory, TrainingBatch
from esper.simic.agents.policy import PolicyState
from esper.simic.agents.recurrent import RecurrentActorCritic


def replay(policy: RecurrentActorCritic, obs, state: PolicyState, episode_start, mask=None):
    """``obs`` [L, B, D] through the fused cores from ``state`` (reset first where
    ``episode_start`` [B]) -> (distribution [L, B], values [L, B], final state)."""
    actor, critic, final = policy._features(obs, state, episode_start)
    return policy.action_head(actor, mask), policy.value_head(critic).squeeze(-1), final


def reference_step(policy: RecurrentActorCritic, obs, state, episode_start, mask=None):
    """One step ``obs`` [N, D] through the modules -> (distribution, value, next state)."""
    with torch.no_grad():
        actor, critic, final = policy._features(obs.unsqueeze(0), state, episode_start)
        value = policy.value_head(critic[0]).squeeze(-1)
        return policy.action_head(actor[0], mask), value, final


def window_batch(obs, state: PolicyState, starts, mask=None) -> TrainingBatch:
    """Chunks ``[L, B]`` holding episode starts anywhere (``starts`` [L, B]), from ``state``."""
    return _chunk_batch(obs, state, torch.zeros(obs.shape[1], dtype=torch.bool), mask, starts)


def chunk_batch(obs, state: PolicyState, reset, mask=None) -> TrainingBatch:
    """Chunks ``[L, B]`` that start an episode only at row 0 where ``reset`` [B]."""
    return _chunk_batch(obs, state, reset, mask, None)


def _chunk_batch(obs, state, reset, mask, starts) -> TrainingBatch:
    length, width = obs.shape[:2]
    empty = torch.zeros(length, width)
    memory = SequenceMemory(
        state.h, state.c, reset, starts, None, None, torch.full((width,), length)
    )
    return TrainingBatch(obs, empty.long(), empty, empty, empty, empty, mask, None, memory)
