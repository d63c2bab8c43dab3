"""PPO training throughput, side by side with Stable-Baselines3 (and sb3-contrib).

Both train at rl-baselines3-zoo's CartPole settings (8 envs, n_steps 32, batch 256,
20 epochs, lr 1e-3, gae_lambda 0.8, gamma 0.98, ent_coef 0) in the same process,
alternating round by round so that load on a shared machine hits all of them alike.
Feed-forward variants train CartPole-v1; recurrent ones the velocity-hidden CartPole
(``esper/StatelessCartPole-v0``) against sb3-contrib's ``RecurrentPPO`` with a 64-unit
LSTM per head and ``VecNormalize``, as in its zoo settings for CartPoleNoVel (our preset's
env normalises observations and rewards too).
Steady-state steps/s leave out the first updates (where compilation happens);
end-to-end steps/s include everything but process start-up.
"""

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from esper.simic.envs.registration import register_esper_envs
from esper.simic.rundir import RunDir
from esper.simic.testing import run_training

ZOO_CARTPOLE = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "learning_rate": 1e-3,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "ent_coef": 0.0,
}
SB3_RECURRENT_POLICY = {
    "lstm_hidden_size": 64,
    "enable_critic_lstm": True,
    "ortho_init": False,
    "net_arch": {"pi": [64], "vf": [64]},
}
"""sb3-contrib's zoo policy for CartPoleNoVel (ReLU there; tanh here, as our preset)."""
VARIANTS = (
    "sb3",
    "esper-eager",
    "esper-compiled",
    "sb3-recurrent",
    "esper-recurrent",
    "esper-recurrent-compiled",
)
BASELINE_OF = {
    "esper-eager": "sb3",
    "esper-compiled": "sb3",
    "esper-recurrent": "sb3-recurrent",
    "esper-recurrent-compiled": "sb3-recurrent",
}
RECURRENT_COMPILED = ["agent.rnn.impl=esper", "agent.compile=true"]
"""``esper-recurrent-compiled``: unpadded windows through esper's LSTM kernel, and each
gradient step compiled whole; ``esper-recurrent`` is the default (torch's fused LSTM)."""
EVAL_EPISODES = 8
"""Deterministic episodes that score each variant's final policy (its learning result)."""
WARMUP_UPDATES = 3
"""Updates left out of steady-state figures (compilation, allocator warm-up)."""


@dataclass(frozen=True)
class Measurement:
    variant: str
    round: int
    env_steps: int
    end_to_end_steps_per_s: float
    steady_steps_per_s: float
    final_return: float | None


def measure_esper(variant: str, steps: int, round_index: int) -> Measurement:
    """Train the variant's preset (the zoo settings) without eval or checkpoints."""
    recurrent = variant.startswith("esper-recurrent")
    experiment = "stateless_cartpole_rppo" if recurrent else "cartpole_ppo"
    # The recurrent preset learns with 10 epochs and 16-step chunks; time it at the zoo's
    # values instead, with chunks as long as sb3-contrib's sequences (the whole rollout).
    zoo_overrides = [
        f"agent.update_epochs={ZOO_CARTPOLE['n_epochs']}",
        f"agent.gamma={ZOO_CARTPOLE['gamma']}",
        f"agent.gae_lambda={ZOO_CARTPOLE['gae_lambda']}",
        f"agent.seq_len={ZOO_CARTPOLE['n_steps']}",
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        result = run_training(
            [
                f"+experiment={experiment}",
                *(zoo_overrides if recurrent else []),
                *(RECURRENT_COMPILED if variant == "esper-recurrent-compiled" else []),
                f"total_timesteps={steps}",
                *(["agent.compile=true"] if variant == "esper-compiled" else []),
                "logger=none",
                "trainer.progress=off",
                "trainer.eval_interval=0",
                "trainer.checkpoint_interval=0",
                f"trainer.eval_episodes={EVAL_EPISODES}",
            ],
            Path(run_dir),
        )
        rows = [json.loads(line) for line in RunDir(Path(run_dir)).history.open()]
    updates = [r for r in rows if "time/update_s" in r][WARMUP_UPDATES:]
    busy = sum(r["time/rollout_s"] + r["time/update_s"] for r in updates)
    batch = ZOO_CARTPOLE["n_envs"] * ZOO_CARTPOLE["n_steps"]
    return Measurement(
        variant=variant,
        round=round_index,
        env_steps=result.total_env_steps,
        end_to_end_steps_per_s=result.env_steps_per_s,
        steady_steps_per_s=len(updates) * batch / busy,
        final_return=result.final_eval_return_mean,
    )


def measure_sb3(variant: str, steps: int, round_index: int, seed: int = 0) -> Measurement:
    """Stable-Baselines3's PPO, or sb3-contrib's RecurrentPPO for ``sb3-recurrent``, at the
    same settings (``pip install -e .[bench]``)."""
    from sb3_contrib import RecurrentPPO  # noqa: PLC0415 - optional dependency
    from stable_baselines3 import PPO  # noqa: PLC0415
    from stable_baselines3.common.callbacks import BaseCallback  # noqa: PLC0415
    from stable_baselines3.common.env_util import make_vec_env  # noqa: PLC0415
    from stable_baselines3.common.evaluation import evaluate_policy  # noqa: PLC0415
    from stable_baselines3.common.vec_env import VecNormalize  # noqa: PLC0415

    class UpdateClock(BaseCallback):
        """Timestamps each rollout start, i.e. each update boundary."""

        def __init__(self) -> None:
            super().__init__()
            self.stamps: list[float] = []

        def _on_rollout_start(self) -> None:
            self.stamps.append(time.perf_counter())

        def _on_step(self) -> bool:
            return True

    zoo = ZOO_CARTPOLE
    recurrent = variant == "sb3-recurrent"
    register_esper_envs()
    env_id = "esper/StatelessCartPole-v0" if recurrent else "CartPole-v1"
    envs = make_vec_env(env_id, n_envs=zoo["n_envs"], seed=seed)
    if recurrent:  # the zoo's `normalize: true` for CartPoleNoVel; our preset's env does too
        envs = VecNormalize(envs, gamma=zoo["gamma"])
    algorithm, policy, extra = (
        (RecurrentPPO, "MlpLstmPolicy", {"policy_kwargs": SB3_RECURRENT_POLICY})
        if recurrent
        else (PPO, "MlpPolicy", {})
    )
    model = algorithm(
        policy,
        envs,
        n_steps=zoo["n_steps"],
        batch_size=zoo["batch_size"],
        n_epochs=zoo["n_epochs"],
        learning_rate=zoo["learning_rate"],
        gae_lambda=zoo["gae_lambda"],
        gamma=zoo["gamma"],
        ent_coef=zoo["ent_coef"],
        seed=seed,
        device="cpu",
        verbose=0,
        **extra,
    )
    clock = UpdateClock()
    start = time.perf_counter()
    model.learn(steps, callback=clock)
    elapsed = time.perf_counter() - start
    stamps = [*clock.stamps, time.perf_counter()][WARMUP_UPDATES:]
    batch = zoo["n_envs"] * zoo["n_steps"]
    if isinstance(envs, VecNormalize):  # score with frozen statistics and raw rewards
        envs.training, envs.norm_reward = False, False
    final_return, _ = evaluate_policy(model, envs, n_eval_episodes=EVAL_EPISODES)
    envs.close()
    return Measurement(
        variant=variant,
        round=round_index,
        env_steps=model.num_timesteps,
        end_to_end_steps_per_s=model.num_timesteps / elapsed,
        steady_steps_per_s=(len(stamps) - 1) * batch / (stamps[-1] - stamps[0]),
        final_return=float(final_return),
    )


def run_benchmark(steps: int, rounds: int, variants: list[str]) -> list[Measurement]:
    measurements = []
    for round_index in range(rounds):
        for variant in variants:
            measure = measure_sb3 if variant.startswith("sb3") else measure_esper
            measurement = measure(variant, steps, round_index)
            print(
                f"round {round_index} {variant:15s} steady {measurement.steady_steps_per_s:8.0f} "
                f"steps/s, end-to-end {measurement.end_to_end_steps_per_s:8.0f} steps/s",
                flush=True,
            )
            measurements.append(measurement)
    return measurements


def summarize(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """Median steps/s per variant and its ratio to its baseline's median (``BASELINE_OF``).

    Also the steady-state ratio within each round (``steady_round_ratios``): the two ran
    minutes apart at most, so a slow spell of a shared machine that hit one round shows as
    that round's outlier instead of moving a median. ``final_returns``: each round's
    learning result, in round order (a learner's speed can depend on what it has learnt:
    longer episodes, fewer sequences to replay).
    """
    variants = list(dict.fromkeys(m.variant for m in measurements))
    medians = {
        v: {
            key: statistics.median(getattr(m, key) for m in measurements if m.variant == v)
            for key in ("steady_steps_per_s", "end_to_end_steps_per_s")
        }
        for v in variants
    }
    steady = {(m.variant, m.round): m.steady_steps_per_s for m in measurements}
    rounds = sorted({m.round for m in measurements})
    rows: list[dict[str, Any]] = []
    for variant in variants:
        row: dict[str, Any] = {"variant": variant, **medians[variant]}
        row["final_returns"] = [
            m.final_return
            for m in measurements
            if m.variant == variant and m.final_return is not None
        ]
        baseline = BASELINE_OF.get(variant)
        if baseline in medians:
            row["baseline"] = baseline
            for key in ("steady_steps_per_s", "end_to_end_steps_per_s"):
                row[f"{key}_ratio"] = medians[variant][key] / medians[baseline][key]
            row["steady_round_ratios"] = [
                steady[variant, r] / steady[baseline, r]
                for r in rounds
                if (variant, r) in steady and (baseline, r) in steady
            ]
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| variant | steady steps/s | ratio | per-round ratios | end-to-end steps/s | ratio | vs "
        "| final returns |"
    )
    lines = [header, "|---|---:|---:|---|---:|---:|---|---|"]
    for row in rows:
        per_round = " ".join(f"{r:.2f}" for r in row.get("steady_round_ratios", []))
        returns = " ".join(f"{r:.0f}" for r in row.get("final_returns", []))
        lines.append(
            f"| {row['variant']} | {row['steady_steps_per_s']:.0f} | "
            f"{row.get('steady_steps_per_s_ratio', float('nan')):.2f} | {per_round} | "
            f"{row['end_to_end_steps_per_s']:.0f} | "
            f"{row.get('end_to_end_steps_per_s_ratio', float('nan')):.2f} | "
            f"{row.get('baseline', '')} | {returns} |"
        )
    return "\n".join(lines)


def write_results(path: Path, measurements: list[Measurement], threads: int) -> None:
    path.write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": threads,
                "settings": ZOO_CARTPOLE,
                "measurements": [asdict(m) for m in measurements],
                "summary": summarize(measurements),
            },
            indent=2,
        )
    )
