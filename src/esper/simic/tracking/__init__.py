"""Metric sinks (console, local history, W&B) behind one ``Tracker``."""

from pathlib import Path
from typing import Any

from esper.simic.rundir import RunDir
from esper.simic.settings import LoggerName, SimicConfig, WandbMode
from esper.simic.tracking.console import ConsoleProgress
from esper.simic.tracking.sinks import JsonlHistory, MetricSink, Tracker

__all__ = ["MetricSink", "Tracker", "build_tracker"]


def build_tracker(settings: SimicConfig, run_dir: Path, run_config: dict[str, Any]) -> Tracker:
    """Console progress and the local history always; W&B unless off or disabled.

    ``logger.mode=disabled`` skips W&B entirely rather than making a dummy run, so
    nothing W&B-related is created. A resumed run (``resume=...``) continues its W&B run.
    """
    sinks: list[MetricSink] = [
        ConsoleProgress(settings.total_timesteps, settings.trainer.progress),
        JsonlHistory(RunDir(run_dir).history),
    ]
    logger = settings.logger
    if logger.name is LoggerName.wandb and logger.mode is not WandbMode.disabled:
        # Imported here: wandb takes about a second to import and logger=none never needs it.
        from esper.simic.tracking.wandb_sink import WandbSink  # noqa: PLC0415

        sinks.append(WandbSink(logger, run_dir, run_config, resuming=settings.resume is not None))
    return Tracker(sinks)
