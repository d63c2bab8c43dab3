"""``esper-simic-report seeds``: per-seed results of the integration suite as a committed
JSON and the README's results table, a distribution per preset.

The JSON (``docs/results/seeds.json``) holds every raw result, ours and the peers'
(``scripts/peers_sb3.py`` writes the same format), so the table is regenerated from it
alone. Inputs merge in order: a later result for the same (preset, runner, seed) replaces
an earlier one, so a new sweep updates the rows it ran and keeps the others.
"""

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from esper.simic.report.loading import ReportError
from esper.simic.report.statistics import Bootstrap, aggregate_interval
from esper.simic.rundir import RunDir, write_text_atomic

OURS = "esper-simic"
FORMAT = 1
BEGIN, END = "<!-- seeds-table -->", "<!-- /seeds-table -->"
NOT_RUN = "not run at this commit"


@dataclass(frozen=True)
class SeedResult:
    """One training run's final evaluation; ``final_eval_return`` is None when it failed."""

    preset: str
    runner: str
    seed: int
    final_eval_return: float | None
    budget: int  # configured env steps (total_timesteps)
    commit: str | None  # esper-simic's commit (for a peer: the one its settings came from)
    eval_episodes: int
    deterministic: bool
    version: str | None = None  # a peer's package version
    error: str | None = None


@dataclass
class SeedResults:
    """Thresholds per preset (their order is the table's) and the results under them."""

    thresholds: dict[str, float] = field(default_factory=dict)
    results: list[SeedResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        order = {name: i for i, name in enumerate(self.thresholds)}
        rows = sorted(
            self.results, key=lambda r: (order.get(r.preset, len(order)), r.runner, r.seed)
        )
        return {
            "format": FORMAT,
            "thresholds": self.thresholds,
            "results": [asdict(r) for r in rows],
        }


def merge(parts: list[SeedResults]) -> SeedResults:
    """Later parts win per threshold and per (preset, runner, seed)."""
    merged = SeedResults()
    by_key: dict[tuple[str, str, int], SeedResult] = {}
    for part in parts:
        merged.thresholds.update(part.thresholds)
        by_key.update({(r.preset, r.runner, r.seed): r for r in part.results})
    merged.results = list(by_key.values())
    return merged


def read_sweep(sweep_dir: Path) -> tuple[SeedResults, list[str]]:
    """The finished and failed jobs of a sweep dir, and a line per job left out (running or
    stopped: a result it does not have yet is no failure)."""
    found = SeedResults()
    skipped = []
    for overrides in sorted(sweep_dir.rglob(str(RunDir.OVERRIDES))):
        run = RunDir(overrides.parent.parent)
        config = yaml.safe_load(run.config.read_text()) or {}
        hydra = yaml.safe_load((run.path / ".hydra" / "hydra.yaml").read_text()) or {}
        callbacks = hydra.get("hydra", {}).get("callbacks") or {}
        found.thresholds.update((callbacks.get("sweep_summary") or {}).get("thresholds") or {})
        trainer = config["trainer"]
        common = {
            "preset": str(config["experiment"]),
            "runner": OURS,
            "seed": int(config["seed"]),
            "budget": int(config["total_timesteps"]),
            "eval_episodes": int(trainer["eval_episodes"]),
            "deterministic": bool(trainer["eval_deterministic"]),
        }
        if run.summary.exists() and not run.failed.exists():
            summary = json.loads(run.summary.read_text())
            result = SeedResult(
                final_eval_return=float(summary["final_eval_return_mean"]),
                commit=summary.get("git_commit"),
                **common,
            )
        elif run.failed.exists():
            result = SeedResult(
                final_eval_return=None, commit=None, error=run.unfinished_reason(), **common
            )
        else:
            skipped.append(f"{run.path}: {run.unfinished_reason()}")
            continue
        found.results.append(result)
    if not found.results and not skipped:
        raise ReportError(f"{sweep_dir} holds no job dirs: give a sweep dir of +suite=integration")
    return found, skipped


def read_json(path: Path) -> SeedResults:
    """A seeds JSON written by this module or by scripts/peers_sb3.py."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ReportError(f"{path}: format {data.get('format')!r}, this tool reads {FORMAT}")
        return SeedResults(
            thresholds={k: float(v) for k, v in data["thresholds"].items()},
            results=[SeedResult(**row) for row in data["results"]],
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ReportError(f"{path} is not a seeds JSON ({type(error).__name__}: {error})") from None


def _number(value: float) -> str:
    return f"{value:.4g}"


def _short(commit: str) -> str:
    """A commit's short hash, keeping ``+dirty`` (uncommitted changes when the run began)."""
    sha, plus, rest = commit.partition("+")
    return sha[:7] + plus + rest


def _budget(steps: int) -> str:
    return f"{steps / 1000:g}k" if steps % 1000 == 0 else str(steps)


@dataclass(frozen=True)
class Distribution:
    """What the table says of one runner's seeds on one preset."""

    iqm: str
    low: str
    high: str
    reach: str


def describe(results: list[SeedResult], threshold: float, boot: Bootstrap) -> Distribution:
    """IQM with its 95% bootstrap CI, min, max and how many seeds reach the threshold."""
    scores = np.array([r.final_eval_return for r in results if r.final_eval_return is not None])
    failed = len(results) - len(scores)
    reach = f"{int(np.sum(scores >= threshold))}/{len(results)}"
    if failed:
        reach += f" ({failed} failed)"
    if not len(scores):
        return Distribution("-", "-", "-", reach)
    interval = aggregate_interval([scores], "iqm", boot)
    iqm = _number(interval.estimate)
    if not math.isnan(interval.low):
        iqm += f" [{_number(interval.low)}, {_number(interval.high)}]"
    return Distribution(iqm, _number(scores.min()), _number(scores.max()), reach)


def render_table(table: SeedResults, boot: Bootstrap) -> str:
    """The README's results table: one row per preset and peer, in the thresholds' order."""
    lines = [
        "| preset | budget | threshold | esper-simic IQM [95% CI] | min | max | seeds >= "
        "threshold | peer | peer IQM | peer min | peer seeds >= threshold |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    commits: set[str] = set()
    for preset, threshold in table.thresholds.items():
        runs = [r for r in table.results if r.preset == preset]
        ours = [r for r in runs if r.runner == OURS]
        commits.update(_short(r.commit) for r in ours if r.commit)
        peers = sorted({r.runner for r in runs if r.runner != OURS})
        budgets = sorted({r.budget for r in ours}) or sorted({r.budget for r in runs})
        head = f"| `{preset}` | {', '.join(map(_budget, budgets)) or '-'} | >= {threshold:g} |"
        if ours:
            mine = describe(ours, threshold, boot)
            cells = f" {mine.iqm} | {mine.low} | {mine.high} | {mine.reach} |"
        else:
            cells = f" {NOT_RUN} | | | |"
        for peer in peers or [None]:
            if peer is None:
                lines.append(head + cells + " - | | | |")
                continue
            peer_runs = [r for r in runs if r.runner == peer]
            theirs = describe(peer_runs, threshold, boot)
            label = " ".join([peer, *sorted({r.version for r in peer_runs if r.version})])
            lines.append(
                head + cells + f" {label} | {theirs.iqm} | {theirs.low} | {theirs.reach} |"
            )
    modes = []
    for deterministic, word in ((True, "greedy"), (False, "sampled")):
        counts = sorted(
            {r.eval_episodes for r in table.results if r.deterministic == deterministic}
        )
        if counts:
            modes.append(f"{word} over {' or '.join(map(str, counts))} episodes")
    note = (
        f"Final evaluation return per seed ({', '.join(modes)}); IQM: mean of the middle half "
        f"of the seeds, 95% percentile bootstrap interval over seeds; esper-simic at "
        f"{', '.join(sorted(commits)) or 'no commit'}."
    )
    return "\n".join([*lines, "", note])


def replace_section(text: str, section: str, where: Path) -> str:
    """``text`` with the lines between the seeds-table marker lines replaced by ``section``
    (a marker counts only as a line of its own, not quoted inside prose)."""
    lines = text.split("\n")
    marks = [i for i, line in enumerate(lines) if line.strip() in (BEGIN, END)]
    if [lines[i].strip() for i in marks] != [BEGIN, END]:
        raise ReportError(f"{where} needs the lines {BEGIN} and {END}, once each, in that order")
    start, stop = marks
    return "\n".join([*lines[: start + 1], section, *lines[stop:]])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper-simic-report seeds",
        description="Per-seed results (integration-suite sweep dirs, seeds JSONs) -> the "
        "committed JSON and the README's results table.",
        epilog="examples:\n"
        "  esper-simic-report seeds docs/results/seeds.json multirun/suite_integration/<date> "
        "--json docs/results/seeds.json --readme README.md\n"
        "  esper-simic-report seeds docs/results/seeds.json --readme README.md   # from the JSON",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="sweep dirs, seeds JSONs; merged in order",
    )
    parser.add_argument("--json", type=Path, help="write the merged per-seed results here")
    parser.add_argument(
        "--readme", type=Path, help=f"rewrite the table between {BEGIN} and {END} in this file"
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (0)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        parts = []
        for path in args.paths:
            if path.is_dir():
                part, skipped = read_sweep(path)
                for line in skipped:
                    print(f"warning: left out (no result yet): {line}", file=sys.stderr)
                parts.append(part)
            elif path.is_file():
                parts.append(read_json(path))
            else:
                raise ReportError(f"{path} does not exist: give sweep dirs or seeds JSON files")
        table = merge(parts)
        if not table.thresholds:
            raise ReportError(
                "no thresholds in the inputs: sweep dirs of +suite=integration carry them"
            )
        section = render_table(table, Bootstrap(reps=args.reps, seed=args.seed))
        readme_text = None
        if args.readme:
            if not args.readme.is_file():
                raise ReportError(f"--readme {args.readme} does not exist")
            readme_text = replace_section(args.readme.read_text(), section, args.readme)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(args.json, json.dumps(table.to_json(), indent=1) + "\n")
        if readme_text is not None:
            write_text_atomic(args.readme, readme_text)
        print(section)
    except ReportError as error:
        print(f"esper.simic.report: error: {error}", file=sys.stderr)
        return 2
    return 0
