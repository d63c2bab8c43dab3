"""Learner steps run once in one process and once split over two gloo ranks.

A module of its own: ``torch.multiprocessing.spawn`` imports its worker by name in the
child processes.
"""

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from gymnasium.wrappers.utils import RunningMeanStd

from esper.simic.agents.batches import Rollout
from esper.simic.agents.data_parallel import DataParallel
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.ppo import PPOLearner
from esper.simic.assembly import build_batching, build_policy
from esper.simic.distributed import local_settings, synced_statistics
from esper.simic.envs.tensor_wrappers import TensorRunningMeanStd
from esper.simic.gradients import build_collector
from esper.simic.settings import SimicConfig
from esper.simic.testing import compose_settings

OBS_DIM, NUM_ENVS, NUM_STEPS = 4, 4, 16


def settings_for(overrides: list[str]) -> SimicConfig:
    """A learner config whose one minibatch is the whole rollout (the split is then exact)."""
    return compose_settings(
        [
            "+experiment=cartpole_ppo",
            f"env.num_envs={NUM_ENVS}",
            f"agent.num_steps={NUM_STEPS}",
            f"agent.minibatch_size={NUM_ENVS * NUM_STEPS}",
            "agent.update_epochs=2",
            *overrides,
        ]
    )[0]


def synthetic_rollout(settings: SimicConfig, seed: int = 0) -> Rollout:
    """A rollout of random steps with episode ends, for the policy ``settings`` builds."""
    gen = torch.Generator().manual_seed(seed)
    shape = (NUM_STEPS, NUM_ENVS)
    rnn = settings.agent.rnn
    layers = 0 if rnn is None else rnn.num_layers * (1 if rnn.shared_core else 2)
    hidden = 0 if rnn is None else rnn.hidden_size
    states_shape = (*shape, layers, hidden)
    lstm = rnn is not None and rnn.type.value == "lstm"
    return Rollout(
        obs=torch.randn(*shape, OBS_DIM, generator=gen),
        actions=torch.randint(0, 2, shape, generator=gen),
        logp=-torch.rand(shape, generator=gen) - 0.2,
        values=torch.randn(shape, generator=gen),
        advantages=torch.randn(shape, generator=gen) * 3 + 1,
        returns=torch.randn(shape, generator=gen),
        dones=torch.rand(shape, generator=gen) < 0.1,
        action_masks=None,
        states_h=torch.randn(states_shape, generator=gen) * 0.3,
        states_c=torch.randn(states_shape, generator=gen) * 0.3 if lstm else None,
        first_starts=torch.tensor([True, False, True, False]),
    )


def env_columns(rollout: Rollout, start: int, stop: int) -> Rollout:
    """Envs ``start:stop`` of a rollout: what one rank would have collected."""
    fields = {}
    for name, value in rollout._asdict().items():
        if value is None:
            fields[name] = None
        elif name == "first_starts":
            fields[name] = value[start:stop]
        else:
            fields[name] = value[:, start:stop]
    return Rollout(**fields)


def learn(
    settings: SimicConfig, rollout: Rollout, data_parallel: DataParallel | None
) -> dict[str, Any]:
    """One update (two gradient steps on the whole minibatch); the weights after it."""
    torch.manual_seed(0)  # the same initial weights in every process
    policy = build_policy(settings.agent, OBS_DIM, DiscreteActions(2)).to("cpu")
    world = 1 if data_parallel is None else data_parallel.world_size
    local = local_settings(settings, world)
    learner = PPOLearner(
        policy,
        settings.agent,
        build_collector(settings.collector),
        build_batching(local.agent),
        num_updates=10,
        data_parallel=data_parallel,
    )
    metrics = learner.learn(rollout, torch.Generator().manual_seed(0))
    return {"weights": {k: v.detach().clone() for k, v in policy.state_dict().items()},
            "metrics": metrics}  # fmt: skip


def rank_worker(rank: int, world: int, store: str, out: str, overrides: list[str]) -> None:
    """Rank ``rank`` of ``world``: its env columns of the rollout, written to ``out``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        settings = settings_for(overrides)
        share = NUM_ENVS // world
        rollout = env_columns(synthetic_rollout(settings), rank * share, (rank + 1) * share)
        torch.save(learn(settings, rollout, DataParallel()), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def statistics_batches(seed: int = 0) -> list[np.ndarray]:
    """Three batches of 6 rows of two features, rows of both ranks together."""
    rng = np.random.default_rng(seed)
    return [rng.normal(loc=i, scale=1 + i, size=(6, 2)) for i in range(3)]


def reward_batches(seed: int = 0) -> list[torch.Tensor]:
    """Three batches of 6 discounted returns (a tensor env's reward normaliser's input)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(6, generator=gen) * (1 + i) + i for i in range(3)]


def statistics_worker(rank: int, world: int, store: str, out: str) -> None:
    """Rank ``rank`` folds its rows of each batch into synced statistics: gymnasium's
    (observations) and a tensor env's (rewards)."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        share = 6 // world
        rows = slice(rank * share, (rank + 1) * share)
        numpy_stats = synced_statistics(RunningMeanStd(shape=(2,)))
        tensor_stats = synced_statistics(TensorRunningMeanStd(torch.device("cpu")))
        for batch, rewards in zip(statistics_batches(), reward_batches(), strict=True):
            numpy_stats.update(batch[rows])
            tensor_stats.update(rewards[rows])
        state = {
            name: {"mean": s.mean, "var": s.var, "count": s.count}
            for name, s in (("numpy", numpy_stats), ("tensor", tensor_stats))
        }
        torch.save(state, Path(out) / f"stats{rank}.pt")
    finally:
        dist.destroy_process_group()
