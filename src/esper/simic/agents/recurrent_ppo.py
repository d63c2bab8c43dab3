"""Recurrent PPO: the PPO update over chunks of episodes instead of shuffled steps.

Only the data layout and the forward pass differ from feed-forward PPO: the
optimiser, schedule, gradient collector, non-finite guard, target-KL stop and the
one host sync per update are ``PPOLearner``'s.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from esper.simic.agents.ppo import PPOLearner
from esper.simic.agents.recurrent import RecurrentActorCritic, hidden_state_stats
from esper.simic.agents.recurrent_losses import masked_explained_variance, sequence_ppo_loss
from esper.simic.agents.sequences import ChunkBatch, build_layout, chunk_minibatches
from esper.simic.gradients import GradientCollector
from esper.simic.settings import AgentConfig

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
        if config.compile:
            raise ValueError("agent.compile applies to feed-forward PPO only")
        super().__init__(policy, config, collector, num_updates)
        self.recurrent_policy = policy

    def learn(self, rollout: "Rollout", generator: torch.Generator) -> dict[str, float]:
        """Chunk the rollout once, then run PPO's epochs over minibatches of chunks."""
        assert rollout.states_h is not None
        layout = build_layout(
            rollout.dones, rollout.first_starts, self.config.seq_len, self.config.burn_in
        )
        chunks = ChunkBatch.from_rollout(
            layout, rollout.obs, rollout.actions, rollout.logp, rollout.values,
            rollout.advantages, rollout.returns, rollout.action_masks,
            rollout.states_h, rollout.states_c,
        )  # fmt: skip
        telemetry = hidden_state_stats(rollout.states_h, rollout.states_c)
        return self.update(chunks, generator, telemetry)

    def _minibatches(self, batch: ChunkBatch, generator: torch.Generator) -> Iterator[ChunkBatch]:
        for chunks in chunk_minibatches(batch.lengths, self.config.minibatch_size, generator):
            yield batch.select(chunks)

    def _minibatch_loss(self, batch: ChunkBatch) -> tuple[torch.Tensor, torch.Tensor]:
        config = self.config
        dist, values = self.recurrent_policy.evaluate_chunks(batch)
        entropy, head_scalars = self._entropy_terms(dist, batch.mask)
        terms = sequence_ppo_loss(
            dist.log_prob(batch.actions), entropy, values, batch.logp, batch.values,
            batch.advantages, batch.returns, batch.mask, config.clip_coef, config.value_clip,
            config.norm_adv, config.ent_coef, config.vf_coef,
        )  # fmt: skip
        return terms.loss, torch.cat([torch.stack(terms[1:]), head_scalars]).detach()

    def _explained_variance(self, batch: ChunkBatch) -> torch.Tensor:
        return masked_explained_variance(batch.values, batch.returns, batch.mask)
