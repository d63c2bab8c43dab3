"""Data-parallel scaling: env steps/s at 1 and 2 ranks, side by side in one run.

python scripts/bench_distributed.py                  # seed-lifecycle mlp host and CartPole
python scripts/bench_distributed.py --repeats 5 --only seed_lifecycle
python scripts/bench_distributed.py --device cuda    # each rank on its own GPU (NCCL)

Run it on an otherwise idle machine with at least two cores: each rank takes one.
"""

import argparse
import json
import platform
from pathlib import Path

from esper.simic.bench.distributed import (
    cartpole_cases,
    measure,
    seed_lifecycle_cases,
    table_markdown,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--envs", type=int, default=8, help="seed-lifecycle envs per rank")
    parser.add_argument("--steps", type=int, default=128, help="env steps per env and run")
    parser.add_argument("--device", default="cpu", help="trainer.device of every case")
    parser.add_argument("--only", choices=("seed_lifecycle", "cartpole"), default=None)
    parser.add_argument("--json", default=None, help="also write the raw rates here")
    args = parser.parse_args()

    print(
        f"# {platform.node()}, {platform.processor() or platform.machine()}, device {args.device}"
    )
    raw = {}
    if args.only in (None, "seed_lifecycle"):
        cases = seed_lifecycle_cases(args.envs, args.steps)
        rates = measure(cases, args.repeats, args.device)
        print(table_markdown(rates, baseline=cases[0].label), end="\n\n", flush=True)
        raw.update(rates)
    if args.only in (None, "cartpole"):
        cases = cartpole_cases(args.steps * 20)
        rates = measure(cases, args.repeats, args.device)
        print(table_markdown(rates, baseline=cases[0].label), flush=True)
        raw.update(rates)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
