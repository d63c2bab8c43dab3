"""Resuming a run in its own dir: state, history without duplicates, fallbacks, refusals."""

import json
import logging
import shutil

import pytest
import torch

from esper.simic.app import preflight
from esper.simic.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from esper.simic.resume import ResumeError
from esper.simic.testing import run_training


def train_steps(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["global_step"] for row in rows if "train/policy_loss" in row]


def killed_run(tiny, run_dir):
    """A finished tiny run made to look killed after update 7: checkpoints up to 6 only."""
    run_training([*tiny, "trainer.checkpoint_interval=2"], run_dir)
    for name in ("final.pt", "best.pt", "checkpoint_0000008.pt"):
        (run_dir / "checkpoints" / name).unlink()
    (run_dir / "summary.json").unlink()
    with (run_dir / "metrics.jsonl").open("a") as history:
        history.write('{"global_step": 5')  # torn by the kill
    return [*tiny, "trainer.checkpoint_interval=2", f"resume={run_dir}"]


def test_resume_continues_in_the_same_dir_with_every_step_once(tiny, tmp_path):
    overrides = killed_run(tiny, tmp_path)
    result = run_training(overrides, tmp_path)
    assert result.total_env_steps == 512
    assert train_steps(tmp_path) == [64 * i for i in range(1, 9)]
    state = load_checkpoint(tmp_path / "checkpoints" / "final.pt")
    assert state["counters"] == {"update": 8, "global_step": 512}
    assert state["learner"]["scheduler"]["last_epoch"] == 8  # LR schedule continued
    assert (tmp_path / "summary.json").exists()
    assert (tmp_path / "checkpoints" / "best.pt").exists()


def test_resume_is_deterministic(tiny, tmp_path):
    """Same checkpoint, same restart seed: identical continuations (not identical to an
    uninterrupted run, whose envs were mid-episode at the checkpoint)."""
    overrides = killed_run(tiny, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    run_training(overrides, tmp_path / "a")
    run_training([*overrides[:-1], f"resume={tmp_path / 'b'}"], tmp_path / "b")

    def rows(run_dir):
        text = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if not k.startswith("time/")} for r in text]

    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tiny, tmp_path, caplog):
    overrides = killed_run(tiny, tmp_path)
    latest = tmp_path / "checkpoints" / "checkpoint_0000006.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        run_training(overrides, tmp_path)
    assert "checkpoint_0000006.pt is unreadable" in caplog.text
    assert "resuming from" in caplog.text
    assert "checkpoint_0000004.pt" in caplog.text
    assert train_steps(tmp_path) == [64 * i for i in range(1, 9)]


def test_checkpoint_without_training_state_is_rejected(tmp_path):
    path = save_checkpoint({"policy": {}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="lacks learner"):
        load_checkpoint(path, required=("policy", "learner"))


def test_finished_run_resumes_only_with_a_larger_budget(tiny, tmp_path):
    run_training(tiny, tmp_path)
    with pytest.raises(ResumeError, match=r"already finished.*raise total_timesteps"):
        run_training([*tiny, f"resume={tmp_path}"], tmp_path)
    result = run_training([*tiny, "total_timesteps=1024", f"resume={tmp_path}"], tmp_path)
    assert result.total_env_steps == 1024
    assert train_steps(tmp_path) == [64 * i for i in range(1, 17)]


def test_a_raised_budget_continues_the_learning_rate_where_it_was(tiny, tmp_path):
    """Killed at update 6 of 8 (the rate at 1/4 of agent.learning_rate), resumed to 16
    updates: the rate goes on from 1/4 down to 0 at the new end instead of jumping up."""
    overrides = killed_run(tiny, tmp_path)
    run_training([*overrides, "total_timesteps=1024"], tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rates = [row["train/learning_rate"] for row in rows if "train/learning_rate" in row]
    base = 3e-4  # the schema's agent.learning_rate
    assert rates[:6] == pytest.approx([base * (1 - u / 8) for u in range(6)])
    assert rates[6:] == pytest.approx([base * 0.25 * (10 - u) / 10 for u in range(10)])


def test_resume_with_a_different_config_is_refused(tiny, tmp_path):
    run_training(tiny, tmp_path)
    with pytest.raises(ResumeError, match="seed: 0 there, 1 now"):
        run_training([*tiny, "seed=1", "total_timesteps=1024", f"resume={tmp_path}"], tmp_path)


def test_missing_resume_path_stops_at_the_door(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        preflight([f"resume={tmp_path / 'nope'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "no such run dir or checkpoint" in err


def test_keep_checkpoints(tiny, tmp_path):
    run_training([*tiny, "trainer.checkpoint_interval=1", "trainer.keep_checkpoints=2"], tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "checkpoint_0000007.pt", "checkpoint_0000008.pt", "final.pt"]


def test_a_run_killed_before_its_summary_is_finished_without_training(tiny, tmp_path):
    run_training(tiny, tmp_path)
    (tmp_path / "summary.json").unlink()
    history = (tmp_path / "metrics.jsonl").read_text()
    result = run_training([*tiny, f"resume={tmp_path}"], tmp_path)
    assert result.total_env_steps == 512
    assert json.loads((tmp_path / "summary.json").read_text())["total_env_steps"] == 512
    assert train_steps(tmp_path) == [64 * i for i in range(1, 9)]
    assert (tmp_path / "metrics.jsonl").read_text().startswith(history)


def test_best_pt_is_a_resume_source_before_the_first_periodic_checkpoint(tiny, tmp_path, capsys):
    """Killed after the eval at update 4 wrote best.pt, before any periodic checkpoint."""
    run_training([*tiny, "trainer.checkpoint_interval=0"], tmp_path)
    for name in ("final.pt", "best.pt"):
        (tmp_path / "checkpoints" / name).unlink()
    (tmp_path / "summary.json").unlink()
    run_training([*tiny, "trainer.checkpoint_interval=0", "total_timesteps=256"], tmp_path / "x")
    best = tmp_path / "x" / "checkpoints" / "best.pt"
    best.replace(tmp_path / "checkpoints" / "best.pt")  # same config and seed, at update 4
    overrides = [*tiny, "trainer.checkpoint_interval=0", f"resume={tmp_path}"]
    run_training(overrides, tmp_path)
    assert "from best.pt: step" in capsys.readouterr().err
    assert train_steps(tmp_path) == [64 * i for i in range(1, 9)]


def test_an_older_checkpoint_needs_resume_from_older_and_drops_the_newer_history(
    tiny, tmp_path, capsys
):
    run_training([*tiny, "trainer.checkpoint_interval=2"], tmp_path)
    older = tmp_path / "checkpoints" / "checkpoint_0000004.pt"
    longer = [*tiny, "trainer.checkpoint_interval=2", "total_timesteps=768", f"resume={older}"]
    with pytest.raises(ResumeError, match=r"at step 256 but final.pt is at step 512.*drop the 256"):
        run_training(longer, tmp_path)
    result = run_training([*longer, "resume_from_older=true"], tmp_path)
    assert "dropped the history of the 256 steps after step 256" in capsys.readouterr().err
    assert result.total_env_steps == 768
    assert train_steps(tmp_path) == [64 * i for i in range(1, 13)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_checkpoints_its_cuda_rng_and_resumes_deterministically(tiny, tmp_path):
    cuda = [*tiny, "trainer.device=cuda"]
    overrides = killed_run(cuda, tmp_path / "a")
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "checkpoint_0000006.pt")
    assert len(state["rng"]["cuda"]) == torch.cuda.device_count()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    run_training(overrides, tmp_path / "a")
    run_training([*overrides[:-1], f"resume={tmp_path / 'b'}"], tmp_path / "b")
    final_a = load_checkpoint(tmp_path / "a" / "checkpoints" / "final.pt")
    final_b = load_checkpoint(tmp_path / "b" / "checkpoints" / "final.pt")
    for name, tensor in final_a["policy"].items():
        assert torch.equal(tensor, final_b["policy"][name]), name
    assert torch.equal(final_a["rng"]["cuda"][0], final_b["rng"]["cuda"][0])


def test_resume_at_another_world_size_is_refused(tiny, tmp_path):
    """Each rank's RNGs and env seeds are the checkpoint's: a run continues on as many
    processes as trained it (the door says how many)."""
    overrides = killed_run(tiny, tmp_path)
    state = load_checkpoint(tmp_path / "checkpoints" / "checkpoint_0000006.pt")
    assert state["world_size"] == 1
    for name in ("checkpoint_0000004.pt", "checkpoint_0000006.pt"):
        path = tmp_path / "checkpoints" / name
        saved = load_checkpoint(path)
        saved["world_size"] = 2
        save_checkpoint(saved, path)
    with pytest.raises(ResumeError, match=r"trained by 2 process\(es\) and this resume starts 1"):
        run_training(overrides, tmp_path)
