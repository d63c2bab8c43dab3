"""Atomic checkpoints: a crash mid-write never leaves a half-written file under the real name."""

import os
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
"""Checkpoints live in ``<run dir>/checkpoints/``."""
CHECKPOINT_GLOB = "checkpoint_*.pt"
FINAL_CHECKPOINT = "final.pt"
BEST_CHECKPOINT = "best.pt"
TRAINING_STATE_KEYS = (
    "policy",
    "learner",
    "obs_normalizer",
    "reward_normalizer",
    "counters",
    "rng",
    "config",
)
"""What a checkpoint needs for a run to continue from it (``load_checkpoint(required=...)``)."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (truncated, corrupt, or missing state); one line."""


def checkpoint_path(directory: Path, update: int) -> Path:
    return directory / f"checkpoint_{update:07d}.pt"


def save_checkpoint(state: dict[str, Any], path: Path, keep_last: int | None = None) -> Path:
    """Write ``state`` to a temporary file beside ``path``, fsync, then rename over it.

    ``os.replace`` is atomic on POSIX within one filesystem, so readers see the old
    file or the new one, never a torn one. With ``keep_last``, older checkpoints in
    the same directory beyond the newest ``keep_last`` are removed afterwards.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if keep_last is not None:
        for old in sorted(path.parent.glob(CHECKPOINT_GLOB))[:-keep_last]:
            old.unlink()
    return path


def load_checkpoint(path: Path, required: Collection[str] = ()) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` (tensors land on the CPU).

    Writes are atomic, but a file can still be damaged afterwards (disk, copy, a
    manual edit); ``CheckpointError`` then names the file and the problem so the
    caller can fall back to an older one.
    """
    try:
        # weights_only=False: the state holds numpy RNG state and normaliser arrays,
        # and we only ever load files this package wrote.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable ({reason})") from error
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state
