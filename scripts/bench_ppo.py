"""PPO throughput on CartPole versus Stable-Baselines3, side by side in one run.

pip install -e ".[bench]"
python scripts/bench_ppo.py --steps 40000 --rounds 3 --out bench_ppo.json
"""

import argparse
from pathlib import Path

import torch

from esper.simic.bench.ppo_throughput import (
    VARIANTS,
    format_table,
    run_benchmark,
    summarize,
    write_results,
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=40_000, help="env steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (all variants)"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["sb3", "esper-eager", "esper-compiled"],
        choices=VARIANTS,
    )
    parser.add_argument("--out", type=Path, help="write measurements and summary as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    measurements = run_benchmark(args.steps, args.rounds, args.variants)
    print(format_table(summarize(measurements)))
    if args.out is not None:
        write_results(args.out, measurements, args.threads)


if __name__ == "__main__":
    main()
