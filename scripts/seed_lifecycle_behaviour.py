"""What a trained seed-lifecycle agent does, beside Esper's heuristic and the oracle.

A return alone can hide reward hacking: this plays the run's final policy (deterministic)
and the reference policies on the same fresh seeds and prints, per policy, the mean
return under a chosen reward, the final accuracy (the task's ground truth), fossilized
seeds, how often each op is taken and the sum of each reward component per episode.

python scripts/seed_lifecycle_behaviour.py outputs/seed_lifecycle_rppo/<date_time> --episodes 100
"""

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from omegaconf import OmegaConf

from esper.simic.assembly import action_spec, build_policy
from esper.simic.checkpoint import load_checkpoint
from esper.simic.config import load_settings
from esper.simic.envs.normalization import make_normalizer
from esper.simic.envs.seed_lifecycle import Op, SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.policies import POLICIES, ReferencePolicy
from esper.simic.rundir import RunDir
from esper.simic.settings import SimicConfig

FRESH_SEEDS = 50_000
"""Episodes are played on seeds from here on, away from training and eval seeds."""


class TrainedPolicy:
    """A run's final policy behind the reference policies' interface.

    It acts as the run's evaluation did: the distribution's mode under
    ``trainer.eval_deterministic``, else a sample (``deterministic`` overrides).
    """

    def __init__(self, run_dir: Path, deterministic: bool | None = None) -> None:
        # The run's own resolved config: presets may have changed since it ran.
        schema = OmegaConf.structured(SimicConfig)
        settings = load_settings(OmegaConf.merge(schema, OmegaConf.load(RunDir(run_dir).config)))
        self.env_kwargs: dict[str, Any] = dict(settings.env.kwargs)
        self.deterministic = (
            settings.trainer.eval_deterministic if deterministic is None else deterministic
        )
        probe = SeedLifecycleEnv(**self.env_kwargs)
        obs_dim = probe.observation_space.shape[0]
        actions = action_spec(probe.action_space, probe.metadata)
        self.policy = build_policy(settings.agent, obs_dim, actions)
        state = load_checkpoint(RunDir(run_dir).final)
        self.policy.load_state_dict(state["policy"])
        env = settings.env
        self.normalizer = make_normalizer(env.normalize_obs, (obs_dim,), env.clip_obs)
        self.normalizer.load_state_dict(state["obs_normalizer"])
        self._act = self.policy.acting(self.deterministic)
        self.reset(probe, 0)

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        self._state = self.policy.initial_state(1)
        self._start = torch.ones(1, dtype=torch.bool)

    @torch.inference_mode()
    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        obs_t = torch.as_tensor(self.normalizer(obs[None], update=False), dtype=torch.float32)
        mask = torch.as_tensor(info["action_mask"][None])
        action, _, _, self._state = self._act(obs_t, self._state, self._start, mask)
        self._start = torch.zeros(1, dtype=torch.bool)
        return action[0].numpy()


def describe(
    policy: ReferencePolicy | TrainedPolicy, env: SeedLifecycleEnv, episodes: int
) -> dict[str, Any]:
    """Per-episode means of return, final accuracy, fossilized seeds, ops and components."""
    ops: Counter[str] = Counter()
    components: Counter[str] = Counter()
    returns, accuracies, committed, fossilized = [], [], [], []
    for seed in range(FRESH_SEEDS, FRESH_SEEDS + episodes):
        obs, info = env.reset(seed=seed)
        policy.reset(env, seed)
        total, terminated = 0.0, False
        while not terminated:
            action = policy.act(obs, info)
            obs, reward, terminated, _, info = env.step(action)
            total += reward
            ops[Op(int(action[0])).name] += 1
            components.update(info["reward_components"])
        returns.append(total)
        accuracies.append(info["final_accuracy"])
        committed.append(info["final_committed_accuracy"])
        fossilized.append(len(info["fossilized_blueprints"]))
    return {
        "return": float(np.mean(returns)),
        "final_accuracy": float(np.mean(accuracies)),
        "committed_accuracy": float(np.mean(committed)),
        "fossilized": float(np.mean(fossilized)),
        "ops": {op.name: ops[op.name] / episodes for op in Op},
        "components": {name: value / episodes for name, value in components.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a finished run of a seed_lifecycle preset")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--reward", help="score under this reward (default: the run's own)")
    parser.add_argument(
        "--deterministic",
        action=argparse.BooleanOptionalAction,
        help="act by the mode (or --no-deterministic: sample); default: as the run evaluated",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    trained = TrainedPolicy(args.run_dir, args.deterministic)
    env_kwargs = trained.env_kwargs | ({"reward": args.reward} if args.reward else {})
    env = SeedLifecycleEnv(**env_kwargs)
    how = "mode" if trained.deterministic else "sampled"
    print(f"{args.episodes} episodes, env {env_kwargs}, trained policy {how}\n")
    print(
        "| policy | return | final acc % | committed acc % | fossilized | ops per episode "
        "| top components |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    candidates: dict[str, ReferencePolicy | TrainedPolicy] = {"trained": trained}
    # The oracle reads the surrogate's hidden gains; the real host is compared with WAIT.
    references = (
        ("heuristic", "wait") if env_kwargs.get("host") == "mlp" else ("heuristic", "oracle")
    )
    candidates |= {name: POLICIES[name]() for name in references}
    for name, policy in candidates.items():
        row = describe(policy, env, args.episodes)
        ops = ", ".join(f"{op} {n:.1f}" for op, n in row["ops"].items() if n >= 0.05)
        top = sorted(row["components"].items(), key=lambda item: -abs(item[1]))[:3]
        terms = ", ".join(f"{term} {value:+.1f}" for term, value in top)
        print(
            f"| {name} | {row['return']:.3f} | {row['final_accuracy']:.1f} "
            f"| {row['committed_accuracy']:.1f} | {row['fossilized']:.2f} | {ops} | {terms} |"
        )


if __name__ == "__main__":
    main()
