"""The Hydra task function and the checks that run before Hydra creates anything."""

import copy
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from esper.simic import distributed
from esper.simic.config import (
    ConfigError,
    describe_config_exception,
    load_settings,
    register_schemas,
)
from esper.simic.distributed import SINGLE, Ranks
from esper.simic.resume import ResumeError, check_resumable, run_dir_of, select_checkpoint
from esper.simic.rundir import RunDir, RunDirLockedError
from esper.simic.settings import SimicConfig
from esper.simic.signals import GracefulStop
from esper.simic.sweeps import run_guarded, write_sweep_summary
from esper.simic.train import (
    RanksLostError,
    RunDirNotEmptyError,
    RunStoppedError,
    TrainingAbortedError,
    not_empty_message,
    num_updates,
    rollout_size,
    train,
)

CONFIG_MODULE = "esper.simic.conf"
CONFIG_NAME = "config"
EXIT_CONFIG_ERROR = 2
EXIT_TRAINING_ABORTED = 3
EXIT_STOPPED = 4
EXIT_RANKS_LOST = 5


def say(line: str) -> None:
    """Print one line on stderr, once per run: rank 0 speaks for the others."""
    if distributed.detect_ranks().main:
        print(f"esper.simic: {line}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """Print one line and leave with a non-zero status."""
    say(f"config error: {message}")
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
            cfg = compose(config_name=CONFIG_NAME, overrides=overrides, return_hydra_config=True)
    except Exception as error:
        fail(describe_config_exception(error))
    check(cfg)


def task_config(config: DictConfig) -> DictConfig:
    """The config a task function receives: Hydra's own node removed, as ``run_job`` does."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def check(cfg: DictConfig, ranks: Ranks = SINGLE) -> SimicConfig:
    """A config as Hydra composed it (its ``hydra`` node included): the run's settings. A
    bad value, a run dir that holds another run, or a resume that cannot go ahead stops
    with one line. On several ranks every rank checks the config, then joins the process
    group; rank 0 checks the run dir and its verdict stops or lets through them all."""
    run_dir = planned_run_dir(cfg)
    task = task_config(cfg)
    try:
        settings = load_settings(task)
    except ConfigError as error:
        fail(str(error))
    distributed.start(settings, ranks)
    problem = None
    if ranks.main:
        try:
            if settings.resume is None:
                if run_dir is not None:
                    check_fresh_run_dir(RunDir(run_dir))
            else:
                check_resume(settings, plain_config(task), ranks.world_size)
        except (ConfigError, ResumeError) as error:
            problem = str(error)
    problem = distributed.broadcast(problem, ranks)
    if problem is not None:
        fail(problem)
    return settings


def planned_run_dir(cfg: DictConfig) -> Path | None:
    """``hydra.run.dir`` as Hydra will make it, or None when it needs Hydra's runtime.

    ``${now:...}`` resolves here as it will there (a second later is another dir, which
    is fresh anyway); keys Hydra fills only while running (``hydra.job.override_dirname``)
    do not, and then ``train``'s check under the lock is the only one.
    """
    try:
        return Path(str(cfg.hydra.run.dir))
    except OmegaConfBaseException:
        return None


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data (enums as names): what checkpoints and W&B keep."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)
    assert isinstance(container, dict)
    return container


def check_fresh_run_dir(run: RunDir) -> None:
    """A fresh run never mixes into another run's files (``train`` checks again, locked)."""
    holder = run.holder()
    if holder is not None:
        raise ConfigError(f"run dir {run.path} is in use by {holder}: choose another hydra.run.dir")
    if run.run_files():
        raise ConfigError(not_empty_message(run))


def check_resume(settings: SimicConfig, run_config: dict[str, Any], world_size: int = 1) -> None:
    """Everything ``resume=`` can refuse, before Hydra makes its output dir."""
    assert settings.resume is not None
    run = RunDir(run_dir_of(settings.resume))
    holder = run.holder()
    if holder is not None:
        raise ResumeError(
            f"cannot resume: {run.path} is still running ({holder}); stop it first "
            "(SIGTERM checkpoints it)"
        )
    point = select_checkpoint(settings.resume, settings.resume_from_older)
    finished = run.summary.exists() and not point.superseded
    try:
        check_resumable(point.state, run_config, num_updates(settings), finished, world_size)
    except ResumeError as error:
        raise ResumeError(f"cannot resume: {error}") from error


def budget_notice(settings: SimicConfig) -> str | None:
    """A budget that is not whole rollouts is rounded up; say so when that is not obvious."""
    batch = rollout_size(settings)
    if settings.total_timesteps >= batch:
        return None
    return (
        f"total_timesteps={settings.total_timesteps} is less than one rollout "
        f"(agent.num_steps * env.num_envs = {batch}): rounded up to {batch} steps"
    )


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
    single = HydraConfig.get().mode is RunMode.RUN
    try:
        settings = load_settings(cfg)
    except ConfigError as error:
        if single:
            fail(str(error))
        raise  # in a sweep, one bad job must not end the others
    run_config = plain_config(cfg)
    settings = sweep_group(settings, run_config)
    notice = budget_notice(settings)
    if notice is not None:
        say(notice)
    ranks = distributed.detect_ranks()
    distributed.start(settings, ranks)
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    if not single:
        settings, done = continue_sweep_job(settings, RunDir(output_dir))
        if done is not None:
            return done
    # A resumed run continues in its own dir; Hydra's new output dir keeps only the
    # resuming invocation's .hydra/ config and log.
    run_dir = output_dir if settings.resume is None else run_dir_of(settings.resume)
    with GracefulStop() as stop:
        try:
            result = train(settings, run_dir, run_config, stop, ranks)
        except (ResumeError, RunDirLockedError, RunDirNotEmptyError) as error:
            if single:
                fail(str(error))
            raise
        except TrainingAbortedError as error:
            if single:
                say(f"training aborted: {error}")
                raise SystemExit(EXIT_TRAINING_ABORTED) from error
            raise
        except RanksLostError as error:
            if single:
                print(f"esper.simic: {error}", file=sys.stderr, flush=True)  # every rank's own
                raise SystemExit(EXIT_RANKS_LOST) from error
            raise
        except RunStoppedError as stopped:
            report_stop(stopped, run_dir, single, stop.requeue_signal is not None)
            stop.requeue()  # a submitit job: resubmitted, continues from the checkpoint
            raise SystemExit(EXIT_STOPPED) from None
    return result.final_eval_return_mean


def continue_sweep_job(settings: SimicConfig, job: RunDir) -> tuple[SimicConfig, float | None]:
    """A sweep job whose dir already holds its run continues it rather than starting over.

    That is what a requeued submitit job (preempted, timed out) and a sweep rerun with
    the same ``hydra.sweep.dir`` find: a finished job returns its result, a stopped one
    resumes from its newest checkpoint (its config must match, as for ``resume=``).
    """
    if settings.resume is not None:
        return settings, None
    if job.summary.exists() and not job.failed.exists():
        summary = json.loads(job.summary.read_text(encoding="utf-8"))
        return settings, float(summary["final_eval_return_mean"])
    job.failed.unlink(missing_ok=True)  # this attempt writes its own outcome
    if not job.checkpoints.is_dir():
        return settings, None
    return dataclasses.replace(settings, resume=str(job.path)), None


def report_stop(stopped: RunStoppedError, run_dir: Path, single: bool, requeued: bool) -> None:
    """The one line a stopped run leaves: where it stopped and how it continues."""
    hydra = HydraConfig.get()
    if single:
        overrides = [o for o in hydra.overrides.task if not o.startswith("resume=")]
        how = "resume with: python -m esper.simic " + shlex.join([*overrides, f"resume={run_dir}"])
    elif requeued:
        how = "submitit requeues the job, which resumes from that checkpoint"
    else:
        # The sweep's own overrides (seed=0,1,2), as the sweeper saved them.
        sweep_dir = Path(hydra.sweep.dir)
        saved = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        overrides = [o for o in saved if not o.startswith("hydra.sweep.dir=")]
        how = "continue the sweep with: python -m esper.simic -m " + shlex.join(
            [*overrides, f"hydra.sweep.dir={sweep_dir}"]
        )
        if distributed.detect_ranks().main:
            write_sweep_summary(sweep_dir)
    say(f"{stopped.signal_name}: stopped at step {stopped.step}; {how}")
