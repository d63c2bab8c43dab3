"""Benchmarks for esper/SeedLifecycle-v0 (thin CLI over esper.simic.bench.seed_lifecycle).

python scripts/bench_seed_lifecycle.py                      # steps/s, surrogate and mlp
python scripts/bench_seed_lifecycle.py --reference-table    # 1,000 seeds, markdown
python scripts/bench_seed_lifecycle.py --compare-hosts      # surrogate vs mlp
"""

import argparse
import platform

import torch

from esper.simic.bench.seed_lifecycle import (
    CONSTRUCTIONS,
    blueprint_markdown,
    compare_hosts,
    reference_literal,
    reference_markdown,
    reference_table,
    steps_per_second,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=250, help="surrogate episodes timed")
    parser.add_argument("--mlp-episodes", type=int, default=2, help="mlp episodes timed")
    parser.add_argument("--reference-table", action="store_true")
    parser.add_argument("--seeds", type=int, default=1000, help="seeds per table cell")
    parser.add_argument("--reward", default="shaped", choices=("shaped", "escrow", "sparse"))
    parser.add_argument("--blueprint-table", action="store_true")
    parser.add_argument("--compare-hosts", action="store_true")
    parser.add_argument("--compare-episodes", type=int, default=5)
    args = parser.parse_args()
    # Tiny networks run fastest on one thread; this is the benchmark's own process.
    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    if args.reference_table:
        print(f"reference returns, reward={args.reward}, {args.seeds} seeds (mean ± s.e.):\n")
        table = reference_table(args.seeds, args.reward)
        decimals = 4 if args.reward == "sparse" else 2
        print(reference_markdown(table, decimals))
        print(f"\nREFERENCE_RETURNS_BY_REWARD[{args.reward!r}] =")
        print(reference_literal(table, decimals + 1))
        return
    if args.blueprint_table:
        print(f"fixed schedule per blueprint, {args.seeds} seeds: return (final accuracy)\n")
        print(blueprint_markdown(args.seeds))
        return
    if args.compare_hosts:
        print(compare_hosts(args.compare_episodes))
        return
    for construction in CONSTRUCTIONS:
        sps = steps_per_second(args.episodes, construction)
        print(f"surrogate [{construction}]: {sps.wall:,.0f} steps/s ({sps.cpu:,.0f} per CPU s)")
    sps = steps_per_second(args.mlp_episodes, "class", host="mlp")
    print(f"mlp [class]: {sps.wall:,.1f} steps/s ({sps.cpu:,.1f} per CPU s)")


if __name__ == "__main__":
    main()
