"""Recurrent PPO: the PPO update over chunks of episodes instead of shuffled steps.

Only the data layout and the forward pass differ from feed-forward PPO: the
optimiser, schedule, gradient collector, non-finite guard, target-KL stop and the
one host sync per update are ``PPOLearner``'s.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch.distributions import Distribution
from torch.func import functional_call

from esper.simic.agents.ppo import Minibatch, PPOLearner
from esper.simic.agents.recurrent import RecurrentActorCritic, hidden_state_stats
from esper.simic.agents.recurrent_losses import masked_explained_variance, sequence_ppo_loss
from esper.simic.agents.sequences import (
    ChunkBatch,
    build_layout,
    build_window_layout,
    chunk_minibatches,
)
from esper.simic.gradients import AsyncGradientStats, GradientCollector
from esper.simic.settings import AgentConfig, RNNImpl

if TYPE_CHECKING:
    from esper.simic.rollout import Rollout


class RecurrentPPOLearner(PPOLearner):
    """Truncated BPTT over chunks of at most ``agent.seq_len`` steps (``sequences.py``)."""

    def __init__(
        self,
        policy: RecurrentActorCritic,
        config: AgentConfig,
        collector: GradientCollector,
        num_updates: int,
    ) -> None:
        if config.compile and (config.rnn is None or config.rnn.impl is not RNNImpl.esper):
            raise ValueError("recurrent PPO compiles its step with agent.rnn.impl=esper only")
        super().__init__(policy, config, collector, num_updates)
        self.recurrent_policy = policy

    def learn(self, rollout: "Rollout", generator: torch.Generator) -> dict[str, float]:
        """Chunk the rollout once, then run PPO's epochs over minibatches of chunks."""
        assert rollout.states_h is not None
        config = self.config
        assert config.rnn is not None
        layout = (
            build_window_layout(rollout.dones, rollout.first_starts, config.seq_len)
            if config.rnn.impl is RNNImpl.esper
            else build_layout(rollout.dones, rollout.first_starts, config.seq_len, config.burn_in)
        )
        chunks = ChunkBatch.from_rollout(
            layout, rollout.obs, rollout.actions, rollout.logp, rollout.values,
            rollout.advantages, rollout.returns, rollout.action_masks,
            rollout.states_h, rollout.states_c,
        )  # fmt: skip
        telemetry = hidden_state_stats(rollout.states_h, rollout.states_c)
        return self.update(chunks, generator, telemetry)

    def _gradient_step(
        self, batch: ChunkBatch | Minibatch
    ) -> tuple[torch.Tensor, AsyncGradientStats]:
        if self._compiled_step is None:
            return super()._gradient_step(batch)
        # The compiled step reads the LSTM modules' weights (never calls them), which dynamo
        # refuses to touch unless told that RNN modules are fine to trace.
        with torch._dynamo.config.patch(allow_rnn=True):
            return super()._gradient_step(batch)

    def _minibatches(
        self, batch: ChunkBatch, generator: torch.Generator
    ) -> Iterator[ChunkBatch | Minibatch]:
        """Shuffled minibatches of whole chunks (as ``Minibatch`` indices for the compiled
        step, which selects them in its graph: windows need no trimming of rows)."""
        for chunks in chunk_minibatches(batch.lengths, self.config.minibatch_size, generator):
            yield batch.select(chunks) if self._compiled_step is None else Minibatch(batch, chunks)

    def _minibatch_loss(self, batch: ChunkBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sequence_objective(*self.recurrent_policy(batch), batch)

    def _functional_loss(
        self, params: tuple[torch.Tensor, ...], minibatch: Minibatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = minibatch.batch.take(minibatch.index)
        parameters = dict(zip(self._names, params, strict=True))
        dist, values = functional_call(self.policy, parameters, (batch,))
        return self._sequence_objective(dist, values, batch)

    def _sequence_objective(
        self, dist: Distribution, values: torch.Tensor, batch: ChunkBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PPO's objective over the valid steps of ``batch`` and its terms (``STEP_METRICS``)."""
        config = self.config
        entropy, head_scalars = self._entropy_terms(dist, batch.mask)
        terms = sequence_ppo_loss(
            dist.log_prob(batch.actions), entropy, values, batch.logp, batch.values,
            batch.advantages, batch.returns, batch.mask, self.clip_coef, config.value_clip,
            config.norm_adv, config.ent_coef, config.vf_coef,
        )  # fmt: skip
        return terms.loss, torch.cat([torch.stack(terms[1:]), head_scalars]).detach()

    def _explained_variance(self, batch: ChunkBatch) -> torch.Tensor:
        return masked_explained_variance(batch.values, batch.returns, batch.mask)
