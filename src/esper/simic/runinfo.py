"""Facts about a run recorded beside its results: the code version."""

import subprocess
from pathlib import Path

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
