"""Continue a killed (or finished, then extended) run in its own run dir.

``resume=<run dir or checkpoint>`` picks the newest readable checkpoint, checks that
the run can go on, and trims the local history back to the checkpoint so every
``global_step`` appears exactly once. Env state is not checkpointed: envs start
fresh episodes at the resume point, seeded by ``restart_seed``.
"""

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from esper.simic.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_GLOB,
    FINAL_CHECKPOINT,
    TRAINING_STATE_KEYS,
    CheckpointError,
    load_checkpoint,
)
from esper.simic.settings import ActionBounds

log = logging.getLogger(__name__)

RESTART_SEED_OFFSET = 7_919
"""Resumed envs reset from ``seed + RESTART_SEED_OFFSET * update``: distinct per resume
point, reproducible, and never the initial reset seed."""

# Keys that may change between a run and its resumption; any other difference would
# make the continuation a different experiment from the one its checkpoint began.
MUTABLE_KEYS = ("resume", "total_timesteps", "trainer", "logger")


class ResumeError(ValueError):
    """A run that cannot be resumed; the message is one line saying why and what to do."""


def run_dir_of(resume: str) -> Path:
    """The run dir a ``resume`` value names: the dir itself, or the one holding a checkpoint."""
    path = Path(resume).expanduser().resolve()
    if not path.exists():
        raise ResumeError(f"resume={resume}: no such run dir or checkpoint")
    if path.is_file():
        return path.parent.parent if path.parent.name == CHECKPOINT_DIR else path.parent
    return path


def checkpoint_candidates(resume: str) -> list[Path]:
    """Checkpoints to try, newest first: the one named (if any), then final, then periodic."""
    path = Path(resume).expanduser().resolve()
    directory = run_dir_of(resume) / CHECKPOINT_DIR
    periodic = sorted(directory.glob(CHECKPOINT_GLOB), reverse=True)
    found = [directory / FINAL_CHECKPOINT, *periodic]
    found = [p for p in found if p.exists()]
    if path.is_file():
        # An explicit checkpoint first; only older ones than it as fallbacks.
        older = [p for p in periodic if p.name < path.name] if path in periodic else periodic
        found = [path, *older]
    if not found:
        raise ResumeError(f"resume={resume}: no checkpoint under {directory}")
    return found


def load_latest_good(resume: str) -> tuple[Path, dict[str, Any]]:
    """Load the first readable checkpoint, warning about each one that was not."""
    candidates = checkpoint_candidates(resume)
    errors: list[str] = []
    for path in candidates:
        try:
            state = load_checkpoint(path, required=TRAINING_STATE_KEYS)
        except CheckpointError as error:
            errors.append(str(error))
            continue
        if errors:
            log.warning("%s; resuming from %s instead", "; ".join(errors), path)
        return path, state
    raise ResumeError(f"resume={resume}: no readable checkpoint ({'; '.join(errors)})")


ADDED_ENV_KEYS: dict[str, Any] = {
    "imports": [],
    "wrappers": [],
    "action_bounds": ActionBounds.clip,
}
"""``env`` keys added after checkpoints were written, with the behaviour those runs had."""


def upgrade_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config in today's layout: ``collector.on_nonfinite`` moved to
    ``agent.on_nonfinite``, and ``env`` keys added since take the values the run had
    (checkpoints written before still resume)."""
    if isinstance(saved.get("env"), dict):
        saved = {**saved, "env": {**ADDED_ENV_KEYS, **saved["env"]}}
    collector = saved.get("collector")
    if not isinstance(collector, dict) or "on_nonfinite" not in collector:
        return saved
    collector = dict(collector)
    agent = {**saved.get("agent", {}), "on_nonfinite": collector.pop("on_nonfinite")}
    return {**saved, "collector": collector, "agent": agent}


def check_resumable(state: dict[str, Any], run_config: dict[str, Any], num_updates: int) -> None:
    """Refuse a finished run (unless extended) and a config that is not the checkpoint's."""
    saved = upgrade_config(state.get("config") or {})
    for key in sorted(set(saved) | set(run_config)):
        if key not in MUTABLE_KEYS and saved.get(key) != run_config.get(key):
            raise ResumeError(
                f"{key} differs from the checkpoint's config ({saved.get(key)!r} there, "
                f"{run_config.get(key)!r} now); resume with the run's original overrides"
            )
    done = state["counters"]["update"]
    if done >= num_updates:
        raise ResumeError(
            f"the run already finished ({state['counters']['global_step']} env steps, "
            f"update {done}); raise total_timesteps above "
            f"{saved.get('total_timesteps', '?')} to continue it"
        )


def restart_seed(seed: int, update: int) -> int:
    return seed + RESTART_SEED_OFFSET * update


def truncate_history(path: Path, global_step: int) -> int:
    """Drop history lines past ``global_step`` (and a torn last line); return lines kept.

    The killed run logged past its last checkpoint; the resumed run logs those steps
    again, so without this they would appear twice. Rewritten atomically.
    """
    if not path.exists():
        return 0
    kept: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line being written when the run was killed
        if row.get("global_step", 0) <= global_step:
            kept.append(line + "\n")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.writelines(kept)
    Path(tmp).replace(path)
    return len(kept)
