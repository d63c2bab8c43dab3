"""Stopping, locking, resuming and the door, as a user meets them: the CLI in subprocesses."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esper.simic.testing import TINY_OVERRIDES

LONG = [*TINY_OVERRIDES, "total_timesteps=1000000", "trainer.checkpoint_interval=20"]
"""Tiny updates (64 steps) but a budget no test waits for: these runs end by a signal."""
BATCH = 64
ENV = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}


def esper(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "esper.simic", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "esper.simic", *LONG, *extra, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def wait_for(condition, job: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert job.poll() is None, job.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["global_step"] for row in rows if "train/policy_loss" in row]


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_at_the_next_update_and_resume_finishes(tmp_path, sig):
    run_dir = tmp_path / "run"
    job = start(run_dir)
    wait_for((run_dir / "checkpoints" / "checkpoint_0000020.pt").exists, job)
    wait_for(lambda: len(steps(run_dir)) > 25, job)
    job.send_signal(sig)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 4, stderr
    line = one_line(stderr)
    match = re.fullmatch(
        rf"esper.simic: {sig.name}: stopped at step (\d+); resume with: (.*)", line
    )
    assert match, line
    stopped_at = int(match[1])
    update = stopped_at // BATCH
    assert update > 25
    assert (run_dir / "checkpoints" / f"checkpoint_{update:07d}.pt").exists()
    assert not list(run_dir.rglob("*.tmp"))

    command = shlex.split(match[2])
    assert command[:3] == ["python", "-m", "esper.simic"] and f"resume={run_dir}" in command
    budget = f"total_timesteps={stopped_at + 4 * BATCH}"
    args = [budget if a.startswith("total_timesteps=") else a for a in command[3:]]
    resumed = esper(*args, f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"checkpoint_{update:07d}.pt: step {stopped_at}" in resumed.stderr
    assert steps(run_dir) == [BATCH * i for i in range(1, update + 5)]
    assert json.loads((run_dir / "summary.json").read_text())["total_env_steps"] == (
        stopped_at + 4 * BATCH
    )


def test_a_live_run_dir_refuses_a_second_run_and_a_resume(tmp_path):
    run_dir = tmp_path / "run"
    job = start(run_dir)
    try:
        wait_for((run_dir / "metrics.jsonl").exists, job)
        config = (run_dir / ".hydra" / "config.yaml").read_text()
        second = esper(*LONG, "seed=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 2
        assert f"is in use by pid {job.pid} on host" in one_line(second.stderr)
        resume = esper(*LONG, f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
        assert resume.returncode == 2
        assert f"still running (pid {job.pid} on host" in one_line(resume.stderr)
        assert not (tmp_path / "r").exists()
        assert (run_dir / ".hydra" / "config.yaml").read_text() == config
        wait_for(lambda: len(steps(run_dir)) > 5, job)
    finally:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=60)
    assert job.returncode == 4
    done = steps(run_dir)
    assert done == [BATCH * i for i in range(1, len(done) + 1)]  # the first run, untouched


def test_a_fresh_run_into_a_finished_run_dir_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    assert esper(*TINY_OVERRIDES, f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    again = esper(*TINY_OVERRIDES, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert again.returncode == 2
    line = one_line(again.stderr)
    assert f"run dir {run_dir} already holds a run" in line and f"resume={run_dir}" in line
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    every_two = "trainer.checkpoint_interval=2"
    done = esper(*TINY_OVERRIDES, every_two, f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["agent.learning_rate=inf"], "agent.learning_rate=inf is not a finite number"),
        (["+env.kwargs.x=nan"], "env.kwargs.x=nan is not a finite number"),
        (["+experiment=acrobot_ppo", "resume={run}"], "env.id: CartPole-v1 there, Acrobot-v1 now"),
        (["seed=3", "resume={run}"], "seed: 0 there, 3 now"),
        (["resume={run}/.hydra/config.yaml"], "config.yaml is unreadable"),
        (
            ["resume={run}/checkpoints/checkpoint_0000004.pt", "total_timesteps=4096"],
            "is at step 256 but final.pt is at step 512",
        ),
    ],
)
def test_bad_input_gets_one_line_and_no_directory(tmp_path, finished, args, expected):
    out = tmp_path / "out"
    args = [a.format(run=finished) for a in args]
    result = esper(*TINY_OVERRIDES, *args, f"hydra.run.dir={out}", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in one_line(result.stderr)
    assert not out.exists()


def test_a_budget_under_one_rollout_says_it_is_rounded_up(tmp_path):
    result = esper(
        *TINY_OVERRIDES, "total_timesteps=10", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (
        "total_timesteps=10 is less than one rollout (agent.num_steps * env.num_envs = 64): "
        "rounded up to 64 steps" in result.stderr
    )
    assert steps(tmp_path / "r") == [64]


def test_online_wandb_without_a_key_says_it_logs_offline(tmp_path):
    quiet = [o for o in TINY_OVERRIDES if not o.startswith("logger=")]
    env = {k: v for k, v in ENV.items() if not k.startswith("WANDB_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "esper.simic",
            *quiet,
            "logger=wandb",
            "logger.mode=online",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "HOME": str(tmp_path), "WANDB_SILENT": "true"},
    )
    assert result.returncode == 0, result.stderr
    assert "esper.simic: warning: W&B online init failed (No API key configured" in result.stderr
    assert f"wandb sync {tmp_path / 'r'}/wandb/offline-run-*" in result.stderr
    assert list((tmp_path / "r" / "wandb").glob("offline-run-*"))
