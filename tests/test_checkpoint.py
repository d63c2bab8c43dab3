"""Atomic checkpoint writes and a faithful round trip."""

import pytest
import torch

from esper.simic import checkpoint as ckpt
from esper.simic.rundir import RunDir


def test_round_trip_preserves_tensors_and_python_state(tmp_path):
    state = {"w": torch.randn(3, 3), "counters": {"update": 7}, "rng": torch.get_rng_state()}
    path = ckpt.save_checkpoint(state, tmp_path / "c.pt")
    loaded = ckpt.load_checkpoint(path)
    torch.testing.assert_close(loaded["w"], state["w"])
    assert loaded["counters"] == {"update": 7}
    assert torch.equal(loaded["rng"], state["rng"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint({"version": 1}, path)

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"version": 2}, path)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_keep_last_prunes_older_periodic_checkpoints(tmp_path):
    for update in range(1, 6):
        ckpt.save_checkpoint({"u": update}, RunDir(tmp_path).periodic(update), keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["checkpoint_0000004.pt", "checkpoint_0000005.pt"]
