"""Env steps/s of the real (mlp) seed-lifecycle host, batched vs per-env, in one run.

python scripts/bench_seed_lifecycle_batched.py                 # CPU, one torch thread
python scripts/bench_seed_lifecycle_batched.py --device cuda   # the batched rows on a GPU
"""

import argparse
import platform

import torch

from esper.simic.bench.seed_lifecycle_batched import table_markdown, throughput_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="vector steps timed (40: an episode)")
    parser.add_argument("--device", default="cpu", help="where the batched host computes")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch thread(s), batched host on {args.device}, {args.steps} steps per row"
    )
    print(table_markdown(throughput_table(args.steps, args.device)))


if __name__ == "__main__":
    main()
