"""Benchmark the gradient-statistics collectors: a table on stdout, rows and targets as JSON.

python scripts/bench_collectors.py --quick
python scripts/bench_collectors.py --threads 1 --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from esper.simic.bench.collectors import (
    DEFAULT_SHAPES,
    QUICK_SHAPES,
    check_targets,
    format_table,
    run_collector_benchmark,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write rows, targets and settings as JSON here")
    parser.add_argument("--quick", action="store_true", help="3 shapes, short timings")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, help="interleaved rounds (default 15, quick 5)")
    parser.add_argument("--min-run-time", type=float, help="seconds per candidate per round")
    parser.add_argument("--steps-per-update", type=int, default=64, help="steps per materialize")
    parser.add_argument(
        "--cpu-clock", action="store_true", help="time CPU time, not wall time (shared CPUs)"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    settings = {
        "repeats": args.repeats or (5 if args.quick else 15),
        "min_run_time": args.min_run_time or (0.03 if args.quick else 0.08),
        "threads": args.threads,
        "steps_per_update": args.steps_per_update,
        "device": args.device,
        "cpu_clock": args.cpu_clock,
    }
    rows = run_collector_benchmark(QUICK_SHAPES if args.quick else DEFAULT_SHAPES, **settings)
    targets = check_targets(rows) + check_targets(rows, statistic="us_min")

    clock = "CPU time" if args.cpu_clock else "wall time"
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, {clock}")
    print(format_table(rows))
    print(f"materialize: one call per {args.steps_per_update} steps; us+mat adds its share.")
    print("us/call: median over blocks; min: fastest block (least interference).")
    print("x loop, /clip_grad, bw frac: median over rounds of the ratio within each round.")
    for target in targets:
        worst = "n/a" if target["worst"] is None else f"{target['worst']:.2f}"
        verdict = "met" if target["met"] else "MISSED"
        print(f"[{verdict}] {target['target']} ({target['statistic']}: worst {worst})")
    if args.out:
        meta = {
            **settings,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "quick": args.quick,
        }
        document = {"meta": meta, "rows": rows, "targets": targets}
        args.out.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
