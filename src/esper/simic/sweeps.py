"""Sweep plumbing: failed jobs that do not end a sweep, and the sweep-level summary.

Hydra's sweepers re-raise the first failed job once its batch is done (basic, joblib,
submitit) and then skip ``on_multirun_end``, so one bad job would lose every other
job's row. In a multirun the task function therefore catches the failure, records it
in the job dir as ``failed.json`` and returns NaN, which Optuna counts as a failed
trial. ``SweepSummary`` then reads every job dir from disk, because with joblib or
submitit the jobs (and their ``on_job_end`` callbacks) run in other processes.
"""

import json
import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from esper.simic.distributed import detect_ranks
from esper.simic.rundir import RunDir, RunDirLockedError, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

SUMMARY_NAME = "sweep_summary"


def run_guarded(task: Callable[[DictConfig], float], cfg: DictConfig) -> float:
    """Run one sweep job; on failure write ``failed.json`` and return NaN instead of raising."""
    try:
        return task(cfg)
    except RunDirLockedError as error:
        log.error("job not run: %s", error)  # its dir is another process's to write
        return math.nan
    except Exception as error:
        if not detect_ranks().main:  # rank 0 of a multi-task job writes the job's outcome
            log.error("job failed on this rank: %s", error)
            return math.nan
        job = RunDir(Path(HydraConfig.get().runtime.output_dir))
        line = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        write_json_atomic(job.failed, {"error": line, "traceback": traceback.format_exc()})
        log.error("job failed: %s", line)
        return math.nan


@dataclass(frozen=True)
class JobRow:
    """One job of a sweep as its dir on disk tells it."""

    job: str
    overrides: list[str]
    experiment: str
    final_eval_return: float | None
    env_steps_per_s: float | None
    status: str
    error: str | None
    passed: bool | None


def read_job(job_dir: Path, sweep_dir: Path, thresholds: dict[str, float]) -> JobRow:
    """A job is ``ok`` only with a ``summary.json``; otherwise its row says why not."""
    run = RunDir(job_dir)
    overrides = yaml.safe_load(run.overrides.read_text()) or []
    config = yaml.safe_load(run.config.read_text()) or {}
    experiment = str(config.get("experiment", ""))
    result = error = steps_per_s = None
    if run.summary.exists() and not run.failed.exists():
        summary = json.loads(run.summary.read_text())
        result, steps_per_s = summary["final_eval_return_mean"], summary["env_steps_per_s"]
    else:
        error = run.unfinished_reason()
    threshold = thresholds.get(experiment)
    return JobRow(
        job=str(job_dir.relative_to(sweep_dir)),
        overrides=[str(o) for o in overrides],
        experiment=experiment,
        final_eval_return=result,
        env_steps_per_s=steps_per_s,
        status="ok" if error is None else error.split(":")[0].split(" ")[0],
        error=error,
        passed=None if threshold is None else result is not None and result >= threshold,
    )


def _job_key(job_dir: Path, sweep_dir: Path) -> list[tuple[int, str]]:
    """Numeric-aware order, so job 10 comes after job 9."""
    parts = job_dir.relative_to(sweep_dir).parts
    return [(int(p), "") if p.isdigit() else (-1, p) for p in parts]


def collect_jobs(sweep_dir: Path, thresholds: dict[str, float] | None = None) -> list[JobRow]:
    """Every job dir under ``sweep_dir`` (any depth: an Optuna study spans several runs)."""
    job_dirs = [p.parent.parent for p in sweep_dir.rglob(str(RunDir.OVERRIDES))]
    job_dirs = [d for d in job_dirs if d != sweep_dir]
    job_dirs.sort(key=lambda d: _job_key(d, sweep_dir))
    return [read_job(d, sweep_dir, thresholds or {}) for d in job_dirs]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def format_markdown(rows: list[JobRow]) -> str:
    with_threshold = any(r.passed is not None for r in rows)
    header = "| job | overrides | final eval return | steps/s | status |"
    rule = "| --- | --- | --- | --- | --- |"
    if with_threshold:
        header, rule = header + " pass |", rule + " --- |"
    lines = [header, rule]
    for r in rows:
        status = r.status if r.error is None else r.error.replace("|", "\\|")
        line = (
            f"| {r.job} | {' '.join(r.overrides)} | {_cell(r.final_eval_return)} "
            f"| {_cell(r.env_steps_per_s)} | {status} |"
        )
        if with_threshold:
            line += f" {'' if r.passed is None else ('PASS' if r.passed else 'FAIL')} |"
        lines.append(line)
    ok = sum(r.status == "ok" for r in rows)
    footer = f"{ok} of {len(rows)} jobs ok"
    if with_threshold:
        judged = [r for r in rows if r.passed is not None]
        footer += f"; {sum(bool(r.passed) for r in judged)} of {len(judged)} reached the threshold"
    return "\n".join(["# Sweep summary", "", *lines, "", footer, ""])


class SweepSummary(Callback):
    """Writes ``<sweep dir>/sweep_summary.{md,json}`` when a multirun ends.

    ``thresholds`` maps an experiment name to the final eval return it must reach; with
    it the table gains a pass/fail column (the integration suite).
    """

    def __init__(self, thresholds: dict[str, float] | None = None) -> None:
        self.thresholds = dict(thresholds or {})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_sweep_summary(Path(config.hydra.sweep.dir), self.thresholds)


def write_sweep_summary(sweep_dir: Path, thresholds: dict[str, float] | None = None) -> Path:
    """``sweep_summary.{md,json}`` from the job dirs on disk; also written by a stopped sweep."""
    rows = collect_jobs(sweep_dir, thresholds)
    markdown = write_text_atomic(sweep_dir / f"{SUMMARY_NAME}.md", format_markdown(rows))
    payload = {"thresholds": dict(thresholds or {}), "jobs": [asdict(r) for r in rows]}
    write_json_atomic(sweep_dir / f"{SUMMARY_NAME}.json", payload)
    failed = sum(r.status != "ok" for r in rows)
    log.info("sweep summary: %s (%d not ok)", markdown, failed)
    return markdown


class CollectorBenchmark(Callback):
    """The performance suite's gradient-collector micro-benchmarks, into
    ``<sweep dir>/collectors.json``.

    They time microseconds, so they run in the launching process after the training jobs
    have finished rather than as jobs beside them. ``quick`` times three shapes of five.
    """

    def __init__(
        self, repeats: int = 15, min_run_time: float = 0.08, threads: int = 1, quick: bool = False
    ) -> None:
        self.repeats, self.min_run_time, self.threads = repeats, min_run_time, threads
        self.quick = quick

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from esper.simic.bench.collectors import (  # noqa: PLC0415 - only this suite pays
            DEFAULT_SHAPES,
            QUICK_SHAPES,
            check_targets,
            run_collector_benchmark,
        )

        rows = run_collector_benchmark(
            QUICK_SHAPES if self.quick else DEFAULT_SHAPES,
            repeats=self.repeats,
            min_run_time=self.min_run_time,
            threads=self.threads,
        )
        out = Path(config.hydra.sweep.dir) / "collectors.json"
        out.write_text(json.dumps({"rows": rows, "targets": check_targets(rows)}, indent=2))
        log.info("collector benchmark: %s", out)
