"""``esper-simic-report`` (``python -m esper.simic.report``): compare groups of runs with
honest statistics.

A plain argparse CLI rather than a Hydra app: its inputs are paths and a handful of
options, and it must not create Hydra output dirs of its own among the runs it reads.
"""

import argparse
import math
import os
import sys
from datetime import datetime
from pathlib import Path

from esper.simic.report import seeds
from esper.simic.report.analysis import (
    DEFAULT_METRIC,
    DEFAULT_STEP_AXIS,
    Report,
    Settings,
    analyze,
)
from esper.simic.report.loading import ReportError, Run, failed_before_history, load_local
from esper.simic.report.plots import draw_all
from esper.simic.report.render import default_title, markdown_text, write_all
from esper.simic.report.statistics import Bootstrap

EXIT_REPORT_ERROR = 2
DEFAULT_PROJECT = "esper-simic"

EPILOG = """\
examples:
  esper-simic-report seeds docs/results/seeds.json --readme README.md   # the seeds table
  esper-simic -m +experiment=cartpole_ppo seed=0,1,2,3,4 collector=loop,foreach
  esper-simic-report multirun/cartpole_ppo/2026-01-01_12-00-00 --group-by collector.name
  esper-simic-report --wandb me/esper-simic --wandb-filters '{"group": "sweep-3"}'

The report goes to <dir>/reports/<date>_<time> inside the dir it reads (the dirs' common
parent when several are given), or ./reports/<date>_<time> for W&B runs; --out overrides.

Each run scores the last value of --metric; groups are compared by the probability
that a run of one beats a run of the other, P(B>A), with a stratified-bootstrap 95%
interval. "B is better than A" only when that interval excludes 0.5 and each group
has at least --min-runs runs; otherwise "no significant difference" or "too few runs".
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper-simic-report",
        description="Compare groups of esper-simic runs: tables, curves, verdicts.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="DIR", help="run dirs or sweep dirs to search"
    )
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", help="read runs from W&B instead (online)"
    )
    parser.add_argument(
        "--wandb-filters", metavar="JSON", help='MongoDB-style run filter, e.g. {"group": "x"}'
    )
    parser.add_argument(
        "--group-by",
        action="append",
        default=[],
        metavar="KEY",
        help="config key to group by, repeatable (default: the keys that differ but seed)",
    )
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"history key to compare (default {DEFAULT_METRIC})",
    )
    parser.add_argument(
        "--step-axis", default=DEFAULT_STEP_AXIS, help=f"x axis (default {DEFAULT_STEP_AXIS})"
    )
    parser.add_argument("--lower-is-better", action="store_true", help="for losses, times, ...")
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        type=reference_level,
        metavar="LABEL=VALUE",
        help="a level of the metric to draw on the learning curves, repeatable "
        "(e.g. heuristic=1.0)",
    )
    parser.add_argument(
        "--out", type=Path, help="output dir (default <dir>/reports/<date>_<time>, see below)"
    )
    parser.add_argument("--title", help="report title (default: metric by group keys)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    parser.add_argument(
        "--min-runs", type=int, default=5, help="fewest runs per group for a verdict (5)"
    )
    parser.add_argument(
        "--no-wandb",
        action="store_true",
        help="no W&B output (default: log the report as an artifact, offline for run dirs)",
    )
    return parser


def reference_level(text: str) -> tuple[str, float]:
    """Parse ``LABEL=VALUE`` for --reference."""
    label, sep, value = text.rpartition("=")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not sep or not label or not math.isfinite(number):
        raise argparse.ArgumentTypeError(
            f"needs LABEL=VALUE with a finite number, e.g. heuristic=1.0; got {text!r}"
        )
    return label, number


def default_out_dir(paths: list[Path], now: datetime) -> Path:
    """Inside the sweep (or run) dir the report reads, so it travels with the runs; for
    runs read from W&B there is no such dir, and the report goes under ./reports."""
    root = Path(os.path.commonpath([p.resolve() for p in paths])) if paths else Path()
    return root / "reports" / now.strftime("%Y-%m-%d_%H-%M-%S")


def _load(args: argparse.Namespace) -> list[Run]:
    if bool(args.paths) == bool(args.wandb):
        raise ReportError("give run/sweep dirs or --wandb ENTITY/PROJECT (one of the two)")
    if args.paths:
        return load_local(args.paths)
    from esper.simic.report import wandb_io  # noqa: PLC0415 - wandb loads only when asked

    return wandb_io.fetch_runs(
        wandb_io.connect(), args.wandb, wandb_io.parse_filters(args.wandb_filters)
    )


def _project(runs: list[Run]) -> str:
    """Where the offline report run goes: the runs' own W&B project when they agree."""
    projects = {run.config.get("logger", {}).get("project") for run in runs}
    return projects.pop() if len(projects) == 1 and None not in projects else DEFAULT_PROJECT


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["seeds"]:  # per-seed results and the README table: report/seeds.py
        return seeds.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.confidence < 1 or args.reps < 1 or args.min_runs < 1:
        parser.error("need 0 < --confidence < 1, --reps >= 1 and --min-runs >= 1")
    try:
        runs = _load(args)
        settings = Settings(
            metric=args.metric,
            step_axis=args.step_axis,
            group_by=tuple(args.group_by),
            higher_is_better=not args.lower_is_better,
            min_runs=args.min_runs,
            bootstrap=Bootstrap(reps=args.reps, confidence=args.confidence, seed=args.seed),
            references=tuple(args.reference),
        )
        sources = [str(p) for p in args.paths] or [f"wandb:{args.wandb}"]
        report = analyze(runs, settings, sources)
        report.warnings.extend(
            f"no history to report: {line}" for line in failed_before_history(args.paths)
        )
        out_dir = args.out or default_out_dir(args.paths, datetime.now())
        title = args.title or default_title(report)
        figures = draw_all(report, out_dir)
        files = write_all(report, figures, out_dir, title)
        for comparison in report.comparisons:
            print(comparison.verdict)
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(
            f"report: {files['html']} ({files['markdown'].name}, {files['json'].name}, "
            f"{len(figures)} figures)"
        )
        if not args.no_wandb:
            _publish(args, report, runs, [*files.values(), *figures.values()], out_dir, title)
    except ReportError as error:
        print(f"esper.simic.report: error: {error}", file=sys.stderr)
        return EXIT_REPORT_ERROR
    return 0


def _publish(
    args: argparse.Namespace,
    report: Report,
    runs: list[Run],
    files: list[Path],
    out_dir: Path,
    title: str,
) -> None:
    from esper.simic.report import wandb_io  # noqa: PLC0415 - wandb loads only when asked

    if args.wandb:
        entity, project = wandb_io.parse_project(args.wandb)
        wandb_report = wandb_io.build_wandb_report(
            report, runs, entity, project, title, markdown_text(report, title)
        )
        print(f"W&B report: {wandb_io.save_wandb_report(wandb_report)}")
        where = wandb_io.log_artifact(report, files, out_dir, project, entity, mode="online")
        print(f"W&B report run: {where}")
    else:
        where = wandb_io.log_artifact(report, files, out_dir, _project(runs), None)
        print(f"W&B offline report run: {where} (upload with: wandb sync {where})")


if __name__ == "__main__":
    raise SystemExit(main())
