"""Facts about a run recorded beside its results: code version, atomic JSON files."""

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_SOURCE_DIR = Path(__file__).resolve().parent


def git_commit() -> str | None:
    """The commit of the esper-simic source that runs, or None outside a git checkout.

    A ``+dirty`` suffix marks uncommitted changes, which the commit alone would not
    reproduce.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=_SOURCE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_SOURCE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON so that readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
    Path(tmp_name).replace(path)
