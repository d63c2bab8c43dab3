"""W&B in and out: the only module of ``esper.simic.report`` that imports wandb.

In: runs of an ``entity/project`` through W&B's public API, turned into the same
``Run`` records as local run dirs. Out: the report files as an artifact of a
``job_type=report`` run (offline by default, synced later like any run), and online
a W&B Report built with wandb-workspaces, which shows the same comparison next to the
runs' live panels.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import wandb

from esper.simic.report.analysis import Report
from esper.simic.report.loading import ReportError, Run

JOB_TYPE = "report"
ARTIFACT_NAME = "simic-report"
ARTIFACT_TYPE = "report"
API_TIMEOUT_S = 60


class ApiRun(Protocol):
    """The part of ``wandb.apis.public.Run`` that reports read."""

    id: str
    url: str
    job_type: str | None
    config: dict[str, Any]
    summary_metrics: dict[str, Any]

    def scan_history(self) -> Iterable[Mapping[str, Any]]: ...


class Api(Protocol):
    def runs(self, path: str, filters: dict[str, Any] | None = None) -> Iterable[ApiRun]: ...


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def parse_project(path: str) -> tuple[str, str]:
    parts = path.split("/")
    if len(parts) != 2 or not all(parts):
        raise ReportError(f"--wandb takes ENTITY/PROJECT, got {path!r}")
    return parts[0], parts[1]


def parse_filters(text: str | None) -> dict[str, Any] | None:
    """A MongoDB-style filter as W&B's ``Api.runs`` takes it, e.g. ``{"group": "sweep-3"}``."""
    if not text:
        return None
    try:
        filters = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(f"--wandb-filters is not JSON: {error}") from error
    if not isinstance(filters, dict):
        raise ReportError("--wandb-filters must be a JSON object")
    return filters


def connect() -> Api:
    """W&B's public API; an error that says how to log in rather than a traceback."""
    try:
        return wandb.Api(timeout=API_TIMEOUT_S)
    except Exception as error:
        raise ReportError(
            f"cannot reach the W&B API ({_first_line(error)}); log in with `wandb login` or "
            "set WANDB_API_KEY, or report on local run dirs instead"
        ) from error


def fetch_runs(api: Api, project_path: str, filters: dict[str, Any] | None) -> list[Run]:
    """The project's runs matching ``filters``, with full (unsampled) histories.

    ``scan_history`` rather than ``history``: the sampled history would compare
    gradient statistics at different steps. Earlier report runs are left out.
    """
    entity, project = parse_project(project_path)
    try:
        found = [
            run
            for run in api.runs(f"{entity}/{project}", filters=filters)
            if run.job_type != JOB_TYPE
        ]
        runs = [
            Run(
                name=run.id,
                source=run.url,
                config=dict(run.config),
                summary=dict(run.summary_metrics),
                history=tuple(dict(row) for row in run.scan_history()),
            )
            for run in found
        ]
    except ReportError:
        raise
    except Exception as error:
        raise ReportError(
            f"W&B: cannot read runs of {project_path}: {_first_line(error)}"
        ) from error
    if not runs:
        raise ReportError(f"no runs found in W&B project {project_path} matching {filters or {}}")
    return runs


def _settings() -> wandb.Settings:
    # As the training sink: no console capture, no login viewer query when offline.
    return wandb.Settings(console="off", silent=True, x_disable_viewer=True)


def log_artifact(
    report: Report,
    files: Sequence[Path],
    out_dir: Path,
    project: str,
    entity: str | None,
    mode: str = "offline",
) -> str:
    """Log the report files as an artifact of a ``job_type=report`` run.

    Returns where the run is: its URL online, its directory offline (for ``wandb sync``).
    """
    run = wandb.init(
        project=project,
        entity=entity,
        job_type=JOB_TYPE,
        mode=mode,
        dir=str(out_dir),
        config={
            "metric": report.metric,
            "step_axis": report.step_axis,
            "group_by": report.group_by,
            "sources": report.sources,
        },
        settings=_settings(),
    )
    try:
        verdicts = [comparison.verdict for comparison in report.comparisons]
        artifact = wandb.Artifact(
            ARTIFACT_NAME,
            type=ARTIFACT_TYPE,
            description=f"esper.simic.report: {report.metric} by {', '.join(report.group_by)}",
            metadata={"verdicts": verdicts},
        )
        for path in files:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
        run.summary["verdicts"] = verdicts
        location = run.url if mode == "online" else str(Path(run.dir).parent)
    finally:
        run.finish()
    return location or ""


def build_wandb_report(
    report: Report, runs: Sequence[Run], entity: str, project: str, title: str, markdown: str
) -> Any:
    """A wandb-workspaces Report: the Markdown report, then the runs' curves grouped.

    Not saved here (saving needs a login); ``save_wandb_report`` does that.
    """
    try:
        import wandb_workspaces.reports.v2 as wr  # noqa: PLC0415 - only the online path needs it
    except ImportError as error:
        raise ReportError(
            "a W&B Report needs wandb-workspaces: pip install wandb-workspaces"
        ) from error
    ids = ", ".join(repr(run.name) for run in runs)
    runset = wr.Runset(
        entity=entity,
        project=project,
        name="compared runs",
        filters=f"Metric('ID') in [{ids}]",
        groupby=[f"config.{key}" for key in report.group_by],
    )
    panels = [
        wr.LinePlot(
            title=key,
            x=report.step_axis,
            y=[key],
            groupby_aggfunc="mean",
            groupby_rangefunc="stderr",
        )
        for key in report.curves
    ]
    return wr.Report(
        project=project,
        entity=entity,
        title=title,
        description="Built by python -m esper.simic.report",
        blocks=[wr.MarkdownBlock(text=markdown), wr.PanelGrid(runsets=[runset], panels=panels)],
    )


def save_wandb_report(wandb_report: Any) -> str:
    try:
        wandb_report.save()
    except Exception as error:
        raise ReportError(f"W&B: cannot save the report: {_first_line(error)}") from error
    return str(wandb_report.url)
