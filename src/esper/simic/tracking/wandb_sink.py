"""Weights & Biases sink: the only module of esper-simic that imports wandb.

Offline by default, so a run needs no account and no network; its files live in
the run dir, and ``wandb sync <run dir>/wandb/offline-run-*`` uploads them later.
W&B never stops training: a failed online init falls back to offline, and a failed
log call turns the sink off; ``metrics.jsonl`` keeps the full history either way.
"""

import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from traceback import format_exception
from typing import Any

import wandb

from esper.simic.rundir import RunDir, write_text_atomic
from esper.simic.settings import LoggerConfig, WandbMode

log = logging.getLogger(__name__)


def _settings(init_timeout_s: float) -> wandb.Settings:
    return wandb.Settings(
        init_timeout=init_timeout_s,
        # The progress bar is ours; W&B capturing stdout would copy every redraw.
        console="off",
        silent=True,
        # Without a server, W&B's login viewer query adds ~10 s to a failing online init.
        x_disable_viewer=True,
    )


RUN_ID_RELEASE_WAIT_S = 30.0
"""Longest wait for a killed run's wandb-core to release the run id being resumed."""


def _init_waiting_for_run_id(mode: str, kwargs: dict[str, Any], init_timeout_s: float) -> Any:
    """``wandb.init``, retried while the resumed run id is still held.

    After SIGKILL the dead process's wandb-core lives on for a few seconds (measured
    here: gone within 3 s), and a wandb-core shared through an inherited
    ``WANDB_SERVICE`` keeps the dead run registered for as long as it lives; W&B
    refuses the id as "in use" meanwhile. Past the bound, the run continues under a
    new id rather than not at all.
    """
    deadline = time.monotonic() + RUN_ID_RELEASE_WAIT_S
    while True:
        try:
            # Fresh settings per attempt: wandb.init records the run id in the object.
            return wandb.init(mode=mode, settings=_settings(init_timeout_s), **kwargs)
        except Exception as error:
            # The "in use" answer comes wrapped; its text is in the exception chain.
            if "id" not in kwargs or "is in use" not in "".join(format_exception(error)):
                raise
            if time.monotonic() > deadline:
                log.warning(
                    "W&B run id %s is still in use after %.0f s; logging to a new run",
                    kwargs["id"],
                    RUN_ID_RELEASE_WAIT_S,
                )
                fresh = {k: v for k, v in kwargs.items() if k not in {"id", "resume"}}
                return wandb.init(mode=mode, settings=_settings(init_timeout_s), **fresh)
            time.sleep(1.0)


class WandbSink:
    """One W&B run per training run; ``global_step`` is every metric's x-axis.

    Runs with different numbers of envs then compare on environment steps, and
    W&B's own ``_step`` (which restarts on resume) is never needed. With ``resuming``
    the run id saved in the run dir is reused (``resume="allow"``).
    """

    def __init__(
        self,
        config: LoggerConfig,
        run_dir: Path,
        run_config: dict[str, Any],
        resuming: bool = False,
    ) -> None:
        self.config = config
        # The run id is kept in the run dir, so a resumed run continues the same W&B run.
        id_file = RunDir(run_dir).wandb_run_id
        kwargs: dict[str, Any] = {
            "dir": str(run_dir),
            "project": config.project,
            "entity": config.entity,
            "group": config.group,
            "job_type": config.job_type,
            "tags": list(config.tags),
            "name": config.run_name,
            "notes": config.notes,
            "config": run_config,
        }
        if resuming and id_file.exists():
            kwargs |= {"id": id_file.read_text(encoding="utf-8").strip(), "resume": "allow"}
        try:
            self.run = _init_waiting_for_run_id(config.mode.value, kwargs, config.init_timeout_s)
        except Exception as error:
            if config.mode is not WandbMode.online:
                raise
            # Printed, not logged: it must reach the user whatever logging config a
            # launcher's worker process runs under.
            print(
                f"esper.simic: warning: W&B online init failed ({str(error).splitlines()[0]}); "
                "logging offline instead. Upload later with: "
                f"wandb sync {run_dir}/wandb/offline-run-*",
                file=sys.stderr,
                flush=True,
            )
            self.run = wandb.init(
                mode="offline", settings=_settings(config.init_timeout_s), **kwargs
            )
        write_text_atomic(id_file, self.run.id + "\n")
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        self._failed = False

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._failed:
            return
        try:
            self.run.log({"global_step": step, **metrics})
        except Exception as error:
            self._failed = True
            log.warning(
                "W&B logging failed at step %d (%s); W&B is off for the rest of this run, "
                "metrics.jsonl keeps the full history",
                step,
                str(error).splitlines()[0],
            )

    def summarize(self, summary: Mapping[str, Any]) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value

    def log_artifacts(self, files: Mapping[str, Path]) -> None:
        """One ``model`` artifact per run holding the final files (offline too: it syncs)."""
        artifact = wandb.Artifact(f"model-{self.run.id}", type="model")
        for name, path in files.items():
            artifact.add_file(str(path), name=f"{name}{path.suffix}")
        self.run.log_artifact(artifact, aliases=["final"])

    def close(self) -> None:
        self.run.finish()
