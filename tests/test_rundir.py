"""The run dir's owner: atomic writes with a normal file mode, the lock, plain checkpoints."""

import fcntl
import os
import random
import signal
import socket
import threading

import numpy as np
import pytest
import torch

from esper.simic import rundir
from esper.simic.agents.ppo import NonFiniteGradientsError, PPOLearner
from esper.simic.checkpoint import load_checkpoint, restore_rng, rng_state
from esper.simic.rundir import RunDir, RunDirLockedError, write_atomic, write_text_atomic
from esper.simic.signals import EXIT_STOPPED_AT_ONCE, GracefulStop
from esper.simic.testing import run_training
from esper.simic.train import TrainingAbortedError


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    rundir._file_mode.cache_clear()
    yield
    os.umask(previous)
    rundir._file_mode.cache_clear()


def test_atomic_write_gives_a_normal_file_mode_under_the_umask(tmp_path, umask_027):
    path = write_text_atomic(tmp_path / "summary.json", "{}\n")
    assert path.read_text() == "{}\n"
    assert path.stat().st_mode & 0o777 == 0o640  # 0666 & ~027; mkstemp alone gives 0600
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "old")

    def crash(file):
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, crash)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_the_lock_names_its_holder_and_refuses_a_second_owner(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    stray = tmp_path / "checkpoints" / ".best.pt.abc.tmp"  # a writer killed mid-write
    stray.write_bytes(b"")
    with run.acquire():
        expected = f"pid {os.getpid()} on host {socket.gethostname()}"
        assert run.holder() == expected
        assert not stray.exists()
        with pytest.raises(RunDirLockedError, match=f"in use by {expected}"):
            run.acquire()
    assert run.holder() is None
    run.acquire().release()


def test_a_probe_holding_the_lock_for_an_instant_does_not_refuse_a_starting_run(tmp_path):
    run = RunDir(tmp_path)
    probe = run.lock.open("a+")
    fcntl.flock(probe, fcntl.LOCK_EX)  # what holder() does, with no holder line written
    threading.Timer(0.2, probe.close).start()
    with run.acquire():
        assert run.holder() == f"pid {os.getpid()} on host {socket.gethostname()}"


def test_first_signal_asks_for_a_stop_and_a_second_stops_at_once():
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.received is signal.SIGUSR1
        with pytest.raises(SystemExit) as exit_info:
            os.kill(os.getpid(), signal.SIGTERM)
    assert exit_info.value.code == EXIT_STOPPED_AT_ONCE
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _draws(generator: torch.Generator) -> tuple:
    return (
        random.random(),
        float(np.random.random()),
        float(torch.rand(1)),
        float(torch.rand(1, generator=generator)),
    )


def test_rng_state_is_plain_data_and_restores_every_generator(tmp_path):
    generator = torch.Generator().manual_seed(3)
    path = tmp_path / "rng.pt"
    torch.save(rng_state(generator), path)
    expected = _draws(generator)
    restore_rng(torch.load(path, weights_only=True), generator)
    assert _draws(generator) == expected


def test_an_older_pickled_checkpoint_loads_with_a_notice(tmp_path, caplog):
    generator = torch.Generator().manual_seed(3)
    old_rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "minibatch": generator.get_state(),
    }
    path = tmp_path / "old.pt"
    torch.save({"rng": old_rng}, path)
    expected = _draws(generator)
    state = load_checkpoint(path)
    assert "holds pickled objects" in caplog.text
    restore_rng(state["rng"], generator)
    assert _draws(generator) == expected


def test_every_checkpoint_kind_loads_with_weights_only(tiny, tmp_path, monkeypatch):
    normalized = ["env.normalize_obs=true", "env.normalize_reward=true"]
    run_training([*tiny, "trainer.checkpoint_interval=2", *normalized], tmp_path)
    run = RunDir(tmp_path)
    kinds = [*run.periodic_checkpoints(), run.best, run.final, run.policy]
    calls = {"n": 0}
    real_learn = PPOLearner.learn

    def learn_then_fail(self, rollout, generator):
        calls["n"] += 1
        if calls["n"] == 3:
            raise NonFiniteGradientsError(1, 4, ["critic_trunk.0.weight"])
        return real_learn(self, rollout, generator)

    monkeypatch.setattr(PPOLearner, "learn", learn_then_fail)
    with pytest.raises(TrainingAbortedError):
        run_training([*tiny, "agent.on_nonfinite=abort"], tmp_path / "aborted")
    kinds.append(RunDir(tmp_path / "aborted").nonfinite)
    assert len(kinds) == 7
    for path in kinds:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert state, path
    final = torch.load(run.final, weights_only=True)
    assert isinstance(final["obs_normalizer"]["mean"], torch.Tensor)
    assert type(final["reward_normalizer"]["return_rms"]["var"]) in (float, torch.Tensor)
    assert final["config"]["agent"]["network"]["activation"] == "tanh"  # an enum, as its name
