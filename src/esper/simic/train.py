"""The training run: wire env, agent, gradient collector and sinks, then loop.

rollout -> GAE -> PPO update -> metrics -> (eval) -> (checkpoint), until the step
budget is spent; then a final evaluation, checkpoint and ``summary.json``.
"""

import dataclasses
import math
import random
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from gymnasium.wrappers import vector as vector_wrappers

from esper.simic.agents.factored import FactoredSpec
from esper.simic.agents.networks import ActorCritic
from esper.simic.agents.ppo import NonFiniteGradientsError, PPOLearner, policy_parameters
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.agents.recurrent_ppo import RecurrentPPOLearner
from esper.simic.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    FINAL_CHECKPOINT,
    checkpoint_path,
    save_checkpoint,
)
from esper.simic.envs.factory import find_wrapper, make_vector_env
from esper.simic.envs.normalization import make_normalizer
from esper.simic.envs.scoring import SEED_LIFECYCLE_ID, reference_score
from esper.simic.gradients import build_collector
from esper.simic.resume import check_resumable, load_latest_good, restart_seed, truncate_history
from esper.simic.rollout import Policy, RolloutRunner, evaluate
from esper.simic.runinfo import git_commit, write_json_atomic
from esper.simic.settings import SimicConfig
from esper.simic.tracking import HISTORY_FILE, Tracker, build_tracker

SUMMARY_FILE = "summary.json"
POLICY_FILE = "policy.pt"
"""The final policy's state dict alone: what deployment or a W&B model artifact needs."""

EPISODE_WINDOW = 100
"""Recent episodes averaged into ``rollout/episode_return`` (as Stable-Baselines3 does)."""

EVAL_SEED_OFFSET = 1_000_003
"""Eval envs draw their episodes from seeds disjoint from training's."""


class TrainingAbortedError(RuntimeError):
    """The run stopped on purpose (``collector.on_nonfinite=abort``); the message says why."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a finished run reports; also the content of ``summary.json``."""

    final_eval_return_mean: float
    final_eval_return_std: float
    total_env_steps: int
    wall_time_s: float
    env_steps_per_s: float
    num_updates: int
    eval_returns: list[float]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return the generator that shuffles minibatches."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def build_agent(
    settings: SimicConfig,
    obs_dim: int,
    action_space: gym.Space,
    device: torch.device,
    num_updates: int,
) -> tuple[Policy, PPOLearner]:
    """The policy and its learner: feed-forward PPO, or recurrent PPO when ``agent.rnn``."""
    agent = settings.agent
    collector = build_collector(settings.collector)
    spec = factored_spec(settings.env.id, action_space)
    if agent.rnn is None:
        policy = ActorCritic(obs_dim, action_space, agent.network, spec).to(device)
        return policy, PPOLearner(policy, agent, collector, num_updates)
    recurrent = RecurrentActorCritic(
        obs_dim, action_space, agent.network, agent.rnn, agent.rnn.learned_initial_state, spec
    ).to(device)
    return recurrent, RecurrentPPOLearner(recurrent, agent, collector, num_updates)


def factored_spec(env_id: str, action_space: gym.Space) -> FactoredSpec | None:
    """How an env's MultiDiscrete heads depend on each other; None: independent heads.

    Esper's seed-lifecycle task samples the op first, the slot under that op's mask,
    and counts only the heads the op uses (``FactoredSpec.for_seed_lifecycle``).
    """
    if env_id == SEED_LIFECYCLE_ID and isinstance(action_space, gym.spaces.MultiDiscrete):
        return FactoredSpec.for_seed_lifecycle(int(action_space.nvec[1]), int(action_space.nvec[2]))
    return None


def reward_normalizer_state(envs: VectorEnv) -> dict[str, Any]:
    """Running return statistics of reward normalisation, for checkpoints."""
    wrapper = find_wrapper(envs, vector_wrappers.NormalizeReward)
    return {} if wrapper is None else {"return_rms": wrapper.return_rms}


class Trainer:
    """One run's parts wired together; ``run`` loops until the step budget is spent."""

    def __init__(self, settings: SimicConfig, run_dir: Path, run_config: dict[str, Any]) -> None:
        self.start_time = time.perf_counter()
        self.settings, self.run_dir, self.run_config = settings, run_dir, run_config
        agent, env_cfg, trainer = settings.agent, settings.env, settings.trainer
        if trainer.torch_threads is not None:
            torch.set_num_threads(trainer.torch_threads)
        self.generator = seed_everything(settings.seed)
        self.device = resolve_device(trainer.device)
        self.batch_size = agent.num_steps * env_cfg.num_envs
        self.num_updates = math.ceil(settings.total_timesteps / self.batch_size)
        self.global_step = 0
        self.start_update = self.start_step = 0
        self.best_eval_return = -math.inf
        self.recent_returns: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.recent_lengths: deque[int] = deque(maxlen=EPISODE_WINDOW)
        self.tracker: Tracker | None = None
        self.score = reference_score(env_cfg)

        device = str(self.device)  # where a batched env computes
        self.envs = make_vector_env(env_cfg, gamma=agent.gamma, device=device)
        self.eval_envs = make_vector_env(
            dataclasses.replace(env_cfg, normalize_reward=False),
            gamma=agent.gamma,
            num_envs=trainer.eval_episodes,
            device=device,
        )
        try:
            self._build_agent()
        except BaseException:
            self.close()
            raise

    def _build_agent(self) -> None:
        settings, agent, env_cfg = self.settings, self.settings.agent, self.settings.env
        obs_shape = self.envs.single_observation_space.shape
        if obs_shape is None or len(obs_shape) != 1:
            raise ValueError(f"{env_cfg.id}: expected a flat Box observation, got {obs_shape}")
        self.normalizer = make_normalizer(env_cfg.normalize_obs, obs_shape, env_cfg.clip_obs)
        self.policy, self.learner = build_agent(
            settings, obs_shape[0], self.envs.single_action_space, self.device, self.num_updates
        )
        self.runner = RolloutRunner(
            self.envs,
            self.policy,
            agent.num_steps,
            agent.gamma,
            agent.gae_lambda,
            self.normalizer,
            self.device,
            settings.seed,
        )

    def run(self) -> RunResult:
        """Train, evaluate, checkpoint and summarise; the tracker is opened last."""
        self.tracker = build_tracker(self.settings, self.run_dir, self.run_config)
        trainer = self.settings.trainer
        loop_start = time.perf_counter()
        for update in range(self.start_update + 1, self.num_updates + 1):
            try:
                metrics = self._train_one_update(loop_start)
            except NonFiniteGradientsError as error:
                path = self.run_dir / CHECKPOINT_DIR / "nonfinite_abort.pt"
                save_checkpoint(self._state(update - 1), path)
                raise TrainingAbortedError(
                    f"update {update}: {error}; the last good weights are in {path}"
                ) from error
            if (
                trainer.eval_interval
                and update % trainer.eval_interval == 0
                and update < self.num_updates
            ):
                eval_start = time.perf_counter()
                returns = self._evaluate(update)
                metrics.update(eval_metrics(returns, self.score))
                metrics["time/eval_s"] = time.perf_counter() - eval_start
                self._save_if_best(returns, update)
            if update % trainer.log_interval == 0 or "eval/return_mean" in metrics:
                self.tracker.log(metrics, self.global_step)
            if trainer.checkpoint_interval and update % trainer.checkpoint_interval == 0:
                path = checkpoint_path(self.run_dir / CHECKPOINT_DIR, update)
                save_checkpoint(self._state(update), path, keep_last=trainer.keep_checkpoints)
        return self._finish(train_time=time.perf_counter() - loop_start)

    def _train_one_update(self, loop_start: float) -> dict[str, float]:
        t0 = time.perf_counter()
        rollout, episodes = self.runner.collect()
        t1 = time.perf_counter()
        metrics = self.learner.learn(rollout, self.generator)
        t2 = time.perf_counter()
        self.global_step += self.batch_size
        self.recent_returns.extend(episodes.returns)
        self.recent_lengths.extend(episodes.lengths)
        if self.recent_returns:
            metrics["rollout/episode_return"] = float(np.mean(self.recent_returns))
            metrics["rollout/episode_length"] = float(np.mean(self.recent_lengths))
        metrics["rollout/episodes"] = float(len(episodes.returns))
        metrics["time/rollout_s"] = t1 - t0
        metrics["time/update_s"] = t2 - t1
        metrics["time/env_steps_per_s"] = (self.global_step - self.start_step) / (t2 - loop_start)
        return metrics

    def _evaluate(self, index: int) -> np.ndarray:
        trainer = self.settings.trainer
        return evaluate(
            self.eval_envs,
            self.policy,
            self.normalizer,
            trainer.eval_deterministic,
            self.device,
            seed=self.settings.seed + EVAL_SEED_OFFSET + index * trainer.eval_episodes,
        )

    def _save_if_best(self, returns: np.ndarray, update: int) -> None:
        """Keep ``best.pt``: the checkpoint with the highest mean eval return so far."""
        if float(returns.mean()) > self.best_eval_return:
            self.best_eval_return = float(returns.mean())
            save_checkpoint(self._state(update), self.run_dir / CHECKPOINT_DIR / BEST_CHECKPOINT)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state (see ``_state``); envs begin fresh episodes.

        The envs' own state (positions, episode progress) is not checkpointed, so they
        reset with a seed derived from the run's seed and the update; then the RNGs
        are restored last so the rest of the run draws what the killed run would have.
        """
        self.policy.load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
        self.normalizer.load_state_dict(state["obs_normalizer"])
        reward_wrapper = find_wrapper(self.envs, vector_wrappers.NormalizeReward)
        if reward_wrapper is not None and state["reward_normalizer"]:
            reward_wrapper.return_rms = state["reward_normalizer"]["return_rms"]
        self.start_update = state["counters"]["update"]
        self.global_step = self.start_step = state["counters"]["global_step"]
        self.best_eval_return = state.get("best_eval_return", -math.inf)
        episodes = state.get("episodes", {})
        self.recent_returns.extend(episodes.get("returns", []))
        self.recent_lengths.extend(episodes.get("lengths", []))
        self.runner.restart(restart_seed(self.settings.seed, self.start_update))
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["minibatch"])
        truncate_history(self.run_dir / HISTORY_FILE, self.global_step)

    def _state(self, update: int) -> dict[str, Any]:
        """Everything a resumed run needs, plus the config that made it."""
        return {
            "policy": self.policy.state_dict(),
            "learner": self.learner.state_dict(),
            "obs_normalizer": self.normalizer.state_dict(),
            "reward_normalizer": reward_normalizer_state(self.envs),
            "counters": {"update": update, "global_step": self.global_step},
            "best_eval_return": self.best_eval_return,
            "episodes": {
                "returns": list(self.recent_returns),
                "lengths": list(self.recent_lengths),
            },
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "minibatch": self.generator.get_state(),
            },
            "config": self.run_config,
        }

    def _finish(self, train_time: float) -> RunResult:
        assert self.tracker is not None
        final_returns = self._evaluate(self.num_updates)
        final_metrics = eval_metrics(final_returns, self.score)
        self.tracker.log(final_metrics, self.global_step)
        self._save_if_best(final_returns, self.num_updates)
        final = self.run_dir / CHECKPOINT_DIR / FINAL_CHECKPOINT
        save_checkpoint(self._state(self.num_updates), final)
        policy = save_checkpoint(self.policy.state_dict(), self.run_dir / POLICY_FILE)
        result = RunResult(
            final_eval_return_mean=float(final_returns.mean()),
            final_eval_return_std=float(final_returns.std()),
            total_env_steps=self.global_step,
            wall_time_s=time.perf_counter() - self.start_time,
            env_steps_per_s=(self.global_step - self.start_step) / train_time,
            num_updates=self.num_updates,
            eval_returns=final_returns.tolist(),
        )
        summary = {
            **dataclasses.asdict(result),
            "experiment": self.settings.experiment,
            "seed": self.settings.seed,
            "env_id": self.settings.env.id,
            "policy_parameters": policy_parameters(self.policy),
            "git_commit": git_commit(),
        }
        if "eval/normalized_score" in final_metrics:
            summary["final_eval_normalized_score"] = final_metrics["eval/normalized_score"]
        write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        self.tracker.summarize(summary)
        self.tracker.log_artifacts({"policy": policy, "checkpoint": final})
        return result

    def close(self) -> None:
        """Release envs and sinks; safe after a failure at any point."""
        try:
            if self.tracker is not None:
                self.tracker.close()
        finally:
            self.envs.close()
            self.eval_envs.close()


def eval_metrics(
    returns: np.ndarray, score: Callable[[float], float] | None = None
) -> dict[str, float]:
    metrics = {"eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std())}
    if score is not None:
        metrics["eval/normalized_score"] = score(float(returns.mean()))
    return metrics


def train(settings: SimicConfig, run_dir: Path, run_config: dict[str, Any]) -> RunResult:
    """Train one agent as ``settings`` says, writing everything under ``run_dir``."""
    trainer = Trainer(settings, run_dir, run_config)
    try:
        if settings.resume is not None:
            _, state = load_latest_good(settings.resume)
            check_resumable(state, run_config, trainer.num_updates)
            trainer.restore(state)
        return trainer.run()
    finally:
        trainer.close()
