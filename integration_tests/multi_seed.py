"""Train one preset over several seeds, two runs at a time, for the learning tests."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from esper.simic.testing import run_training

SEED_PROCESSES = 2
"""CI's machine has two cores, and each run uses one torch thread."""


def final_returns(overrides: list[str], seeds: range, root: Path) -> dict[int, float]:
    """Each seed's final evaluation return; its run dir is ``root/seed<N>``.

    Spawned, not forked: a fork of a process that has run torch can inherit its OpenMP
    pool's locks and hang.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(SEED_PROCESSES, mp_context=context) as pool:
        futures = {
            seed: pool.submit(
                run_training,
                [*overrides, f"seed={seed}", "trainer.torch_threads=1"],
                root / f"seed{seed}",
            )
            for seed in seeds
        }
        return {seed: f.result().final_eval_return_mean for seed, f in futures.items()}
