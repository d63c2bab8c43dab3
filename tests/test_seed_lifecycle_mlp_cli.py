"""The real (``host=mlp``) seed-lifecycle host trains PPO through the CLI under every
vectorization: the rollout's inference mode must not reach the host's own training."""

import json
import subprocess
import sys

import pytest

TINY_MLP = [
    "+experiment=seed_lifecycle_ppo",
    "++env.kwargs.host=mlp",
    "++env.kwargs.max_epochs=6",
    "total_timesteps=48",
    "agent.num_steps=8",
    "agent.minibatch_size=24",
    "agent.update_epochs=1",
    "env.num_envs=3",
    "trainer.eval_episodes=2",
    "trainer.eval_interval=0",
    "trainer.progress=off",
    "trainer.torch_threads=1",
    "logger=none",
]


@pytest.mark.parametrize("vectorization", ["sync", "async", "batched"])
def test_mlp_host_trains_through_the_cli(tmp_path, vectorization):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "esper.simic",
            *TINY_MLP,
            f"env.vectorization={vectorization}",
            f"hydra.run.dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in rows if "train/policy_loss" in r]
    assert len(updates) == 2  # 48 steps / (8 steps * 3 envs)
    assert rows[-1]["global_step"] == 48
