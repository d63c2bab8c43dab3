"""A run killed with SIGKILL and resumed ends like a run: full budget, each step once, learned."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from wandb_records import run_record

pytestmark = pytest.mark.slow

OVERRIDES = [
    "+experiment=cartpole_ppo",
    "total_timesteps=30000",
    "trainer.checkpoint_interval=5",
    "trainer.progress=off",
    "logger=wandb",
]
BATCH = 8 * 32  # cartpole_ppo: envs x steps per update


# wandb.init exports WANDB_SERVICE, so after earlier in-process W&B tests every child
# would share this process's wandb-core, which keeps a killed child's run registered.
# A killed cluster job has its own; so do these children.
ENV = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}


def test_sigkilled_run_resumes_to_the_full_budget_and_learns(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "esper.simic", *OVERRIDES]
    job = subprocess.Popen(
        [*command, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 300
        while len(list((run_dir / "checkpoints").glob("checkpoint_*.pt"))) < 3:
            assert job.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        os.kill(job.pid, signal.SIGKILL)
        job.wait()
    assert not (run_dir / "summary.json").exists()

    resumed = subprocess.run(
        [*command, f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resume_invocation'}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    updates = -(-30000 // BATCH)
    assert summary["total_env_steps"] == updates * BATCH
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["global_step"] for row in rows if "train/policy_loss" in row]
    assert steps == [BATCH * i for i in range(1, updates + 1)]
    assert summary["final_eval_return_mean"] >= 150  # random play: about 20

    run_files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 2  # W&B gives each (re)start its own offline dir ...
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert {run_record(path).run_id for path in run_files} == {run_id}  # ... of one run
