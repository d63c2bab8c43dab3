"""Checkpoints as plain data: loadable with ``torch.load(weights_only=True)``.

Everything in a checkpoint is a tensor, a number, a string, None, or a list/dict of
those, so loading one runs no pickled code. RNG states and normaliser statistics are
converted here (``rng_state``/``restore_rng``); checkpoints written before that
(pickled numpy and gymnasium objects) still load, with a one-line notice.
"""

import logging
import pickle
import random
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper.simic.rundir import write_atomic

log = logging.getLogger(__name__)

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


def save_checkpoint(state: dict[str, Any], path: Path, keep_last: int | None = None) -> Path:
    """Write ``state`` atomically (``rundir.write_atomic``).

    With ``keep_last``, older periodic checkpoints (``checkpoint_*.pt``) beside ``path``
    beyond the newest ``keep_last`` are removed afterwards.
    """
    write_atomic(path, lambda file: torch.save(state, file))
    if keep_last is not None:
        for old in sorted(path.parent.glob("checkpoint_*.pt"))[:-keep_last]:
            old.unlink()
    return path


def load_checkpoint(path: Path, required: Collection[str] = ()) -> dict[str, Any]:
    """Load a checkpoint (tensors land on the CPU); ``CheckpointError`` names a bad file.

    Writes are atomic, but a file can still be damaged afterwards (disk, copy, a
    manual edit), and the caller can then fall back to an older one.
    """
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "Weights only load failed" not in str(error):
                raise
            # Written before checkpoints were plain data; this package wrote it.
            log.warning("%s holds pickled objects (an older esper-simic); loading it anyway", path)
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


def plain_array(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))


def plain_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Running statistics (mean, var: arrays; count: a numpy float) as tensors and floats."""
    return {
        key: plain_array(value) if isinstance(value, np.ndarray) else float(value)
        for key, value in stats.items()
    }


def rng_state(minibatch: torch.Generator) -> dict[str, Any]:
    """Every RNG a run draws from, as plain data."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": plain_array(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "minibatch": minibatch.get_state(),
    }


def restore_rng(rng: dict[str, Any], minibatch: torch.Generator) -> None:
    """Undo ``rng_state`` (also the tuples older checkpoints pickled)."""
    python = rng["python"]
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"]), python["gauss"])
    random.setstate(python)
    numpy = rng["numpy"]
    if isinstance(numpy, dict):
        keys = np.asarray(numpy["keys"], dtype=np.int64).astype(np.uint32)
        numpy = (numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"])
    np.random.set_state(numpy)
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    minibatch.set_state(rng["minibatch"])
