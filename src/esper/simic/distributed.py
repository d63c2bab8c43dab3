"""One run over several processes: who this process is, the process group, and what the
ranks must agree on.

``torchrun`` (one machine or several) exports the ranks in the standard variables; a
multi-task SLURM job started by submitit (``hydra/launcher=slurm`` or ``slurm_local`` with
``tasks_per_node``) has them exported by submitit's own ``TorchDistributedEnvironment``.
Either way ``torch.distributed`` initialises from the environment (``env://``).

``env.num_envs`` and ``agent.minibatch_size`` are the run's totals, split evenly over the
ranks, so one config describes the same run at any world size.
"""

import dataclasses
import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from gymnasium.wrappers.utils import RunningMeanStd

from esper.simic.envs.tensor_wrappers import TensorRunningMeanStd
from esper.simic.settings import DistBackend, SimicConfig

RANK_SEED_STRIDE = 104_729
"""Rank k's action sampling and minibatch shuffling draw from ``seed + k * stride``."""


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 owns the run dir, console, W&B run, evaluation and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def detect_ranks() -> Ranks:
    """The ranks the launcher started: ``torchrun``'s variables, else a submitit job's
    tasks (exported as ``torchrun`` would), else one process."""
    if "WORLD_SIZE" not in os.environ and os.environ.get("SUBMITIT_EXECUTOR"):
        # Imported here: only a submitit job pays for it.
        import submitit  # noqa: PLC0415

        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    return Ranks(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def backend_name(settings: SimicConfig) -> str:
    backend = settings.distributed.backend
    if backend is DistBackend.auto:
        return "nccl" if settings.trainer.device.startswith("cuda") else "gloo"
    return backend.value


def start(settings: SimicConfig, ranks: Ranks) -> None:
    """Join the process group (once per process; sweeps run several jobs in one)."""
    if not ranks.distributed or dist.is_initialized():
        return
    backend = backend_name(settings)
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, timeout=timedelta(seconds=settings.distributed.timeout_s))


def local_settings(settings: SimicConfig, world_size: int) -> SimicConfig:
    """One rank's share of the run: its envs and its part of every minibatch."""
    if world_size == 1:
        return settings
    env = dataclasses.replace(settings.env, num_envs=settings.env.num_envs // world_size)
    agent = dataclasses.replace(
        settings.agent, minibatch_size=settings.agent.minibatch_size // world_size
    )
    return dataclasses.replace(settings, env=env, agent=agent)


def env_seed(seed: int, ranks: Ranks, local_envs: int) -> int:
    """Rank k's envs take the seeds envs ``k * local_envs ...`` of one process would."""
    return seed + ranks.rank * local_envs


def sampling_seed(seed: int, ranks: Ranks) -> int:
    return seed + ranks.rank * RANK_SEED_STRIDE


def lost_ranks(error: RuntimeError) -> bool:
    """Whether a collective failed because another rank died or stalled past the timeout.

    NCCL raises ``DistError``; gloo reports a closed connection or a timeout as a plain
    ``RuntimeError`` from its transport, whose message names gloo.
    """
    return isinstance(error, dist.DistError) or "gloo" in str(error)


def broadcast(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank (itself when alone)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    values: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(values, value)
    return values


Statistics = RunningMeanStd | TensorRunningMeanStd


class SyncedRunningMeanStd(RunningMeanStd):
    """gymnasium's running statistics, each update folding in every rank's batch: all
    ranks hold the statistics one process stepping all envs would have."""

    def update(self, x: np.ndarray) -> None:
        batch = np.asarray(x, dtype=np.float64)
        count = batch.shape[0]
        local = np.concatenate([[count], batch.sum(0).ravel(), np.square(batch).sum(0).ravel()])
        summed = sum_over_ranks(torch.from_numpy(local)).numpy()
        size = int(np.prod(self.mean.shape, dtype=np.int64))
        count_all = summed[0]
        mean = summed[1 : 1 + size] / count_all
        var = summed[1 + size :] / count_all - np.square(mean)
        shape = self.mean.shape
        self.update_from_moments(mean.reshape(shape), np.maximum(var, 0).reshape(shape), count_all)


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every rank (in place)."""
    dist.all_reduce(tensor)
    return tensor


def synced_statistics(statistics: Statistics) -> Statistics:
    """The same statistics, updated across ranks from now on: gymnasium's NumPy ones are
    replaced, a tensor env's (``TensorRunningMeanStd``) sum their moments over ranks."""
    if isinstance(statistics, TensorRunningMeanStd):
        statistics.sum_over_ranks = sum_over_ranks
        return statistics
    synced = SyncedRunningMeanStd(epsilon=statistics.count, shape=statistics.mean.shape)
    synced.mean, synced.var, synced.count = statistics.mean, statistics.var, statistics.count
    return synced
