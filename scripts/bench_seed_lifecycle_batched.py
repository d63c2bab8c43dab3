"""Env steps/s of the real (mlp) seed-lifecycle host, batched vs per-env, in one run.

python scripts/bench_seed_lifecycle_batched.py                 # CPU, one torch thread
python scripts/bench_seed_lifecycle_batched.py --device cuda   # the batched rows on a GPU
python scripts/bench_seed_lifecycle_batched.py --reference 32  # reference policies, 32 seeds
python scripts/bench_seed_lifecycle_batched.py --mlp-task impaired  # the presets' task
python scripts/bench_seed_lifecycle_batched.py --reference 32 --mlp-task impaired --reward paired
python scripts/bench_seed_lifecycle_batched.py --paired-cost --mlp-task impaired  # twins' cost
"""

import argparse
import platform

import torch

from esper.simic.bench.seed_lifecycle_batched import (
    reference_markdown,
    reward_cost_table,
    table_markdown,
    throughput_table,
)
from esper.simic.envs.seed_lifecycle.constants import MLP_TASK_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="vector steps timed (40: an episode)")
    parser.add_argument("--device", default="cpu", help="where the batched host computes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--reference", type=int, default=0, help="play the reference policies on this many seeds"
    )
    parser.add_argument("--reward", default="sparse", choices=("shaped", "sparse", "paired"))
    parser.add_argument("--mlp-task", default="baseline", choices=MLP_TASK_NAMES)
    parser.add_argument(
        "--paired-cost", action="store_true", help="env steps/s under sparse vs paired"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch thread(s), batched host on {args.device}, {args.steps} steps per row"
    )
    if args.reference:
        print(reference_markdown(args.reference, args.reward, args.device, args.mlp_task))
    elif args.paired_cost:
        print(reward_cost_table(args.steps, args.device, args.mlp_task))
    else:
        print(table_markdown(throughput_table(args.steps, args.device, args.mlp_task)))


if __name__ == "__main__":
    main()
