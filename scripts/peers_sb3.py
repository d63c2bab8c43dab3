"""Stable-Baselines3 PPO and sb3-contrib RecurrentPPO at the presets' own settings, on the
same seeds, into a seeds JSON for ``esper-simic-report seeds`` (the README table's peers).

pip install -e ".[bench]"
python scripts/peers_sb3.py --presets cartpole_ppo acrobot_ppo --seeds 0-9 --jobs 2
esper-simic-report seeds docs/results/seeds.json docs/results/peers.json \
    --json docs/results/seeds.json --readme README.md

Each finished run is merged into --out at once, so a stopped batch keeps what it ran.
"""

import argparse
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from esper.simic.bench.peers import PRESETS, train_peer
from esper.simic.report.seeds import SeedResults, merge, read_json
from esper.simic.rundir import write_text_atomic


def seed_list(text: str) -> list[int]:
    """``0-9`` or ``0,3,7``."""
    first, dash, last = text.partition("-")
    if dash:
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-9"), help="0-9 or 0,3")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one thread each")
    parser.add_argument("--out", type=Path, default=Path("docs/results/peers.json"))
    args = parser.parse_args()
    table = read_json(args.out) if args.out.exists() else SeedResults()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(train_peer, p, s) for p in args.presets for s in args.seeds]
        for future in as_completed(futures):
            result = future.result()
            table = merge([table, SeedResults(results=[result])])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(args.out, json.dumps(table.to_json(), indent=1) + "\n")
            print(
                f"{result.runner} {result.preset} seed {result.seed}: {result.final_eval_return:g}"
            )


if __name__ == "__main__":
    main()
