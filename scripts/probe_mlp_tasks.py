"""Which real-host task makes seeds pay: reference policies per (inputs, label noise, width).

python scripts/probe_mlp_tasks.py --seeds 6 --task 32,0.1,48 --task 4,0,8

Plays WAIT, the heuristic and each blueprint's fixed schedule (SPARSE, K=3, T=40) on the
per-env real host built from each task, and prints one markdown row per task: seeds pay
where a fixed schedule beats WAIT (docs/seed_lifecycle.md, sec. 12).
"""

import argparse

import numpy as np
import torch

from esper.simic.bench.seed_lifecycle_batched import make_reference_policy
from esper.simic.envs.seed_lifecycle import SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.constants import BLUEPRINTS, DEFAULT_NUM_SLOTS
from esper.simic.envs.seed_lifecycle.mlp_host import MlpHost, MlpTask
from esper.simic.envs.seed_lifecycle.policies import run_episode


def parse_task(text: str) -> MlpTask:
    """``INPUTS,NOISE,WIDTH``, e.g. ``4,0,8``."""
    inputs, noise, width = text.split(",")
    return MlpTask(input_dim=int(inputs), label_noise=float(noise), width=int(width))


def mean_return(task: MlpTask, policy: str, seeds: int) -> np.ndarray:
    host = MlpHost(DEFAULT_NUM_SLOTS, task)
    env = SeedLifecycleEnv(host=host, reward="sparse")
    return np.array(
        [run_episode(env, make_reference_policy(policy), s).episode_return for s in range(seeds)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=parse_task, action="append", required=True)
    parser.add_argument("--seeds", type=int, default=6, help="episodes per policy (seeds 0..)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        "| inputs, noise, width | host params | wait | heuristic | best blueprint | "
        "best fixed per seed (hindsight) |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for task in args.task:
        params = MlpHost(DEFAULT_NUM_SLOTS, task).host_params
        wait = mean_return(task, "wait", args.seeds).mean()
        heuristic = mean_return(task, "heuristic", args.seeds).mean()
        fixed = {b.name: mean_return(task, f"fixed_{b.name}", args.seeds) for b in BLUEPRINTS}
        best = max(fixed, key=lambda name: fixed[name].mean())
        hindsight = np.max(list(fixed.values()), axis=0).mean()
        print(
            f"| {task.input_dim}, {task.label_noise}, {task.width} | {params:,} | {wait:.4f} | "
            f"{heuristic:.4f} | {best} {fixed[best].mean():.4f} | {hindsight:.4f} |"
        )


if __name__ == "__main__":
    main()
