"""Throughput of esper/SeedLifecycle-v0: the surrogate must run >= 10,000 steps/s single-env.

Measured in steps per CPU second of this process (best of three short runs), so other jobs
on a shared machine do not fail the test; the figures print with ``pytest -s``, and
``scripts/bench_seed_lifecycle.py`` gives wall-time figures too.
"""

import torch

from esper.simic.bench.seed_lifecycle import CONSTRUCTIONS, steps_per_second


def test_surrogate_runs_at_least_10k_steps_per_second():
    figures = {c: max(steps_per_second(25, c).cpu for _ in range(3)) for c in CONSTRUCTIONS}
    print("surrogate steps per CPU second:", {c: round(v) for c, v in figures.items()})
    assert figures["class"] >= 10_000
    assert figures["make"] >= 10_000


def test_mlp_host_benchmark_figure():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks run fastest on one thread
    try:
        sps = steps_per_second(1, "class", host="mlp", max_epochs=8)
    finally:
        torch.set_num_threads(threads)
    print(f"mlp steps/s: {sps.wall:.1f} (per CPU second: {sps.cpu:.1f})")
    assert sps.wall > 2.0
