"""Sweeps through the plugin launchers and the Optuna sweeper, end to end in subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from wandb_records import run_record

from esper.simic.testing import TINY_OVERRIDES

pytestmark = pytest.mark.slow

QUICK = [o for o in TINY_OVERRIDES if not o.startswith("logger=")]


def _sweep(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "esper.simic", "-m", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _jobs(sweep: Path) -> list[dict]:
    return json.loads((sweep / "sweep_summary.json").read_text())["jobs"]


def test_joblib_sweep_of_four_jobs_has_four_runs_in_one_wandb_group(tmp_path):
    sweep = tmp_path / "sweep"
    _sweep(
        [
            "hydra/launcher=parallel",
            *QUICK,
            "logger=wandb",
            "seed=0,1,2,3",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    jobs = _jobs(sweep)
    assert [j["status"] for j in jobs] == ["ok"] * 4
    assert sorted(p.parent.name for p in sweep.glob("*/summary.json")) == ["0", "1", "2", "3"]
    runs = [run_record(p) for p in sweep.glob("*/wandb/offline-run-*/run-*.wandb")]
    assert len(runs) == 4
    assert {r.run_group for r in runs} == {"default-sweep"}
    assert "4 of 4 jobs ok" in (sweep / "sweep_summary.md").read_text()


def test_submitit_local_sweep_completes(tmp_path):
    sweep = tmp_path / "sweep"
    _sweep(
        [
            "hydra/launcher=slurm_local",
            *QUICK,
            "logger=none",
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert [j["status"] for j in _jobs(sweep)] == ["ok", "ok"]
    assert (sweep / ".submitit").is_dir()


def test_a_failing_job_is_reported_and_the_others_finish(tmp_path):
    sweep = tmp_path / "sweep"
    _sweep(
        [
            *QUICK,
            "logger=none",
            "env.id=CartPole-v1,Nope-v0,Acrobot-v1",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    jobs = _jobs(sweep)
    assert [j["status"] for j in jobs] == ["ok", "failed", "ok"]
    assert jobs[1]["error"].startswith("ConfigError: env.id='Nope-v0' is not a registered")
    assert (sweep / "1" / "failed.json").exists()
    assert jobs[2]["final_eval_return"] is not None


def test_optuna_search_continues_its_study_on_a_second_invocation(tmp_path):
    search = [
        "+experiment=cartpole_ppo",
        "hparams_search=ppo_optuna",
        "hydra.sweeper.n_trials=3",
        *QUICK,
        "total_timesteps=1024",
        "logger=none",
    ]
    storage = f"sqlite:///{tmp_path}/multirun/hpo/cartpole_ppo-ppo/optuna.db"

    def trials() -> list:
        return optuna.load_study(study_name="cartpole_ppo-ppo", storage=storage).trials

    _sweep(search, tmp_path)
    assert len(trials()) == 3
    _sweep([*search, "hydra.sweep.dir=multirun/hpo/cartpole_ppo-ppo/second"], tmp_path)
    finished = trials()
    assert len(finished) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    assert len(_jobs(tmp_path / "multirun/hpo/cartpole_ppo-ppo/second")) == 3
