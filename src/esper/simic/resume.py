"""Continue a stopped, killed (or finished, then extended) run in its own run dir.

``resume=<run dir or checkpoint>`` picks a checkpoint (periodic, ``best.pt`` or
``final.pt``), checks that the run can go on, and trims the local history back to it
so every ``global_step`` appears exactly once. Resuming from anything older than the
run's newest checkpoint would silently drop history, so it needs
``resume_from_older=true``. Env state is not checkpointed: envs start fresh
episodes at the resume point, seeded by ``restart_seed``.
"""

import copy
import json
import logging
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from esper.simic.checkpoint import TRAINING_STATE_KEYS, CheckpointError, load_checkpoint
from esper.simic.rundir import RunDir, write_text_atomic
from esper.simic.settings import SimicConfig

log = logging.getLogger(__name__)

RESTART_SEED_OFFSET = 7_919
"""Resumed envs reset from ``seed + RESTART_SEED_OFFSET * update``: distinct per resume
point, reproducible, and never the initial reset seed."""

MUTABLE_KEYS = (
    "resume",
    "resume_from_older",
    "total_timesteps",
    "trainer",
    "logger",
    "distributed",
)
"""Top-level keys that may change between a run and its resumption; any other difference
would make the continuation a different experiment from the one its checkpoint began."""


class ResumeError(ValueError):
    """A run that cannot be resumed; the message is one line saying why and what to do."""


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resumed run continues from, and the newer ones it supersedes."""

    path: Path
    state: dict[str, Any]
    newest_step: int
    superseded: tuple[Path, ...]
    """Readable checkpoints newer than ``path`` (only with ``resume_from_older``)."""

    @property
    def step(self) -> int:
        return int(self.state["counters"]["global_step"])

    @property
    def update(self) -> int:
        return int(self.state["counters"]["update"])


def run_dir_of(resume: str) -> Path:
    """The run dir a ``resume`` value names: the dir itself, or the one holding a checkpoint."""
    path = Path(resume).expanduser().resolve()
    if not path.exists():
        raise ResumeError(f"resume={resume}: no such run dir or checkpoint")
    if path.is_file():
        return path.parent.parent if path.parent.name == RunDir.CHECKPOINTS else path.parent
    return path


def _readable(run: RunDir) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Every checkpoint of the run that loads with its training state, newest step first;
    at equal steps final.pt, then the periodic ones (what a stop writes), then best.pt
    (the sort keeps this order on ties)."""
    found, errors = [], []
    for path in [run.final, *reversed(run.periodic_checkpoints()), run.best]:
        if not path.exists():
            continue
        try:
            found.append((path, load_checkpoint(path, required=TRAINING_STATE_KEYS)))
        except CheckpointError as error:
            errors.append(str(error))
    found.sort(key=lambda item: item[1]["counters"]["global_step"], reverse=True)
    return found, errors


def select_checkpoint(resume: str, allow_older: bool) -> ResumePoint:
    """The checkpoint ``resume`` names, or the run's newest readable one.

    An unreadable newest checkpoint is reported and the next one used; an explicitly
    named checkpoint older than the newest is refused unless ``allow_older``.
    """
    run = RunDir(run_dir_of(resume))
    named = Path(resume).expanduser().resolve()
    found, errors = _readable(run)
    if named.is_file():
        try:
            state = load_checkpoint(named, required=TRAINING_STATE_KEYS)
        except CheckpointError as error:
            raise ResumeError(f"resume={resume}: {error}") from error
        chosen = (named, state)
    elif found:
        chosen = found[0]
        if errors:
            log.warning("%s; resuming from %s instead", "; ".join(errors), chosen[0])
    else:
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise ResumeError(
            f"resume={resume}: no readable checkpoint under {run.checkpoints}{detail}"
        )
    path, state = chosen
    step = state["counters"]["global_step"]
    newer = [
        (p, s["counters"]["global_step"]) for p, s in found if s["counters"]["global_step"] > step
    ]
    newest = max([step, *(s for _, s in newer)])
    if newer and not allow_older:
        newest_path = max(newer, key=lambda item: item[1])[0]
        raise ResumeError(
            f"resume={resume} is at step {step} but {newest_path.name} is at step {newest}: "
            f"resume={run.path} continues from the newest, or add resume_from_older=true to "
            f"drop the {newest - step} steps after {step}"
        )
    return ResumePoint(path, state, newest, tuple(p for p, _ in newer))


def upgrade_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config in today's layout, so that checkpoints written before a key
    existed or moved still resume: ``collector.on_nonfinite`` moves to
    ``agent.on_nonfinite``, and keys the checkpoint predates take the schema's defaults
    (which keep the behaviour that code had)."""
    saved = copy.deepcopy(saved)
    collector = saved.get("collector")
    if isinstance(collector, dict) and "on_nonfinite" in collector:
        saved.setdefault("agent", {})["on_nonfinite"] = collector.pop("on_nonfinite")
    defaults = OmegaConf.to_container(OmegaConf.structured(SimicConfig), enum_to_str=True)
    assert isinstance(defaults, dict)
    return _with_defaults(saved, defaults)


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with every key of ``defaults`` it lacks, nested dicts filled alike (a
    section that is None, e.g. a feed-forward run's ``agent.rnn``, stays None)."""
    filled = dict(saved)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(default, dict) and isinstance(filled[key], dict):
            filled[key] = _with_defaults(filled[key], default)
    return filled


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat |= _flatten(value, f"{prefix}{key}.")
        return flat
    return {prefix.rstrip("."): tree.name if isinstance(tree, Enum) else tree}


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: <there>  there, <now> now`` for each immutable key that differs."""
    there, here = _flatten(saved), _flatten(now)
    missing = object()
    lines = []
    for key in sorted(set(there) | set(here)):
        if key.split(".")[0] in MUTABLE_KEYS:
            continue
        a, b = there.get(key, missing), here.get(key, missing)
        if a != b:
            lines.append(f"{key}: {_show(a, missing)} there, {_show(b, missing)} now")
    return lines


def _show(value: Any, missing: object) -> str:
    return "(absent)" if value is missing else json.dumps(value) if value is None else str(value)


def check_resumable(
    state: dict[str, Any],
    run_config: dict[str, Any],
    num_updates: int,
    finished: bool,
    world_size: int = 1,
) -> None:
    """Refuse a config that is not the checkpoint's, a budget the run already spent, and
    another number of processes than the run's (each rank's RNGs and env seeds are the
    checkpoint's; spread over another number they would not continue the run).

    A run whose last update is done but whose ``summary.json`` is missing (killed while
    finishing) may resume: it only evaluates and writes its summary.
    """
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise ResumeError(
            f"the run was trained by {saved_world} process(es) and this resume starts "
            f"{world_size}: resume it with the same number (torchrun --nproc_per_node="
            f"{saved_world} ..., or without torchrun for 1)"
        )
    differences = config_differences(upgrade_config(state.get("config") or {}), run_config)
    if differences:
        raise ResumeError(
            f"the config differs from the run's: {'; '.join(differences)}; "
            "resume with the run's original overrides"
        )
    done, steps = state["counters"]["update"], state["counters"]["global_step"]
    saved_budget = (state.get("config") or {}).get("total_timesteps", "?")
    if done > num_updates or (done == num_updates and finished):
        raise ResumeError(
            f"the run already finished ({steps} env steps, update {done}); raise "
            f"total_timesteps above {saved_budget} to continue it"
        )


def restart_seed(seed: int, update: int) -> int:
    return seed + RESTART_SEED_OFFSET * update


def truncate_history(path: Path, global_step: int) -> int:
    """Drop history lines past ``global_step`` (and a torn last line); return lines kept.

    The stopped run logged past its last checkpoint; the resumed run logs those steps
    again, so without this they would appear twice.
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
    write_text_atomic(path, "".join(kept))
    return len(kept)
