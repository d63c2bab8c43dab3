"""``report.md``, a self-contained ``report.html`` and ``report.json`` from one ``Report``.

The Markdown and HTML are two renderings of one list of blocks, so they never say
different things; the JSON holds every number, NaN written as null.
"""

import base64
import dataclasses
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esper.simic.report.analysis import MATCH_ATOL, MATCH_RTOL, STRATUM_KEY, Report
from esper.simic.report.statistics import Interval

MARKDOWN = "report.md"
HTML = "report.html"
JSON = "report.json"

# (kind, content): h1/h2/p take a string, ul a list of strings, table (headers, rows),
# img (figure path, caption).
Block = tuple[str, Any]


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.4g}"


def _interval(interval: Interval) -> str:
    if math.isnan(interval.low):
        return f"{_num(interval.estimate)} (no CI)"
    return f"{_num(interval.estimate)} [{_num(interval.low)}, {_num(interval.high)}]"


def _spread(values: Sequence[float], scale: float = 1.0) -> str:
    """Mean over runs with the range, e.g. ``812 (790-840)``."""
    if not values:
        return "-"
    scaled = [v * scale for v in values]
    return f"{_num(sum(scaled) / len(scaled))} ({_num(min(scaled))}-{_num(max(scaled))})"


def default_title(report: Report) -> str:
    return f"{report.metric} by {', '.join(report.group_by) or 'run'}"


def _introduction(report: Report) -> str:
    runs = sum(len(group.runs) for group in report.groups)
    how = "the config keys that differ between runs" if report.group_by_inferred else "--group-by"
    direction = "higher" if report.higher_is_better else "lower"
    return (
        f"{runs} runs in {len(report.groups)} groups, grouped by "
        f"{', '.join(report.group_by) or 'nothing'} (from {how}). Each run scores the last "
        f"value of `{report.metric}` on the `{report.step_axis}` axis; {direction} is better. "
        f"Sources: {', '.join(report.sources)}."
    )


def _score_table(report: Report) -> Block:
    confidence = f"{report.bootstrap.confidence:.0%} CI"
    headers = [
        "group",
        "runs",
        f"mean [{confidence}]",
        f"median [{confidence}]",
        f"IQM [{confidence}]",
        "min",
        "max",
    ]
    rows = [
        [
            g.label,
            str(len(g.runs)),
            _interval(g.mean),
            _interval(g.median),
            _interval(g.iqm),
            _num(g.minimum),
            _num(g.maximum),
        ]
        for g in report.groups
    ]
    return "table", (headers, rows)


def _comparison_table(report: Report) -> Block:
    confidence = f"{report.bootstrap.confidence:.0%} CI"
    headers = ["B", "A", f"P(B>A) [{confidence}]", f"mean(B) - mean(A) [{confidence}]", "verdict"]
    rows = [
        [c.b, c.a, _interval(c.p_b_better), _interval(c.mean_difference), c.outcome]
        for c in report.comparisons
    ]
    return "table", (headers, rows)


def _cost_table(report: Report) -> Block:
    headers = ["group", "runs", "env steps/s, mean (range)", "update time ms, mean (range)"]
    rows = [
        [g.label, str(len(g.runs)), _spread(g.env_steps_per_s), _spread(g.update_s, 1000.0)]
        for g in report.groups
    ]
    return "table", (headers, rows)


def _gradient_table(report: Report) -> Block:
    headers = [
        "A",
        "B",
        "seeds",
        "values compared",
        "max abs diff",
        "max rel diff",
        "largest at",
        "equal",
    ]
    rows = [
        [
            m.a,
            m.b,
            ", ".join(map(str, m.seeds)),
            str(m.points),
            _num(m.max_abs_diff),
            _num(m.max_rel_diff),
            m.worst_key or "-",
            "yes" if m.matches else "no",
        ]
        for m in report.gradient_matches
    ]
    return "table", (headers, rows)


def _method(report: Report) -> list[str]:
    boot = report.bootstrap
    return [
        f"Intervals: {boot.confidence:.0%} percentile bootstrap, {boot.reps} resamples, seed "
        f"{boot.seed} (scipy.stats.bootstrap), stratified: runs are resampled within their "
        f"`{STRATUM_KEY}` and within their group (Agarwal et al. 2021, 'Deep RL at the Edge "
        "of the Statistical Precipice').",
        "IQM: interquartile mean, the mean of the middle 50% of runs; robust to outlier runs "
        "yet tighter than the median.",
        "P(B>A): probability that a run of B beats a run of A, ties counting one half "
        "(Mann-Whitney U / nm), averaged over environments.",
        f"Verdict rule: 'better' only when the interval of P(B>A) excludes 0.5, and only "
        f"with at least {report.min_runs} runs per group: below that percentile-bootstrap "
        "intervals are too narrow. Fully separated groups give an interval of [1, 1] (or "
        "[0, 0]): every resample separates, which is not certainty. Comparisons are not "
        "corrected for multiplicity.",
        "Curves: each run linearly interpolated onto the steps that every run of its group "
        "covers (no extrapolation), then mean and bootstrap band per step.",
    ]


def _figure(figures: Mapping[str, Path], name: str, caption: str) -> list[Block]:
    return [("img", (figures[name], caption))] if name in figures else []


def blocks(report: Report, figures: Mapping[str, Path], title: str) -> list[Block]:
    """The report's content, in order, for any output format; figures where drawn."""
    content: list[Block] = [("h1", title), ("p", _introduction(report))]
    if report.warnings:
        content += [("h2", "Warnings"), ("ul", report.warnings)]
    content.append(("h2", "Verdicts"))
    if report.comparisons:
        content.append(("ul", [c.verdict for c in report.comparisons]))
    else:
        content.append(
            ("p", "One group only, or no two groups share an environment: nothing to compare.")
        )
    content += [("h2", "Final scores"), _score_table(report)]
    content += _figure(figures, "scores", "Final scores per group")
    if report.comparisons:
        content += [("h2", "Comparisons"), _comparison_table(report)]
        content += _figure(figures, "improvement", "Probability of improvement")
    content.append(("h2", "Learning curves"))
    if report.references:
        levels = ", ".join(f"{label} {value:.4g}" for label, value in report.references.items())
        content.append(("p", f"Dotted reference lines: {levels}."))
    content += _figure(figures, "learning_curves", f"{report.metric} against {report.step_axis}")
    content += [
        ("h2", "Throughput and update cost"),
        _cost_table(report),
        (
            "p",
            "Env steps/s comes from each run's summary. The gradient collector's cost is "
            "not logged apart yet: the update time (`time/update_s`, the whole PPO update, "
            "collector included) bounds it. A `time/collector_s` metric would isolate it.",
        ),
    ]
    if len(report.curves) > 1 or report.gradient_matches:
        content.append(("h2", "Gradient statistics"))
        content += _figure(figures, "gradients", "Gradient statistics per group")
    if report.gradient_matches:
        content += [
            _gradient_table(report),
            (
                "p",
                "Runs of equal seed in two groups, every `grad/*` value logged at the same "
                f"step. Equal: within rtol={MATCH_RTOL:g}, atol={MATCH_ATOL:g}. Collectors "
                "that measure the same gradients must be equal; other settings need not.",
            ),
        ]
    content += [("h2", "Method"), ("ul", _method(report))]
    return content


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(content: Sequence[Block], out_dir: Path) -> str:
    lines: list[str] = []
    for kind, value in content:
        if kind == "h1":
            lines += [f"# {value}", ""]
        elif kind == "h2":
            lines += [f"## {value}", ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in value] + [""]
        elif kind == "table":
            headers, rows = value
            lines.append("| " + " | ".join(map(_md_cell, headers)) + " |")
            lines.append("|" + " --- |" * len(headers))
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            path, caption = value
            lines += [f"![{caption}]({Path(path).relative_to(out_dir).as_posix()})", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def _html_text(text: str) -> str:
    """Escaped text with Markdown's inline code spans as ``<code>``."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def to_html(content: Sequence[Block]) -> str:
    """One file, no external references: figures are embedded as base64 data URIs."""
    body: list[str] = []
    title = ""
    for kind, value in content:
        if kind in {"h1", "h2"}:
            title = title or value
            body.append(f"<{kind}>{_html_text(value)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_html_text(value)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_html_text(i)}</li>" for i in value) + "</ul>")
        elif kind == "table":
            headers, rows = value
            head = "".join(f"<th>{_html_text(h)}</th>" for h in headers)
            cells = "".join(
                "<tr>" + "".join(f"<td>{_html_text(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif kind == "img":
            path, caption = value
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json(report: Report, figures: Mapping[str, Path], title: str) -> str:
    data = {
        "title": title,
        **dataclasses.asdict(report),
        "figures": {name: path.name for name, path in figures.items()},
    }
    return json.dumps(_plain(data), indent=2, allow_nan=False) + "\n"


def write_all(
    report: Report, figures: Mapping[str, Path], out_dir: Path, title: str
) -> dict[str, Path]:
    """Write the three report files into ``out_dir`` (beside the figures)."""
    content = blocks(report, figures, title)
    paths = {"markdown": out_dir / MARKDOWN, "html": out_dir / HTML, "json": out_dir / JSON}
    paths["markdown"].write_text(to_markdown(content, out_dir), encoding="utf-8")
    paths["html"].write_text(to_html(content), encoding="utf-8")
    paths["json"].write_text(to_json(report, figures, title), encoding="utf-8")
    return paths


def markdown_text(report: Report, title: str) -> str:
    """The Markdown report without figures: a W&B Report shows live panels instead."""
    return to_markdown(blocks(report, {}, title), Path())
