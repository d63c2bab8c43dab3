"""The data that flows from the rollout to the learner: plain tuples of tensors.

They live here, below both users, so the learner and the batching strategies never
import the rollout (which imports gymnasium) to name what it hands them.
"""

from typing import NamedTuple

import torch


class Rollout(NamedTuple):
    """One rollout with its advantages; step tensors are ``[T, N, ...]`` (time, env)."""

    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    dones: torch.Tensor
    """The episode ended with this step's transition."""
    action_masks: torch.Tensor | None
    states_h: torch.Tensor
    """[T, N, K, H]: the policy's state before each step (K = 0 for feed-forward)."""
    states_c: torch.Tensor | None
    """[T, N, K, H]: an LSTM's cell state before each step; None otherwise."""
    first_starts: torch.Tensor
    """[N] bool: an episode begins at step 0."""


class SequenceMemory(NamedTuple):
    """What a recurrent policy needs to replay chunks ``[L, C]`` of a rollout."""

    h0: torch.Tensor
    """[K, C, H]: each chunk's start state."""
    c0: torch.Tensor | None
    reset: torch.Tensor
    """[C] bool: replace the start state by the initial state."""
    starts: torch.Tensor | None
    """[L, C] bool: episode starts inside chunks (windows); None when chunks are split there."""
    burn_in_obs: torch.Tensor | None
    """[burn_in, C, ...] observations replayed without gradient before each chunk."""
    has_burn_in: torch.Tensor | None
    """[C] bool: the chunk is preceded by burn-in steps."""
    lengths: torch.Tensor
    """[C] valid steps per chunk, on the CPU (host-side minibatch planning)."""


class TrainingBatch(NamedTuple):
    """A rollout, or a minibatch of it, as the learner trains on it.

    Shuffled steps are ``[B, ...]`` with no ``mask`` and no ``memory``; sequence chunks are
    ``[L, C, ...]`` with ``mask`` (True at valid steps) and the ``memory`` to replay them.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    action_masks: torch.Tensor | None
    mask: torch.Tensor | None = None
    memory: SequenceMemory | None = None


class Minibatch(NamedTuple):
    """A minibatch as its indices into the update's batch, for the compiled step: gathered
    inside the step's graph, the selection fuses into the loss instead of costing an
    indexing call per field and step."""

    batch: TrainingBatch
    index: torch.Tensor
