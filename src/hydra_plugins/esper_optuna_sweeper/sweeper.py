"""Hydra's Sweeper interface over Optuna's ask/tell, trials launched in batches by any
Hydra launcher, the study kept in Optuna's journal storage (one append-only file, safe on
shared filesystems where SQLite's locks are not)."""

import json
import logging
import math
from pathlib import Path

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hydra_plugins.esper_optuna_sweeper.search_space import split_overrides

log = logging.getLogger(__name__)

BEST_FILE = "best_trial.json"


def trial_value(job: JobReturn) -> float | None:
    """A job's objective, or None for a failed trial (an exception, or NaN)."""
    if job.status is not JobStatus.COMPLETED:
        return None
    value = float(job.return_value)
    return None if math.isnan(value) else value


class OptunaSweeper(Sweeper):
    """``hydra/sweeper=esper_optuna``: ``n_trials`` trials, ``n_jobs`` launched together.

    The study ``study_name`` lives in ``storage`` (a journal file, made absolute, its folder
    created) and is continued when it exists. Trials are numbered on from the study's own
    count, so a rerun in the same sweep dir adds job dirs instead of overwriting them.
    """

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        params: DictConfig | None,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(
                f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs} must both be >= 1"
            )
        self.study_name, self.direction = study_name, direction
        self.storage = Path(storage).expanduser().resolve()
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.params = OmegaConf.to_container(params) if params is not None else {}

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def open_study(self) -> optuna.Study:
        """The study, created or continued. TPE is seeded with ``seed`` plus the number of
        earlier trials, so that a rerun does not draw the first run's start-up points again."""
        self.storage.parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=JournalStorage(JournalFileBackend(str(self.storage))),
            direction=self.direction,
            load_if_exists=True,
        )
        seed = None if self.seed is None else self.seed + len(study.trials)
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        return study

    def sweep(self, arguments: list[str]) -> optuna.trial.FrozenTrial | None:
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        space, fixed = split_overrides(lines)
        study = self.open_study()
        log.info(
            "Optuna study %s in %s: %d earlier trials", self.study_name, self.storage,
            len(study.trials),
        )  # fmt: skip
        for start in range(0, self.n_trials, self.n_jobs):
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - start))]
            batch = [
                [f"{k}={v}" for k, v in fixed.items()]
                + [f"{k}={v}" for k, v in trial.params.items()]
                for trial in trials
            ]
            self.validate_batch_is_legal(batch)
            jobs = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, job in zip(trials, jobs, strict=True):
                value = trial_value(job)
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, value)
        return self.report_best(study)

    def report_best(self, study: optuna.Study) -> optuna.trial.FrozenTrial | None:
        """Print the best trial so far and write it to ``<sweep dir>/best_trial.json``."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not done:
            print(f"Optuna study {self.study_name}: no trial completed", flush=True)
            return None
        best = study.best_trial
        record = {
            "study_name": self.study_name,
            "storage": str(self.storage),
            "trials": len(study.trials),
            "completed": len(done),
            "best_trial": best.number,
            "value": best.value,
            "params": best.params,
            "overrides": [f"{k}={v}" for k, v in best.params.items()],
        }
        (sweep_dir / BEST_FILE).write_text(json.dumps(record, indent=2))
        print(
            f"Optuna study {self.study_name}: best trial {best.number} of {len(study.trials)}, "
            f"value {best.value:.6g}: {' '.join(record['overrides'])}",
            flush=True,
        )
        return best
