"""The real seed-lifecycle host, batched: throughput against per-env, reference policies.

* :func:`throughput_table`: each row builds the vector env a run would
  (:func:`make_vector_env`, ``host="mlp"``), drives it with random legal actions for
  whole episodes (seeds germinate, blend, prune and fossilize along the way) and times
  ``envs.step`` alone, so the policy costs nothing.
* :func:`reward_cost_table`: what the PAIRED reward's twin hosts cost, each row timed
  under SPARSE and PAIRED back to back.
* :func:`reference_results`: a reference policy's episodes on the real host, one
  batched env per seed, with the numbers the per-env host would give.
"""

import time
from typing import Any, Final, NamedTuple

import numpy as np
import torch

from esper.simic.envs.factory import make_vector_env
from esper.simic.envs.seed_lifecycle import SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.constants import BLUEPRINT_INDEX, BLUEPRINTS
from esper.simic.envs.seed_lifecycle.policies import (
    POLICIES,
    POLICY_NAMES,
    EpisodeResult,
    FixedSchedulePolicy,
    RandomPolicy,
    ReferencePolicy,
)
from esper.simic.envs.seed_lifecycle.vector import SeedLifecycleVectorEnv
from esper.simic.settings import EnvConfig, Vectorization

ENV_ID: Final = "esper/SeedLifecycle-v0"
# (vectorization, num_envs): the per-env host under gymnasium's vector envs, then batched.
ROWS: Final = (("sync", 8), ("async", 8), ("batched", 8), ("batched", 64), ("batched", 256))
# The rows :func:`reward_cost_table` times: the per-env host, and batches up to the
# presets' 32 envs and beyond.
REWARD_COST_ROWS: Final = (("sync", 8), ("batched", 8), ("batched", 32), ("batched", 64))


class Row(NamedTuple):
    vectorization: str
    num_envs: int
    steps_per_s: float


def vector_steps_per_second(
    vectorization: str,
    num_envs: int,
    steps: int,
    device: str = "cpu",
    seed: int = 0,
    mlp_task: str = "baseline",
    reward: str = "shaped",
) -> float:
    """Env steps per second of wall time over ``steps`` vector steps (all envs counted)."""
    config = EnvConfig(
        id=ENV_ID,
        num_envs=num_envs,
        vectorization=Vectorization[vectorization],
        kwargs={"host": "mlp", "mlp_task": mlp_task, "reward": reward},
    )
    envs = make_vector_env(config, gamma=0.99, device=device)
    try:
        policies = [RandomPolicy() for _ in range(num_envs)]
        template = SeedLifecycleEnv()
        for i, policy in enumerate(policies):
            policy.reset(template, seed + i)
        obs, info = envs.reset(seed=seed)
        # A batched env steps in tensors on its device, as training drives it.
        tensors = isinstance(obs, torch.Tensor)
        elapsed = 0.0
        for _ in range(steps):
            obs, masks = _numpy(obs), _numpy(info["action_mask"])
            actions = np.stack(
                [policy.act(obs[i], {"action_mask": masks[i]}) for i, policy in enumerate(policies)]
            )
            env_actions = torch.as_tensor(actions, device=device) if tensors else actions
            start = time.perf_counter()
            obs, _, _, _, info = envs.step(env_actions)
            elapsed += time.perf_counter() - start
    finally:
        envs.close()
    return steps * num_envs / elapsed


def _numpy(batch: np.ndarray | torch.Tensor) -> np.ndarray:
    return batch.cpu().numpy() if isinstance(batch, torch.Tensor) else batch


def throughput_table(steps: int, device: str = "cpu", mlp_task: str = "baseline") -> list[Row]:
    """Every row of :data:`ROWS`, measured in this one run."""
    return [
        Row(v, n, vector_steps_per_second(v, n, steps, device, mlp_task=mlp_task)) for v, n in ROWS
    ]


def table_markdown(rows: list[Row]) -> str:
    """The table, with each row's speed-up over the per-env host under ``sync``."""
    base = next(r.steps_per_s for r in rows if r.vectorization == "sync")
    lines = ["| vectorization | envs | env steps/s | vs per-env sync |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r.vectorization} | {r.num_envs} | {r.steps_per_s:,.0f} | {r.steps_per_s / base:.1f}x |"
        for r in rows
    ]
    return "\n".join(lines)


def reward_cost_table(
    steps: int, device: str = "cpu", mlp_task: str = "baseline", repeats: int = 2
) -> str:
    """Markdown: env steps/s of each :data:`REWARD_COST_ROWS` row under SPARSE and PAIRED,
    timed alternately ``repeats`` times each (best kept, as the least disturbed by other
    jobs), and their ratio. ``steps`` >= ``max_epochs`` (40) covers an episode's end, where
    PAIRED validates the twins."""
    lines = [
        f"| vectorization ({mlp_task}) | envs | sparse steps/s | paired steps/s | paired/sparse |",
        "|---|---:|---:|---:|---:|",
    ]
    for vectorization, num_envs in REWARD_COST_ROWS:
        best = dict.fromkeys(("sparse", "paired"), 0.0)
        for _ in range(repeats):
            for reward in best:
                sps = vector_steps_per_second(
                    vectorization, num_envs, steps, device, mlp_task=mlp_task, reward=reward
                )
                best[reward] = max(best[reward], sps)
        sparse, paired = best["sparse"], best["paired"]
        lines.append(
            f"| {vectorization} | {num_envs} | {sparse:,.0f} | {paired:,.0f} | "
            f"{paired / sparse:.2f} |"
        )
    return "\n".join(lines)


def make_reference_policy(name: str) -> ReferencePolicy:
    """A reference policy by name; ``fixed_<blueprint>`` is the fixed schedule growing that
    blueprint (``fixed_schedule`` grows conv_small)."""
    blueprint = name.removeprefix("fixed_")
    if blueprint in BLUEPRINT_INDEX:
        return FixedSchedulePolicy(blueprint)
    return POLICIES[name]()


def reference_results(
    policy_name: str, seeds: list[int], device: str = "cpu", **env_kwargs: Any
) -> list[EpisodeResult]:
    """``policy_name``'s episode on each seed, all played at once on the batched real host.

    Each env is reset with its seed and its policy bound to it, as ``run_episode`` does.
    """
    envs = SeedLifecycleVectorEnv(len(seeds), device=device, host="mlp", **env_kwargs)
    obs, info = envs.reset(seed=list(seeds))
    policies = [make_reference_policy(policy_name) for _ in seeds]
    for policy, env, seed in zip(policies, envs.envs, seeds, strict=True):
        policy.reset(env, seed)
    returns, illegal = np.zeros(len(seeds)), np.zeros(len(seeds), dtype=int)
    while True:
        actions = np.stack(
            [p.act(obs[i], {"action_mask": info["action_mask"][i]}) for i, p in enumerate(policies)]
        )
        obs, rewards, terminated, _, info = envs.step(actions)
        returns += rewards
        if terminated.all():  # every episode lasts max_epochs steps
            final = info["final_info"]
            illegal += final["illegal_action"]
            return [
                EpisodeResult(
                    float(returns[i]),
                    float(final["final_accuracy"][i]),
                    int(illegal[i]),
                    len(final["fossilized_blueprints"][i]),
                )
                for i in range(len(seeds))
            ]
        illegal += info["illegal_action"]


def reference_markdown(
    num_seeds: int, reward: str, device: str = "cpu", mlp_task: str = "baseline"
) -> str:
    """Markdown: each reference policy on the real host, seeds 0..num_seeds-1, then each
    blueprint's fixed schedule and the best of those per seed in hindsight.

    The oracle reads the surrogate's hidden gains, which a real network does not have;
    the best fixed schedule per seed, picked after the fact, stands in for it.
    """
    lines = [
        f"| policy ({reward}, {mlp_task}) | return | final acc % | fossilized per episode |",
        "|---|---:|---:|---:|",
    ]
    names = [n for n in POLICY_NAMES if n != "oracle"] + [f"fixed_{b.name}" for b in BLUEPRINTS]
    fixed_returns = []
    for name in names:
        results = reference_results(
            name, list(range(num_seeds)), device, reward=reward, mlp_task=mlp_task
        )
        table = np.array(
            [[r.episode_return, r.final_accuracy, r.fossilized_seeds] for r in results]
        )
        if name.startswith("fixed_") and name != "fixed_schedule":
            fixed_returns.append(table[:, 0])
        mean = table.mean(axis=0)
        lines.append(f"| {name} | {mean[0]:.4f} | {mean[1]:.1f} | {mean[2]:.2f} |")
    best = np.max(fixed_returns, axis=0).mean()
    lines.append(f"| best fixed schedule per seed (hindsight) | {best:.4f} | | |")
    return "\n".join(lines)
