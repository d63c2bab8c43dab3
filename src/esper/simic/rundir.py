"""The one owner of a run directory: every file name a run writes, the atomic writer, the lock.

Training, resume, sweeps, the W&B sink and the report all name files through
``RunDir`` so the layout is declared once:

    <run dir>/
      .hydra/config.yaml      the composed config (written by Hydra, as overrides.yaml)
      run.lock                held (flock) by the process that owns the run: pid and host
      metrics.jsonl           the history, one JSON line per log call
      summary.json            final results: present only once the run finished
      policy.pt               the final policy's state dict
      failed.json             a sweep job that raised: its error line and traceback
      wandb_run_id.txt        the W&B run a resumed run continues
      checkpoints/            checkpoint_NNNNNNN.pt (periodic), best.pt, final.pt,
                              nonfinite_abort.pt
"""

import fcntl
import functools
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"
LOCK_ATTEMPTS = 20
LOCK_RETRY_S = 0.05


@functools.cache
def _file_mode() -> int:
    """A normal file's mode under this process's umask (``mkstemp`` alone gives 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through ``write`` into a temp file beside ``path``, fsync, chmod, rename over it.

    ``os.replace`` is atomic within one filesystem, so readers see the old file or the
    new one, never a torn one; the directory is fsynced so the rename survives a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fchmod(file.fileno(), _file_mode())
            os.fsync(file.fileno())
        Path(tmp_name).replace(path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def write_json_atomic(path: Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2) + "\n")


class RunDirLockedError(RuntimeError):
    """Another live process owns the run dir; the message names its pid and host."""


@dataclass(frozen=True)
class RunDir:
    """A run's directory and the name of everything in it."""

    path: Path

    CONFIG = Path(".hydra") / "config.yaml"
    OVERRIDES = Path(".hydra") / "overrides.yaml"
    LOCK = "run.lock"
    HISTORY = "metrics.jsonl"
    SUMMARY = "summary.json"
    POLICY = "policy.pt"
    FAILED = "failed.json"
    WANDB_RUN_ID = "wandb_run_id.txt"
    CHECKPOINTS = "checkpoints"
    PERIODIC_GLOB = "checkpoint_*.pt"
    BEST = "best.pt"
    FINAL = "final.pt"
    NONFINITE = "nonfinite_abort.pt"

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def overrides(self) -> Path:
        return self.path / self.OVERRIDES

    @property
    def lock(self) -> Path:
        return self.path / self.LOCK

    @property
    def history(self) -> Path:
        return self.path / self.HISTORY

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def policy(self) -> Path:
        return self.path / self.POLICY

    @property
    def failed(self) -> Path:
        return self.path / self.FAILED

    @property
    def wandb_run_id(self) -> Path:
        return self.path / self.WANDB_RUN_ID

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.checkpoints / self.BEST

    @property
    def final(self) -> Path:
        return self.checkpoints / self.FINAL

    @property
    def nonfinite(self) -> Path:
        return self.checkpoints / self.NONFINITE

    def periodic(self, update: int) -> Path:
        return self.checkpoints / f"checkpoint_{update:07d}.pt"

    def periodic_checkpoints(self) -> list[Path]:
        """Periodic checkpoints, oldest first (the zero-padded update orders the names)."""
        return sorted(self.checkpoints.glob(self.PERIODIC_GLOB))

    def run_files(self) -> list[Path]:
        """What a run has written here (Hydra's ``.hydra/`` and log excluded)."""
        names = (self.HISTORY, self.SUMMARY, self.POLICY, self.CHECKPOINTS, self.WANDB_RUN_ID)
        return [self.path / name for name in names if (self.path / name).exists()]

    def last_step(self) -> int | None:
        """The last ``global_step`` in the history (a line torn by a kill is skipped)."""
        if not self.history.exists():
            return None
        step = None
        for line in self.history.read_text(encoding="utf-8").splitlines():
            try:
                step = int(json.loads(line)["global_step"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        return step

    def unfinished_reason(self) -> str:
        """Why the run has no ``summary.json``: failed, still running, stopped or killed."""
        if self.failed.exists():
            return f"failed: {json.loads(self.failed.read_text(encoding='utf-8'))['error']}"
        holder = self.holder()
        if holder is not None:
            return f"running ({holder})"
        step = self.last_step()
        where = f"at step {step}" if step is not None else "before its first update"
        if not self.checkpoints.is_dir():
            return f"unfinished: stopped or killed {where}, no checkpoint"
        return f"unfinished: stopped or killed {where}; resume={self.path} continues it"

    def holder(self) -> str | None:
        """``pid N on host H`` of the live process holding the lock, or None."""
        if not self.lock.exists():
            return None
        with self.lock.open("a+") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.seek(0)
                return file.read().strip() or "another process"
            fcntl.flock(file, fcntl.LOCK_UN)
        return None

    def acquire(self) -> "RunDirLock":
        """Own the run dir until the process exits or ``release``; stale temp files go."""
        self.path.mkdir(parents=True, exist_ok=True)
        file = self.lock.open("a+")
        for attempt in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                file.seek(0)
                holder = file.read().strip()
                # No holder line: a ``holder()`` probe has it for an instant; try again.
                if holder or attempt == LOCK_ATTEMPTS - 1:
                    file.close()
                    raise RunDirLockedError(
                        f"run dir {self.path} is in use by {holder or 'another process'}: wait "
                        "for it to end or stop it (SIGTERM checkpoints it), or choose another "
                        "hydra.run.dir"
                    ) from None
                time.sleep(LOCK_RETRY_S)
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        file.flush()
        # Only the lock holder writes here, so any temp file is a dead writer's leftover.
        for directory in (self.path, self.checkpoints):
            for stray in directory.glob(f".*{TMP_SUFFIX}"):
                stray.unlink(missing_ok=True)
        return RunDirLock(file)


class RunDirLock:
    """A held ``flock`` on ``run.lock``; the OS drops it if the process dies."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file

    def release(self) -> None:
        if not self._file.closed:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()

    def __enter__(self) -> "RunDirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
