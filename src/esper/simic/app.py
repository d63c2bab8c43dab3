"""The Hydra task function and the checks that run before Hydra creates anything."""

import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from esper.simic.config import (
    ConfigError,
    describe_config_exception,
    load_settings,
    register_schemas,
)
from esper.simic.resume import ResumeError, run_dir_of
from esper.simic.settings import SimicConfig
from esper.simic.sweeps import run_guarded
from esper.simic.train import TrainingAbortedError, train

CONFIG_MODULE = "esper.simic.conf"
CONFIG_NAME = "config"
EXIT_CONFIG_ERROR = 2
EXIT_TRAINING_ABORTED = 3


def fail(message: str) -> NoReturn:
    """Print one line and leave with a non-zero status."""
    print(f"esper.simic: config error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)


def preflight(overrides: list[str]) -> None:
    """Compose and check a single run's config before Hydra makes its output dir.

    Hydra's own composition errors span several lines of internals; here each
    becomes one line naming the key and what was expected, and bad values stop
    the run before any directory, env, model or W&B run exists. The entry point does
    the same on Hydra's own composition (``door.Door``); this is its in-process twin.
    """
    register_schemas()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name=CONFIG_NAME, overrides=overrides)
    except Exception as error:
        fail(describe_config_exception(error))
    check(cfg)


def check(cfg: DictConfig) -> SimicConfig:
    """A composed config's settings; a bad value or resume path stops with one line."""
    try:
        settings = load_settings(cfg)
        if settings.resume is not None:
            run_dir_of(settings.resume)
    except (ConfigError, ResumeError) as error:
        fail(str(error))
    return settings


def sweep_group(settings: SimicConfig, run_config: dict[str, Any]) -> SimicConfig:
    """In a multirun, put every job of the sweep in one W&B group (unless ``logger.group``).

    ``<experiment>-<sweep dir name>`` is unique per sweep (the dir is timestamped) and
    the same for all its jobs, so W&B shows a sweep's runs together.
    """
    if settings.logger.group is not None or HydraConfig.get().mode is not RunMode.MULTIRUN:
        return settings
    group = f"{settings.experiment}-{Path(HydraConfig.get().sweep.dir).name}"
    run_config["logger"]["group"] = group
    return dataclasses.replace(settings, logger=dataclasses.replace(settings.logger, group=group))


def run(cfg: DictConfig) -> float:
    """Train one run of a (multi)run and return the value sweepers optimise.

    In a sweep a failing job returns NaN and leaves ``failed.json`` (``sweeps.run_guarded``):
    Hydra's sweepers would otherwise re-raise it and end the sweep without its summary.
    """
    if HydraConfig.get().mode is RunMode.MULTIRUN:
        return run_guarded(_run, cfg)
    return _run(cfg)


def _run(cfg: DictConfig) -> float:
    try:
        settings = load_settings(cfg)
    except ConfigError as error:
        if HydraConfig.get().mode is RunMode.RUN:
            fail(str(error))
        raise  # in a sweep, one bad job must not end the others
    run_config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(run_config, dict)
    settings = sweep_group(settings, run_config)
    try:
        # A resumed run continues in its own dir; Hydra's new output dir keeps only
        # the resuming invocation's .hydra/ config and log.
        run_dir = (
            Path(HydraConfig.get().runtime.output_dir)
            if settings.resume is None
            else run_dir_of(settings.resume)
        )
        result = train(settings, run_dir, run_config)
    except ResumeError as error:
        if HydraConfig.get().mode is RunMode.RUN:
            fail(f"cannot resume: {error}")
        raise
    except TrainingAbortedError as error:
        if HydraConfig.get().mode is RunMode.RUN:
            print(f"esper.simic: training aborted: {error}", file=sys.stderr)
            raise SystemExit(EXIT_TRAINING_ABORTED) from error
        raise
    return result.final_eval_return_mean
