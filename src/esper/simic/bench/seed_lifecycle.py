"""Benchmarks of ``esper/SeedLifecycle-v0``: throughput, reference returns, surrogate vs mlp.

* :func:`steps_per_second` times ``env.step`` alone: actions are recorded first by a
  random-legal policy, then replayed on the same seeds, so the policy costs nothing; it
  reports steps per second of wall time and of CPU time.
* :func:`reference_table` computes the reference policies' mean returns per difficulty
  (the numbers behind ``REFERENCE_RETURNS``).
* :func:`blueprint_markdown` prices each blueprint: the fixed schedule run with it alone.
* :func:`compare_hosts` runs the same policies on the surrogate and on the real MLP host
  and summarises both side by side.
"""

import time
from typing import Any, Final, NamedTuple

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esper.simic.envs.registration import register_esper_envs
from esper.simic.envs.seed_lifecycle.constants import BLUEPRINTS, DIFFICULTIES, SeedStage
from esper.simic.envs.seed_lifecycle.env import SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.policies import (
    POLICY_NAMES,
    FixedSchedulePolicy,
    RandomPolicy,
    WaitPolicy,
    evaluate_policy,
    run_episode,
)

ENV_ID: Final = "esper/SeedLifecycle-v0"
# How the env is built for timing: the class itself, gym.make without the passive env
# checker, and plain gym.make (checker on; it inspects only the first reset/step).
CONSTRUCTIONS: Final = ("class", "make", "make_checked")


def _make(construction: str, **env_kwargs: Any) -> gym.Env[Any, Any]:
    if construction == "class":
        return SeedLifecycleEnv(**env_kwargs)
    register_esper_envs()
    checked = construction == "make_checked"
    return gym.make(ENV_ID, disable_env_checker=not checked, **env_kwargs)


def _record_actions(episodes: int, **env_kwargs: Any) -> list[list[NDArray[np.int64]]]:
    """Random-legal actions for seeds 0..episodes-1, to be replayed on the same seeds."""
    env = SeedLifecycleEnv(**env_kwargs)
    policy = RandomPolicy()
    recorded: list[list[NDArray[np.int64]]] = []
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        policy.reset(env, seed)
        actions: list[NDArray[np.int64]] = []
        terminated = False
        while not terminated:
            actions.append(policy.act(obs, info))
            obs, _, terminated, _, info = env.step(actions[-1])
        recorded.append(actions)
    return recorded


class Throughput(NamedTuple):
    """Env steps per second of wall time and of this process's CPU time.

    On a shared machine other processes steal wall time; CPU time measures the env's own
    cost. For the MLP host, whose torch ops may use several threads, wall time is the
    one to read.
    """

    wall: float
    cpu: float


def steps_per_second(episodes: int, construction: str = "class", **env_kwargs: Any) -> Throughput:
    """Env steps per second, single env, over ``episodes`` replayed random-legal episodes."""
    if construction not in CONSTRUCTIONS:
        raise ValueError(f"construction must be one of {list(CONSTRUCTIONS)}, got {construction!r}")
    recorded = _record_actions(episodes, **env_kwargs)
    env = _make(construction, **env_kwargs)
    steps = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for seed, actions in enumerate(recorded):
        env.reset(seed=seed)
        for action in actions:
            env.step(action)
        steps += len(actions)
    return Throughput(steps / (time.perf_counter() - wall), steps / (time.process_time() - cpu))


class ReferenceEntry(NamedTuple):
    """Mean return of one policy on one difficulty, its standard error, and the mean final
    accuracy (%): the task's ground truth, which a return can hide."""

    mean: float
    stderr: float
    final_accuracy: float


def reference_table(num_seeds: int, reward: str = "shaped") -> dict[str, dict[str, ReferenceEntry]]:
    """table[difficulty][policy] over seeds 0..num_seeds-1 with the default env settings."""
    table: dict[str, dict[str, ReferenceEntry]] = {}
    for difficulty in DIFFICULTIES:
        table[difficulty] = {}
        for name in POLICY_NAMES:
            results = evaluate_policy(name, range(num_seeds), difficulty=difficulty, reward=reward)
            returns = np.array([r.episode_return for r in results])
            stderr = float(returns.std(ddof=1) / np.sqrt(len(returns))) if num_seeds > 1 else 0.0
            accuracy = float(np.mean([r.final_accuracy for r in results]))
            table[difficulty][name] = ReferenceEntry(float(returns.mean()), stderr, accuracy)
    return table


def reference_markdown(table: dict[str, dict[str, ReferenceEntry]], decimals: int = 2) -> str:
    """The table as markdown, one row per difficulty: mean +- s.e. (final accuracy)."""
    lines = [
        "| difficulty | " + " | ".join(POLICY_NAMES) + " |",
        "|---|" + "---:|" * len(POLICY_NAMES),
    ]
    for difficulty, row in table.items():
        cells = (
            f"{row[n].mean:.{decimals}f} ± {row[n].stderr:.{decimals}f} "
            f"({row[n].final_accuracy:.1f}%)"
            for n in POLICY_NAMES
        )
        lines.append(f"| {difficulty} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_literal(table: dict[str, dict[str, ReferenceEntry]], decimals: int) -> str:
    """The means as a Python dict literal, ready to paste into ``reference.py``."""
    rows = {
        difficulty: {name: round(entry.mean, decimals) for name, entry in row.items()}
        for difficulty, row in table.items()
    }
    return repr(rows)


def blueprint_markdown(num_seeds: int) -> str:
    """Mean return and final accuracy of the fixed schedule run with each blueprint."""
    lines = [
        "| difficulty | " + " | ".join(bp.name for bp in BLUEPRINTS) + " |",
        "|---|" + "---:|" * len(BLUEPRINTS),
    ]
    for difficulty in DIFFICULTIES:
        env = SeedLifecycleEnv(difficulty=difficulty)
        cells = []
        for bp in BLUEPRINTS:
            policy = FixedSchedulePolicy(bp.name)
            results = [run_episode(env, policy, seed) for seed in range(num_seeds)]
            mean_return = np.mean([r.episode_return for r in results])
            accuracy = np.mean([r.final_accuracy for r in results])
            cells.append(f"{mean_return:.1f} ({accuracy:.1f}%)")
        lines.append(f"| {difficulty} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class HostSummary(NamedTuple):
    """One policy's behaviour on one host, averaged over episodes."""

    final_accuracy: float
    accuracy_at: dict[int, float]  # epoch -> mean validation accuracy
    contribution: float  # mean last counterfactual of fossilized seeds, pp
    harmful_fraction: float  # fossilized seeds whose contribution is negative
    seconds_per_episode: float


def _summarise(
    host: str, policy_name: str, episodes: int, checkpoints: tuple[int, ...]
) -> HostSummary:
    env = SeedLifecycleEnv(host=host)
    if policy_name == "wait":
        policy: Any = WaitPolicy()
    else:
        policy = FixedSchedulePolicy(policy_name)
    finals, contributions = [], []
    curves: dict[int, list[float]] = {epoch: [] for epoch in checkpoints}
    start = time.perf_counter()
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        policy.reset(env, seed)
        terminated = False
        while not terminated:
            if env.epoch in curves:
                curves[env.epoch].append(env.val_accuracy)
            obs, _, terminated, _, info = env.step(policy.act(obs, info))
        finals.append(info["final_accuracy"])
        contributions += [
            s.contribution
            for s in env.seeds
            if s is not None and s.stage == SeedStage.FOSSILIZED and s.contribution is not None
        ]
    elapsed = (time.perf_counter() - start) / episodes
    return HostSummary(
        final_accuracy=float(np.mean(finals)),
        accuracy_at={epoch: float(np.mean(values)) for epoch, values in curves.items()},
        contribution=float(np.mean(contributions)) if contributions else float("nan"),
        harmful_fraction=float(np.mean(np.array(contributions) < 0)) if contributions else 0.0,
        seconds_per_episode=elapsed,
    )


def compare_hosts(episodes: int, checkpoints: tuple[int, ...] = (5, 10, 20, 40)) -> str:
    """Markdown: the host alone (WAIT) and each blueprint's fixed schedule, on both hosts."""
    lines = [
        "| policy | host | final acc | "
        + " | ".join(f"acc@{e}" for e in checkpoints)
        + " | contribution (pp) | harmful | s/episode |",
        "|---|---|---:|" + "---:|" * len(checkpoints) + "---:|---:|---:|",
    ]
    for name in ("wait", *(bp.name for bp in BLUEPRINTS)):
        for host in ("surrogate", "mlp"):
            summary = _summarise(host, name, episodes, checkpoints)
            curve = " | ".join(f"{summary.accuracy_at[e]:.1f}" for e in checkpoints)
            contribution = "—" if name == "wait" else f"{summary.contribution:+.2f}"
            harmful = "—" if name == "wait" else f"{summary.harmful_fraction:.0%}"
            lines.append(
                f"| {name} | {host} | {summary.final_accuracy:.1f} | {curve} | "
                f"{contribution} | {harmful} | {summary.seconds_per_episode:.2f} |"
            )
    return "\n".join(lines)
