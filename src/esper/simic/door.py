"""What runs once, before Hydra creates a run dir or starts a job.

Registered as a Hydra callback (``conf/config.yaml``), so it reads the config Hydra itself
composed: a single run's settings are checked (one line and exit 2 on a problem), and
``agent.rnn.impl=esper``'s LSTM kernel is built or loaded here, at a run's or a sweep's
start, rather than in N jobs at once; a failed build is passed on to the jobs
(``lstm_resets.KERNEL_VARIABLE``) so that they use the pure-PyTorch kernel straight away.
"""

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from esper.simic import distributed
from esper.simic.agents import lstm_resets
from esper.simic.app import check, fail
from esper.simic.distributed import Ranks
from esper.simic.settings import RNNImpl

IMPL_KEY = "agent.rnn.impl"


def sweep_uses_kernel(config: DictConfig) -> bool:
    """Whether any job of a sweep may ask for ``agent.rnn.impl=esper``: the base config, a
    swept override (``agent.rnn.impl=torch,esper``) or a sweeper's search space."""
    base = OmegaConf.select(config, IMPL_KEY)
    if getattr(base, "value", base) == RNNImpl.esper.value:
        return True
    overrides = [o.partition("=") for o in OmegaConf.select(config, "hydra.overrides.task")]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    swept = [(key, str(value)) for key, _, value in overrides] + [
        (str(key), str(value)) for key, value in params.items()
    ]
    return any(key.lstrip("+~").endswith(IMPL_KEY) and "esper" in v for key, v in swept)


def share_run_dir(config: DictConfig, ranks: Ranks) -> None:
    """Every rank of a ``torchrun`` run writes into rank 0's run dir: a timestamped
    ``hydra.run.dir`` resolved a second apart would otherwise split the run. Rank 0 alone
    keeps Hydra's ``.hydra/`` record and logs to the console; the others log to
    ``<job>.rank<k>.log`` beside it."""
    run_dir = distributed.broadcast(str(config.hydra.run.dir), ranks)
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.run.dir = run_dir
        if not ranks.main:
            config.hydra.output_subdir = None
            logging = config.hydra.job_logging
            if OmegaConf.select(logging, "handlers.file") is not None:
                logging.handlers.file.filename = (
                    f"{run_dir}/{config.hydra.job.name}.rank{ranks.rank}.log"
                )
                logging.root.handlers = ["file"]  # rank 0 alone writes to the console


class Door(Callback):
    """Checks a single run before its dir exists; builds the LSTM kernel once per launch."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        ranks = distributed.detect_ranks()
        settings = check(config, ranks)
        if ranks.distributed:
            share_run_dir(config, ranks)
        if settings.agent.rnn is not None and settings.agent.rnn.impl is RNNImpl.esper:
            lstm_resets.kernel()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if distributed.detect_ranks().distributed:
            fail(
                "a sweep (-m) under torchrun is not supported: torchrun starts one "
                "distributed run; sweep distributed runs with hydra/launcher=slurm (or "
                "slurm_local) and hydra.launcher.tasks_per_node=N"
            )
        if sweep_uses_kernel(config):
            lstm_resets.kernel()
