"""The collector benchmark: a smoke run, and the target arithmetic on made-up timings."""

import statistics

import pytest

from esper.simic.bench.collectors import (
    BenchShape,
    check_targets,
    format_table,
    run_collector_benchmark,
)


def test_smoke_run_times_every_candidate():
    shape = BenchShape("3x8x8", ((8, 8),) * 3, "many-small")
    rows = run_collector_benchmark([shape], repeats=1, min_run_time=0.001, steps_per_update=4)
    keys = {(r["implementation"], r["clip"]) for r in rows}
    collectors = {
        (name, clip) for name in ("loop", "foreach", "fused", "none") for clip in (False, True)
    }
    extra = {("clip_grad_norm_", True), ("bandwidth_ref", False), ("materialize", False)}
    assert keys == collectors | extra
    assert all(r["us"] > 0 and r["us_min"] <= r["us"] for r in rows)
    assert len(format_table(rows).splitlines()) == len(rows) + 1
    assert len(check_targets(rows)) == 3


def made_up_rows() -> list[dict]:
    timings = {
        # many-small: foreach 3x loop without clip, 1.25x with; fused 1.1x clip_grad_norm_.
        ("small", "many-small"): {
            ("loop", False): 300.0,
            ("foreach", False): 100.0,
            ("fused", False): 100.0,
            ("loop", True): 500.0,
            ("foreach", True): 400.0,
            ("fused", True): 110.0,
            ("none", True): 100.0,
            ("clip_grad_norm_", True): 100.0,
            ("bandwidth_ref", False): 10.0,
        },
        # large: reference 1000 us per pass; loop without clip reaches 1000/1250 = 0.8.
        ("big", "large"): {
            ("loop", False): 1250.0,
            ("foreach", False): 1000.0,
            ("fused", False): 1000.0,
            ("loop", True): 4000.0,
            ("foreach", True): 4000.0,
            ("fused", True): 3000.0,
            ("none", True): 3000.0,
            ("clip_grad_norm_", True): 2000.0,
            ("bandwidth_ref", False): 1000.0,
        },
    }
    return [
        {"shape": shape, "category": category, "implementation": impl, "clip": clip, "us": us}
        for (shape, category), by_key in timings.items()
        for (impl, clip), us in by_key.items()
    ]


def test_targets_from_made_up_timings():
    rows = made_up_rows()
    results = {r["target"]: (r["met"], r["worst"]) for r in check_targets(rows, "us")}
    assert list(results.values()) == [
        (True, pytest.approx(3.0)),  # foreach vs loop, statistics only
        (False, pytest.approx(1.5)),  # fused+clip / clip_grad_norm_: large shape 3000/2000
        (True, pytest.approx(0.8)),  # worst bandwidth fraction: loop without clip on large
    ]


def test_paired_ratios_ignore_a_round_that_slowed_one_side():
    """Round 2 slows foreach alone, round 3 loop alone: within-round ratios stay 3x in two of
    three rounds, so their median is 3, where the ratio of the medians (300 / 300) says 1."""
    rows = made_up_rows()
    slowed = {("loop", False): [300.0, 300.0, 900.0], ("foreach", False): [100.0, 300.0, 300.0]}
    for row in rows:
        times = (
            slowed.get((row["implementation"], row["clip"])) if row["shape"] == "small" else None
        )
        row["us_rounds"] = times or [row["us"]] * 3
        row["us"] = statistics.median(row["us_rounds"])
    paired = check_targets(rows)[0]
    medians = check_targets(rows, "us")[0]
    assert (paired["statistic"], paired["met"], paired["worst"]) == ("paired", True, 3.0)
    assert (medians["met"], medians["worst"]) == (False, 1.0)
