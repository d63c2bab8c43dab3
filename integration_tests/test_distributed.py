"""One run over two processes, as ``torchrun`` and submitit start it: it learns, it is one
run (one dir, one summary, each metric once, one W&B run), a SIGKILL of the whole job
resumes to the full budget, and a rank that dies ends the other with one line.

Each test starts two gloo processes on this machine.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from wandb_records import run_record

pytestmark = pytest.mark.slow

BATCH = 8 * 32  # cartpole_ppo: envs x steps per update, over both ranks together
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
# Without this, wandb.init in earlier in-process tests leaves WANDB_SERVICE set and every
# child shares that process's wandb-core (see test_resume_sigkill).
ENV = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}


def train_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["global_step"] for row in rows if "train/policy_loss" in row]


def wait_for_checkpoints(run_dir: Path, count: int, job: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 600
    while len(list((run_dir / "checkpoints").glob("checkpoint_*.pt"))) < count:
        assert job.poll() is None, "the run ended before it could be stopped"
        assert time.monotonic() < deadline
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux's /proc)."""
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def wait_until_gone(pids: list[int]) -> None:
    """Until the killed ranks have exited: the run dir's lock is theirs till then."""
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"{pids} outlived SIGKILL by 30 s"
        time.sleep(0.1)


def test_torchrun_trains_cartpole_as_one_run(tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [*TORCHRUN, "-m", "esper.simic", "+experiment=cartpole_ppo", "trainer.progress=lines",
         "logger=wandb", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=1200, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["final_eval_return_mean"] >= 475
    updates = -(-100_000 // BATCH)
    assert train_steps(run_dir) == [BATCH * i for i in range(1, updates + 1)]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert (run_dir / ".hydra" / "config.yaml").exists()
    # Rank 1 says nothing on the console: one final line, from rank 0's progress.
    assert done.stdout.count("final eval return") + done.stderr.count("final eval return") == 1


def test_torchrun_job_killed_and_resumed_finishes_as_one_run(tmp_path):
    run_dir = tmp_path / "run"
    command = [*TORCHRUN, "-m", "esper.simic", "+experiment=cartpole_ppo",
               "total_timesteps=30000", "trainer.checkpoint_interval=5", "trainer.progress=off",
               "logger=wandb"]  # fmt: skip
    job = subprocess.Popen(
        [*command, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    try:
        wait_for_checkpoints(run_dir, 3, job)
    finally:
        # torchrun and both ranks (each in a session of its own), as a node failure would.
        workers = children(job.pid)
        for pid in (job.pid, *workers):
            os.kill(pid, signal.SIGKILL)
        job.wait()
        wait_until_gone(workers)
    assert not (run_dir / "summary.json").exists()

    resumed = subprocess.run(
        [*command, f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resume_invocation'}"],
        capture_output=True, text=True, timeout=1200, env=ENV,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    updates = -(-30_000 // BATCH)
    assert summary["world_size"] == 2
    assert summary["total_env_steps"] == updates * BATCH
    assert train_steps(run_dir) == [BATCH * i for i in range(1, updates + 1)]
    assert summary["final_eval_return_mean"] >= 150  # random play: about 20
    run_files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert len(run_files) == 2  # one offline dir per (re)start, of one run
    assert {run_record(path).run_id for path in run_files} == {run_id}


def rank_process(rank: int, port: int, run_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """One rank started the way srun starts a task: the variables, no supervising agent."""
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "RANK": str(rank), "LOCAL_RANK": str(rank)}  # fmt: skip
    command = [sys.executable, "-m", "esper.simic", "+experiment=cartpole_ppo",
               "trainer.checkpoint_interval=5", "trainer.progress=off", "logger=none",
               "distributed.timeout_s=60", f"hydra.run.dir={run_dir}"]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_rank_ends_the_other_with_one_line_and_a_loadable_checkpoint(tmp_path):
    run_dir, port = tmp_path / "run", free_port()
    ranks = [rank_process(r, port, run_dir, tmp_path / f"rank{r}.out") for r in (0, 1)]
    try:
        wait_for_checkpoints(run_dir, 2, ranks[0])
        ranks[1].kill()
        started = time.monotonic()
        code = ranks[0].wait(timeout=120)
        waited = time.monotonic() - started
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    assert code == 5
    assert waited < 60  # a closed connection is noticed at once; a stall at the timeout
    lines = [line for line in (tmp_path / "rank0.out").read_text().splitlines() if "lost" in line]
    assert len(lines) == 1 and f"resume={run_dir}" in lines[0]
    newest = sorted((run_dir / "checkpoints").glob("checkpoint_*.pt"))[-1]
    state = torch.load(newest, weights_only=False)
    assert state["world_size"] == 2 and len(state["rank_rngs"]) == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="submitit's local executor runs bash")
def test_slurm_local_runs_one_two_task_job_as_one_distributed_run(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "esper.simic", "-m", "hydra/launcher=slurm_local",
         "hydra.launcher.tasks_per_node=2", "+experiment=cartpole_ppo", "total_timesteps=4096",
         "trainer.progress=off", "logger=none", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["total_env_steps"] == 16 * BATCH
    assert train_steps(sweep / "0") == [BATCH * i for i in range(1, 17)]
    assert "1 of 1 jobs ok" in (sweep / "sweep_summary.md").read_text()
