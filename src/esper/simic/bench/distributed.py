"""Data-parallel scaling: the training loop's env steps/s at 1 and 2 ranks, side by side.

Each case is a whole run as a user starts it (``python -m esper.simic`` or ``torchrun``),
at the same per-rank settings, so two ranks step twice the envs; its ``summary.json``
gives the loop's env steps/s (rollouts and updates, evaluation excluded). Cases run
interleaved, ``repeats`` rounds, and a ratio is formed within each round, so a load
change on a shared machine moves both sides of a ratio alike.
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final, NamedTuple

TORCHRUN: Final = (sys.executable, "-m", "torch.distributed.run", "--standalone")
QUIET: Final = ("logger=none", "trainer.progress=off", "trainer.eval_interval=0")


class Case(NamedTuple):
    label: str
    ranks: int
    overrides: tuple[str, ...]


def seed_lifecycle_cases(envs_per_rank: int, steps: int) -> list[Case]:
    """The real-network host (``env.kwargs.host=mlp``), batched per rank, at 1 and 2
    ranks, and one process stepping the same total envs with gymnasium's async vector
    env (one subprocess per env)."""
    base = ("+experiment=seed_lifecycle_mlp_ppo", "agent.num_steps=32", "agent.update_epochs=2")

    def run(envs: int, vectorization: str) -> tuple[str, ...]:
        batch = 32 * envs
        return (
            *base,
            f"env.num_envs={envs}",
            f"env.vectorization={vectorization}",
            f"agent.minibatch_size={batch // 2}",
            f"total_timesteps={steps * envs}",
        )

    total = 2 * envs_per_rank
    return [
        Case(f"mlp host, 1 rank x {envs_per_rank} batched envs", 1, run(envs_per_rank, "batched")),
        Case(f"mlp host, 2 ranks x {envs_per_rank} batched envs", 2, run(total, "batched")),
        Case(f"mlp host, 1 process x {total} async envs", 1, run(total, "async")),
    ]


def cartpole_cases(steps: int) -> list[Case]:
    """Feed-forward CartPole at ``cartpole_ppo``'s settings: 8 envs per rank."""
    base = ("+experiment=cartpole_ppo",)
    doubled = (*base, "env.num_envs=16", "agent.minibatch_size=512")
    return [
        Case("cartpole, 1 rank x 8 envs", 1, (*base, f"total_timesteps={steps * 8}")),
        Case("cartpole, 2 ranks x 8 envs", 2, (*doubled, f"total_timesteps={steps * 16}")),
    ]


def run_case(case: Case, work: Path, device: str) -> float:
    """One run of ``case``; its training loop's env steps/s."""
    run_dir = Path(tempfile.mkdtemp(dir=work))
    launcher = [*TORCHRUN, f"--nproc_per_node={case.ranks}"] if case.ranks > 1 else [sys.executable]
    command = [*launcher, "-m", "esper.simic", *case.overrides, *QUIET,
               f"trainer.device={device}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # torchrun ends with its own summary; the rank's own error line comes before it.
        lines = [line for line in done.stderr.splitlines() if "Error" in line or "esper" in line]
        raise RuntimeError(f"{case.label} failed: {(lines or ['?'])[-1]}")
    return float(json.loads((run_dir / "summary.json").read_text())["env_steps_per_s"])


def measure(cases: list[Case], repeats: int, device: str) -> dict[str, list[float]]:
    """Every case once per round, ``repeats`` rounds; env steps/s per case and round."""
    rates: dict[str, list[float]] = {case.label: [] for case in cases}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(repeats):
            for case in cases:
                rates[case.label].append(run_case(case, Path(work), device))
    return rates


def table_markdown(rates: dict[str, list[float]], baseline: str) -> str:
    """Median steps/s per case, and its median per-round ratio to ``baseline``."""
    lines = ["| case | env steps/s (median) | rounds | vs 1 rank (median of per-round ratios) |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for label, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates[baseline], strict=True)]
        lines.append(
            f"| {label} | {statistics.median(values):.0f} | {len(values)} "
            f"| {statistics.median(ratios):.2f}x |"
        )
    return "\n".join(lines)
