"""Checkpoints written before the one-PPO-core redesign (commit 2cce418) still load and resume.

The fixtures are killed-looking run dirs (``fixtures/checkpoints_2cce418/README.md``): a
feed-forward, a recurrent and a factored (seed-lifecycle) run, each with one periodic
checkpoint at update 20 or 16 and its history trimmed to that step.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from esper.simic.checkpoint import load_checkpoint
from esper.simic.resume import ResumeError, ResumePoint
from esper.simic.testing import compose_settings, run_training
from esper.simic.train import Trainer

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_2cce418"
RUNS = ["ppo", "recurrent_ppo", "factored_ppo"]
SINCE = {
    "ppo": ["agent.anneal_clip=false", "agent.vf_coef=0.5"],
    "recurrent_ppo": ["agent.anneal_clip=false", "agent.vf_coef=0.5"],
}
"""Preset values changed since the fixture was made: a resume restates the run's own."""


def copied_run(name: str, tmp_path: Path) -> tuple[Path, list[str], Path]:
    run_dir = tmp_path / name
    shutil.copytree(FIXTURES / name, run_dir)
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    (checkpoint,) = (run_dir / "checkpoints").glob("checkpoint_*.pt")
    return run_dir, [*overrides, *SINCE.get(name, [])], checkpoint


@pytest.mark.parametrize("name", RUNS)
def test_an_old_checkpoint_restores_every_weight(name, tmp_path, one_thread):
    run_dir, overrides, checkpoint = copied_run(name, tmp_path)
    state = load_checkpoint(checkpoint)
    settings, container = compose_settings(overrides)
    trainer = Trainer(settings, run_dir, container)
    try:
        trainer.restore(ResumePoint(checkpoint, state, state["counters"]["global_step"], ()))
        restored = trainer.policy.state_dict()
        assert restored.keys() == state["policy"].keys()
        for key, value in state["policy"].items():
            torch.testing.assert_close(restored[key], value, rtol=0, atol=0)
        assert trainer.global_step == state["counters"]["global_step"]
    finally:
        trainer.close()


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_resumes_to_its_end_with_every_step_once(name, tmp_path, one_thread):
    run_dir, overrides, _ = copied_run(name, tmp_path)
    result = run_training([*overrides, f"resume={run_dir}"], run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [row["global_step"] for row in rows if "train/policy_loss" in row]
    assert steps == sorted(set(steps))
    assert steps[-1] == result.total_env_steps
    assert result.total_env_steps >= 6000
    assert load_checkpoint(run_dir / "checkpoints" / "final.pt")["counters"]["global_step"] == (
        result.total_env_steps
    )


def test_a_changed_preset_value_is_named_when_an_old_run_resumes(tmp_path):
    """The fixture predates ``agent.anneal_clip``; its default (off) is what that code did,
    and the preset now turns it on: resuming with today's preset names the key."""
    run_dir, overrides, _ = copied_run("ppo", tmp_path)
    with pytest.raises(ResumeError, match=r"agent\.anneal_clip: False there, True now"):
        restated = [o for o in overrides if not o.startswith("agent.anneal_clip=")]
        run_training([*restated, f"resume={run_dir}"], run_dir)
