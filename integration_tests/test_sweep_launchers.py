"""Sweeps through the plugin launchers and the Optuna sweeper, end to end in subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
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
    assert jobs[1]["error"].startswith("failed: ConfigError: env.id='Nope-v0' is not a registered")
    assert (sweep / "1" / "failed.json").exists()
    assert jobs[2]["final_eval_return"] is not None


def test_optuna_search_continues_its_study_in_a_moved_sweep_dir_and_prints_the_best(tmp_path):
    sweep = tmp_path / "elsewhere" / "hpo"  # absolute, and its folder does not exist yet
    search = [
        "+experiment=cartpole_ppo",
        "hparams_search=ppo_optuna",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=3",
        *QUICK,
        "total_timesteps=1024",
        "logger=none",
    ]
    name = "cartpole_ppo-ppo-1024steps"

    def trials() -> list:
        storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
        return optuna.load_study(study_name=name, storage=storage).trials

    runs = []
    for cwd in (tmp_path / "first", tmp_path / "second"):  # from two working directories
        cwd.mkdir()
        runs.append(_sweep(search, cwd))
    finished = trials()
    assert len(finished) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    # The second invocation searched on instead of redrawing the first one's points.
    assert [t.params for t in finished[:3]] != [t.params for t in finished[3:]]
    assert len(_jobs(sweep)) == 6  # job dirs 0-5, none overwritten
    best = max(finished, key=lambda t: t.value)
    record = json.loads((sweep / "best_trial.json").read_text())
    assert (record["best_trial"], record["value"]) == (best.number, best.value)
    assert record["params"] == best.params
    assert f"Optuna study {name}: best trial {best.number} of 6" in runs[1].stdout


STOPPABLE = [*QUICK, "logger=none", "total_timesteps=20000", "trainer.checkpoint_interval=20"]
"""Jobs long enough to be signalled after their first periodic checkpoint (update 20)."""


def _train_steps(job: Path) -> list[int]:
    rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    return [row["global_step"] for row in rows if "train/policy_loss" in row]


def _signal_when_checkpointed(job: Path, sig: signal.Signals, sweep: subprocess.Popen) -> None:
    """Send ``sig`` to the process that holds the job's run dir (its lock names the pid)."""
    deadline = time.monotonic() + 300
    lock, first = job / "run.lock", job / "checkpoints" / "checkpoint_0000020.pt"
    while not (first.exists() and lock.exists() and lock.read_text().strip()):
        assert sweep.poll() is None, sweep.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(int(lock.read_text().split()[1]), sig)


def test_a_slurm_local_job_signalled_mid_run_is_requeued_and_finishes(tmp_path):
    sweep = tmp_path / "sweep"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "esper.simic",
            "-m",
            "hydra/launcher=slurm_local",
            *STOPPABLE,
            "seed=0,1",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _signal_when_checkpointed(sweep / "0", signal.SIGUSR1, process)
    _signal_when_checkpointed(sweep / "1", signal.SIGTERM, process)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.err"))
    assert logs.count("submitit requeues the job") == 2
    assert logs.count("esper.simic: resuming") == 2
    assert [j["status"] for j in _jobs(sweep)] == ["ok", "ok"]
    assert "2 of 2 jobs ok" in (sweep / "sweep_summary.md").read_text()
    for job in ("0", "1"):
        assert _train_steps(sweep / job) == [64 * i for i in range(1, 314)]


def test_a_stopped_basic_sweep_leaves_its_summary_and_continues_where_it_stopped(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*STOPPABLE, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "esper.simic", "-m", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _signal_when_checkpointed(sweep / "0", signal.SIGTERM, process)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 4, stderr[-3000:]
    line = next(x for x in stderr.splitlines() if "stopped at step" in x)
    assert "continue the sweep with: python -m esper.simic -m" in line
    assert f"hydra.sweep.dir={sweep}" in line
    (job,) = _jobs(sweep)
    assert job["status"] == "unfinished"
    assert f"resume={sweep / '0'} continues it" in job["error"]

    _sweep(args, tmp_path)
    assert [j["status"] for j in _jobs(sweep)] == ["ok", "ok"]
    assert _train_steps(sweep / "0") == [64 * i for i in range(1, 314)]
