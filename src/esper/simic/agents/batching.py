"""How a rollout becomes minibatches: the one thing that differs between feed-forward and
recurrent PPO updates.

- ``ShuffledSteps``: every step on its own, shuffled (feed-forward PPO).
- ``SequenceChunks``: episode pieces cut into chunks of at most ``seq_len`` steps, padded,
  optionally with burn-in (recurrent PPO on torch's fused cores, ``rnn.impl=torch``).
- ``Windows``: fixed windows of ``seq_len`` steps whatever the episode ends, the state reset
  inside (``rnn.impl=esper``'s kernel); every minibatch has one shape.

A strategy prepares the rollout once per update (``prepare``), plans each epoch's
minibatches as CPU index tensors (``minibatches``), and selects one either trimmed for the
eager step (``select``) or at its full, fixed shape inside a compiled step (``take``).
"""

from typing import Protocol

import torch

from esper.simic.agents.batches import Rollout, SequenceMemory, TrainingBatch
from esper.simic.agents.sequences import (
    SequenceLayout,
    build_layout,
    build_window_layout,
    chunk_minibatches,
    window_minibatches,
)

SATURATION = 0.99
"""|tanh| above which a unit counts as saturated: its tanh passes < 2% of the gradient."""


class Batching(Protocol):
    def prepare(self, rollout: Rollout) -> tuple[TrainingBatch, dict[str, torch.Tensor]]:
        """The update's batch, and 0-dim telemetry tensors read in the update's one sync."""
        ...

    def minibatches(self, batch: TrainingBatch, generator: torch.Generator) -> list[torch.Tensor]:
        """One epoch's minibatches as CPU index tensors into ``batch``."""
        ...

    def select(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        """Minibatch ``index`` for the eager step (may trim padding rows)."""
        ...

    def take(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        """Minibatch ``index`` at its full shape, reading nothing back from the device, so a
        compiled step selects it inside its graph."""
        ...


class ShuffledSteps:
    """Feed-forward PPO: the rollout flattened to ``[T * N]`` steps, shuffled each epoch."""

    def __init__(self, minibatch_size: int) -> None:
        self.minibatch_size = minibatch_size

    def prepare(self, rollout: Rollout) -> tuple[TrainingBatch, dict[str, torch.Tensor]]:
        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(-1, *t.shape[2:])

        batch = TrainingBatch(
            obs=rollout.obs.flatten(0, 1),
            actions=rollout.actions.flatten(0, 1),
            logp=rollout.logp.flatten(),
            values=rollout.values.flatten(),
            advantages=rollout.advantages.flatten(),
            returns=rollout.returns.flatten(),
            action_masks=flat(rollout.action_masks),
        )
        return batch, {}

    def minibatches(self, batch: TrainingBatch, generator: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(batch.obs.shape[0], generator=generator)
        return list(order.split(self.minibatch_size))

    def select(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        return self.take(batch, index)

    def take(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        index = index.to(batch.obs.device)
        return TrainingBatch(*(None if t is None else t[index] for t in batch))


class _Chunked:
    """Shared by the two sequence layouts: gather a rollout into ``[L, C]`` chunks."""

    def __init__(self, seq_len: int, minibatch_size: int) -> None:
        self.seq_len = seq_len
        self.minibatch_size = minibatch_size

    def _layout(self, rollout: Rollout) -> SequenceLayout:
        raise NotImplementedError

    def prepare(self, rollout: Rollout) -> tuple[TrainingBatch, dict[str, torch.Tensor]]:
        layout = self._layout(rollout)
        gather, start_state = layout.gather, layout.gather_start_state
        burn_in = layout.burn_in_index is not None
        memory = SequenceMemory(
            h0=start_state(rollout.states_h),
            c0=None if rollout.states_c is None else start_state(rollout.states_c),
            reset=layout.reset,
            starts=layout.starts,
            burn_in_obs=layout.gather_burn_in(rollout.obs) if burn_in else None,
            has_burn_in=layout.has_burn_in,
            lengths=layout.lengths,
        )
        batch = TrainingBatch(
            obs=gather(rollout.obs),
            actions=gather(rollout.actions),
            logp=gather(rollout.logp),
            values=gather(rollout.values),
            advantages=gather(rollout.advantages),
            returns=gather(rollout.returns),
            action_masks=None if rollout.action_masks is None else gather(rollout.action_masks),
            mask=layout.mask,
            memory=memory,
        )
        return batch, hidden_state_stats(rollout.states_h, rollout.states_c)

    def take(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        return _take_chunks(batch, index, rows=None)


class SequenceChunks(_Chunked):
    """Recurrent PPO on torch's fused cores: chunks split at episode starts, padded, with
    ``burn_in`` steps replayed before chunks that continue an episode (``sequences``)."""

    def __init__(self, seq_len: int, minibatch_size: int, burn_in: int) -> None:
        super().__init__(seq_len, minibatch_size)
        self.burn_in = burn_in

    def _layout(self, rollout: Rollout) -> SequenceLayout:
        return build_layout(rollout.dones, rollout.first_starts, self.seq_len, self.burn_in)

    def minibatches(self, batch: TrainingBatch, generator: torch.Generator) -> list[torch.Tensor]:
        return chunk_minibatches(_memory(batch).lengths, self.minibatch_size, generator)

    def select(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        """Trimmed to the chunks' longest valid length, so a minibatch of short chunks does
        not replay padding (no device sync: lengths are on the CPU)."""
        return _take_chunks(batch, index, rows=int(_memory(batch).lengths[index].max()))


class Windows(_Chunked):
    """``rnn.impl=esper``: each env's rollout cut every ``seq_len`` steps, starts reset
    inside the replay; ``minibatch_size / seq_len`` windows per minibatch."""

    def _layout(self, rollout: Rollout) -> SequenceLayout:
        return build_window_layout(rollout.dones, rollout.first_starts, self.seq_len)

    def minibatches(self, batch: TrainingBatch, generator: torch.Generator) -> list[torch.Tensor]:
        num_windows = batch.obs.shape[1]
        return window_minibatches(num_windows, self.minibatch_size // self.seq_len, generator)

    def select(self, batch: TrainingBatch, index: torch.Tensor) -> TrainingBatch:
        return self.take(batch, index)


def _memory(batch: TrainingBatch) -> SequenceMemory:
    if batch.memory is None:
        raise ValueError("a sequence batching strategy got a batch without sequence memory")
    return batch.memory


def _take_chunks(batch: TrainingBatch, chunks: torch.Tensor, rows: int | None) -> TrainingBatch:
    """Chunks ``chunks`` (CPU indices) of ``batch``, all rows unless ``rows``."""
    memory = _memory(batch)
    columns = chunks.to(batch.obs.device)

    def steps(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[:rows, columns]

    def per_chunk(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[columns]

    chunk_memory = SequenceMemory(
        h0=memory.h0[:, columns],
        c0=None if memory.c0 is None else memory.c0[:, columns],
        reset=memory.reset[columns],
        starts=steps(memory.starts),
        burn_in_obs=None if memory.burn_in_obs is None else memory.burn_in_obs[:, columns],
        has_burn_in=per_chunk(memory.has_burn_in),
        lengths=memory.lengths[chunks],
    )
    return TrainingBatch(
        obs=batch.obs[:rows, columns],
        actions=batch.actions[:rows, columns],
        logp=batch.logp[:rows, columns],
        values=batch.values[:rows, columns],
        advantages=batch.advantages[:rows, columns],
        returns=batch.returns[:rows, columns],
        action_masks=steps(batch.action_masks),
        mask=steps(batch.mask),
        memory=chunk_memory,
    )


def hidden_state_stats(h: torch.Tensor, c: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Health of a rollout's stored states ``[T, N, K, H]``, as 0-dim tensors (no sync).

    ``recurrent/hidden_norm`` and ``recurrent/cell_norm`` (LSTM): mean L2 norm of a state
    vector; a growing cell norm warns of saturation before it shows in h.
    ``recurrent/saturated_frac``: fraction of units whose tanh is saturated,
    |tanh(c)| > 0.99 for an LSTM (h = o * tanh(c), so tanh(c) is what saturates), and
    |h| > 0.99 for a GRU (h is a convex mix of tanh candidates, bounded by 1). Saturated
    units pass almost no gradient back through time.
    """
    stats = {"recurrent/hidden_norm": torch.linalg.vector_norm(h, dim=-1).mean()}
    if c is None:
        saturated = h.abs() > SATURATION
    else:
        stats["recurrent/cell_norm"] = torch.linalg.vector_norm(c, dim=-1).mean()
        saturated = c.tanh().abs() > SATURATION
    stats["recurrent/saturated_frac"] = saturated.float().mean()
    return stats
