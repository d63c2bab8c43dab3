"""Weights & Biases sink: the only module of esper-simic that imports wandb.

Offline by default, so a run needs no account and no network; its files live in
the run dir, and ``wandb sync <run dir>/wandb/offline-run-*`` uploads them later.
"""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import wandb

from esper.simic.settings import LoggerConfig, WandbMode

log = logging.getLogger(__name__)


def _settings(init_timeout_s: float) -> wandb.Settings:
    return wandb.Settings(
        init_timeout=init_timeout_s,
        # The progress bar is ours; W&B capturing stdout would copy every redraw.
        console="off",
        silent=True,
        # Without a server, W&B's login viewer query adds ~10 s to a failing online init.
        x_disable_viewer=True,
    )


class WandbSink:
    """One W&B run per training run; ``global_step`` is every metric's x-axis.

    Runs with different numbers of envs then compare on environment steps, and
    W&B's own ``_step`` (which restarts on resume) is never needed.
    """

    def __init__(self, config: LoggerConfig, run_dir: Path, run_config: dict[str, Any]) -> None:
        self.config = config
        kwargs: dict[str, Any] = {
            "dir": str(run_dir),
            "project": config.project,
            "entity": config.entity,
            "group": config.group,
            "job_type": config.job_type,
            "tags": list(config.tags),
            "name": config.run_name,
            "notes": config.notes,
            "config": run_config,
            "settings": _settings(config.init_timeout_s),
        }
        try:
            self.run = wandb.init(mode=config.mode.value, **kwargs)
        except Exception as error:
            if config.mode is not WandbMode.online:
                raise
            log.warning(
                "W&B online init failed (%s); logging offline instead. "
                "Upload later with: wandb sync %s/wandb/offline-run-*",
                str(error).splitlines()[0],
                run_dir,
            )
            self.run = wandb.init(mode="offline", **kwargs)
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({"global_step": step, **metrics})

    def summarize(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value

    def close(self) -> None:
        self.run.finish()
