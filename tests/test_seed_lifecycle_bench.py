"""The seed-lifecycle throughput benchmark measures what it says: each construction of the
env replays the same recorded episodes, so its figures compare like with like.

Speed itself is not asserted here (a timed test fails on a slow or loaded machine and
proves nothing on a fast one): ``scripts/bench_seed_lifecycle.py`` prints the figures,
side by side in one run, and docs/seed_lifecycle.md sec. 10 records them.
"""

import math

import pytest

from esper.simic.bench import seed_lifecycle
from esper.simic.bench.seed_lifecycle import CONSTRUCTIONS, Throughput, steps_per_second


def assert_measured(figures: Throughput) -> None:
    """Both clocks gave a positive, finite rate."""
    assert math.isfinite(figures.wall) and figures.wall > 0
    assert math.isfinite(figures.cpu) and figures.cpu > 0


def test_every_construction_replays_the_same_episodes(monkeypatch):
    stepped: dict[str, int] = {}
    make = seed_lifecycle._make

    def counting_make(construction, **kwargs):
        env = make(construction, **kwargs)
        step = env.step

        def counted(action):
            stepped[construction] = stepped.get(construction, 0) + 1
            return step(action)

        env.step = counted
        return env

    monkeypatch.setattr(seed_lifecycle, "_make", counting_make)
    for construction in CONSTRUCTIONS:
        assert_measured(steps_per_second(3, construction))
    recorded = sum(len(a) for a in seed_lifecycle._record_actions(3))
    assert stepped == dict.fromkeys(CONSTRUCTIONS, recorded)


def test_the_real_host_is_timed_too():
    assert_measured(steps_per_second(1, "class", host="mlp", max_epochs=8))


def test_unknown_construction_is_refused():
    with pytest.raises(ValueError, match="construction must be one of"):
        steps_per_second(1, "lambda")
