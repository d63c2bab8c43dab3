"""Tiny end-to-end runs: artefacts on disk, determinism, checkpoint contents, W&B files."""

import json

import pytest
import torch
from compile_support import needs_compile

from esper.simic import train
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.networks import ActorCritic
from esper.simic.checkpoint import load_checkpoint
from esper.simic.settings import NetworkConfig
from esper.simic.testing import run_training

SUMMARY_KEYS = {
    "final_eval_return_mean",
    "final_eval_return_std",
    "total_env_steps",
    "wall_time_s",
    "env_steps_per_s",
    "git_commit",
}


def history(run_dir, drop_prefix="time/"):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(drop_prefix)} for row in rows]


def test_run_writes_summary_history_and_final_checkpoint(tiny, tmp_path):
    result = run_training(tiny, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["total_env_steps"] == result.total_env_steps == 512
    assert summary["final_eval_return_mean"] == result.final_eval_return_mean
    rows = history(tmp_path)
    assert [row["global_step"] for row in rows if "train/policy_loss" in row] == [
        64 * i for i in range(1, 9)
    ]
    assert rows[-1]["eval/return_mean"] == pytest.approx(result.final_eval_return_mean)

    state = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    assert state["counters"] == {"update": 8, "global_step": 512}
    assert {
        "policy",
        "learner",
        "obs_normalizer",
        "reward_normalizer",
        "rng",
        "config",
    } <= state.keys()
    policy = ActorCritic(4, DiscreteActions(2), NetworkConfig())
    policy.load_state_dict(state["policy"])
    assert state["learner"]["scheduler"]["last_epoch"] == 8


def test_summary_names_the_commit_the_run_started_on(tiny, tmp_path, monkeypatch):
    """A commit made while a long run trains is not the code that ran."""
    head = {"commit": "started-on"}
    monkeypatch.setattr(train, "git_commit", lambda: head["commit"])
    start_training = train.Trainer.run

    def commit_meanwhile(trainer, *args, **kwargs):
        head["commit"] = "committed-later"
        return start_training(trainer, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "run", commit_meanwhile)
    run_training(tiny, tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["git_commit"] == "started-on"


def test_same_seed_gives_identical_metrics(tiny, tmp_path):
    run_training(tiny, tmp_path / "a")
    run_training(tiny, tmp_path / "b")
    assert history(tmp_path / "a") == history(tmp_path / "b")


def test_different_seeds_differ(tiny, tmp_path):
    run_training(tiny, tmp_path / "a")
    run_training([*tiny, "seed=1"], tmp_path / "b")
    assert history(tmp_path / "a") != history(tmp_path / "b")


def test_continuous_actions_with_obs_and_reward_normalisation(tiny, tmp_path):
    run_training(
        [*tiny, "env=pendulum", "env.normalize_obs=true", "env.normalize_reward=true"], tmp_path
    )
    state = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    assert state["obs_normalizer"]["count"] > 512
    assert state["obs_normalizer"]["mean"].shape == (3,)
    assert state["reward_normalizer"]["return_rms"]["count"] > 1
    assert torch.isfinite(state["policy"]["action_head.log_std"]).all()


def test_periodic_checkpoints(tiny, tmp_path):
    run_training([*tiny, "trainer.checkpoint_interval=2"], tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [
        "best.pt",
        "checkpoint_0000004.pt",
        "checkpoint_0000006.pt",
        "checkpoint_0000008.pt",
        "final.pt",
    ]


def test_wandb_offline_run_files_live_in_the_run_dir(tiny, tmp_path):
    overrides = [o for o in tiny if not o.startswith("logger=")]
    run_training([*overrides, "logger=wandb", "logger.mode=offline"], tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb"))


@pytest.mark.parametrize("overrides", [["logger=none"], ["logger=wandb", "logger.mode=disabled"]])
def test_no_wandb_files_when_off_or_disabled(tiny, tmp_path, overrides):
    base = [o for o in tiny if not o.startswith("logger=")]
    run_training([*base, *overrides], tmp_path)
    assert not (tmp_path / "wandb").exists()


@pytest.mark.timeout(600)
@needs_compile
def test_compiled_update_trains_like_eager(tiny, tmp_path):
    """One compiled graph for forward, loss and backward: same maths, same learning."""
    run_training(tiny, tmp_path / "eager")
    run_training([*tiny, "agent.compile=true"], tmp_path / "compiled")
    eager, compiled = history(tmp_path / "eager"), history(tmp_path / "compiled")
    assert [r["global_step"] for r in eager] == [r["global_step"] for r in compiled]
    for a, b in zip(eager, compiled, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key


def test_async_vector_env_trains_like_sync(tiny, tmp_path):
    """Subprocess envs change where envs step, not what they return."""
    run_training(tiny, tmp_path / "sync")
    run_training([*tiny, "env.vectorization=async"], tmp_path / "async")
    assert history(tmp_path / "sync") == history(tmp_path / "async")
