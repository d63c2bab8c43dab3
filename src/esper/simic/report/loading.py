"""Find runs and read them into typed records, whatever they came from.

A local run dir is what ``python -m esper.simic`` writes (``.hydra/config.yaml``,
``metrics.jsonl``, ``summary.json``); a W&B run (see ``wandb_io``) becomes the same
``Run``, so everything after loading is one code path.
"""

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from esper.simic.rundir import RunDir


class ReportError(Exception):
    """An input problem, worded for the user: the CLI prints it as one message."""


@dataclass(frozen=True)
class Run:
    """One training run: its composed config, final summary and logged history.

    ``summary`` is empty for a run that never finished (no ``summary.json``);
    ``unfinished`` then says why (failed, running, stopped or killed).
    """

    name: str
    source: str
    config: Mapping[str, Any]
    summary: Mapping[str, Any]
    history: tuple[Mapping[str, Any], ...]
    unfinished: str | None = None

    def config_value(self, key: str) -> Any:
        """The value at a dotted config key (``collector.name``); KeyError if absent."""
        value: Any = self.config
        for part in key.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(key)
            value = value[part]
        return value

    def has_config(self, key: str) -> bool:
        try:
            self.config_value(key)
        except KeyError:
            return False
        return True

    def history_keys(self) -> set[str]:
        return {key for row in self.history for key in row}

    def series(self, key: str, step_axis: str) -> tuple[np.ndarray, np.ndarray]:
        """``key`` against ``step_axis``, sorted by step, finite values only.

        A step logged twice (a resumed run repeats the steps after its checkpoint)
        keeps its last value, the one the run continued from.
        """
        points: dict[float, float] = {}
        for row in self.history:
            step, value = row.get(step_axis), row.get(key)
            if _is_finite_number(step) and _is_finite_number(value):
                points[float(step)] = float(value)
        steps = np.array(sorted(points), dtype=float)
        return steps, np.array([points[s] for s in steps], dtype=float)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_run_dir(path: Path) -> bool:
    return RunDir(path).config.is_file() and RunDir(path).history.is_file()


def failed_before_history(paths: Iterable[Path]) -> list[str]:
    """``<dir>: <reason>`` for each job dir under ``paths`` that failed before logging.

    Those have a config and ``failed.json`` but no history to report on; without this
    line they would vanish from the report.
    """
    found = []
    for path in paths:
        for failed in sorted(path.rglob(RunDir.FAILED), key=_natural_key):
            run = RunDir(failed.parent)
            if run.config.is_file() and not run.history.is_file():
                found.append(f"{run.path}: {run.unfinished_reason()}")
    return found


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Each path is a run dir, or a sweep (or any) dir searched for run dirs below it."""
    found: set[Path] = set()
    for path in paths:
        if not path.is_dir():
            raise ReportError(f"{path} is not a directory")
        if is_run_dir(path):
            found.add(path.resolve())
            continue
        found.update(
            history.parent.resolve()
            for history in path.rglob(RunDir.HISTORY)
            if is_run_dir(history.parent)
        )
    if not found:
        where = ", ".join(str(p) for p in paths)
        raise ReportError(
            f"no runs found under {where}: a run dir holds {RunDir.CONFIG} and "
            f"{RunDir.HISTORY}, as `python -m esper.simic` writes them"
        )
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[tuple[int, str]]:
    """Sweep job dirs in numeric order: 2 before 10."""
    return [
        (int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", str(path))
    ]


def read_history(path: Path) -> tuple[dict[str, Any], ...]:
    """The rows of ``metrics.jsonl``; a cut-off last line (a killed run) is dropped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise ReportError(f"{path}:{number} is not a JSON line: {error}") from error
    return tuple(rows)


def load_run_dir(path: Path, name: str) -> Run:
    run = RunDir(path)
    try:
        config = yaml.safe_load(run.config.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ReportError(f"{run.config} is not valid YAML: {error}") from error
    finished = run.summary.is_file()
    return Run(
        name=name,
        source=str(path),
        config=config if isinstance(config, dict) else {},
        summary=json.loads(run.summary.read_text(encoding="utf-8")) if finished else {},
        history=read_history(run.history),
        unfinished=None if finished else run.unfinished_reason(),
    )


def load_local(paths: Iterable[Path]) -> list[Run]:
    """Every run under ``paths``, named by its path below the runs' common parent."""
    run_dirs = find_run_dirs(list(paths))
    root = Path(os.path.commonpath(run_dirs))
    if len(run_dirs) == 1:
        root = root.parent
    return [load_run_dir(path, str(path.relative_to(root))) for path in run_dirs]
