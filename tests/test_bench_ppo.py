"""The PPO throughput benchmark's summary arithmetic, on made-up measurements."""

import pytest

from esper.simic.bench.ppo_throughput import Measurement, format_table, summarize


def measurement(variant: str, round_index: int, steady: float) -> Measurement:
    final_return = None if variant == "sb3" else steady / 10
    return Measurement(variant, round_index, 1000, steady / 2, steady, final_return)


def test_summary_gives_median_ratio_and_each_rounds_ratio():
    measurements = [
        measurement("sb3", 0, 100.0),
        measurement("esper-compiled", 0, 250.0),
        measurement("sb3", 1, 200.0),  # a quiet spell for sb3 in round 1
        measurement("esper-compiled", 1, 300.0),
        measurement("sb3", 2, 110.0),
        measurement("esper-compiled", 2, 260.0),
    ]
    sb3, compiled = summarize(measurements)
    assert sb3["steady_steps_per_s"] == 110.0
    assert "baseline" not in sb3
    assert compiled["baseline"] == "sb3"
    assert compiled["steady_steps_per_s_ratio"] == pytest.approx(260.0 / 110.0)
    assert compiled["end_to_end_steps_per_s_ratio"] == pytest.approx(260.0 / 110.0)
    assert compiled["steady_round_ratios"] == pytest.approx([2.5, 1.5, 260.0 / 110.0])
    table = format_table([sb3, compiled])
    assert compiled["final_returns"] == [25.0, 30.0, 26.0]
    assert sb3["final_returns"] == []
    assert "| esper-compiled | 260 | 2.36 | 2.50 1.50 2.36 | 130 | 2.36 | sb3 | 25 30 26 |" in table
