"""The training run: wire env, agent, gradient collector and sinks, then loop.

rollout -> GAE -> PPO update -> metrics -> (eval) -> (checkpoint), until the step
budget is spent; then a final evaluation, checkpoint and ``summary.json``.
"""

import contextlib
import copy
import dataclasses
import math
import random
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv
from gymnasium.wrappers import vector as vector_wrappers

from esper.simic import distributed
from esper.simic.agents.data_parallel import DataParallel
from esper.simic.agents.ppo import NonFiniteGradientsError, policy_parameters
from esper.simic.assembly import build_agent, normalizable_entries, observation_layout
from esper.simic.checkpoint import plain_stats, restore_rng, rng_state, save_checkpoint
from esper.simic.distributed import SINGLE, Ranks
from esper.simic.envs.factory import (
    find_wrapper,
    make_vector_env,
    structured_observation_space,
)
from esper.simic.envs.normalization import ObservationNormalizer, make_normalizer
from esper.simic.envs.scoring import reference_score
from esper.simic.gradients import NonFinitePolicy
from esper.simic.resume import (
    ResumePoint,
    check_resumable,
    restart_seed,
    select_checkpoint,
    truncate_history,
)
from esper.simic.rollout import RolloutRunner, evaluate
from esper.simic.rundir import RunDir, RunDirLockedError, write_json_atomic
from esper.simic.runinfo import git_commit
from esper.simic.settings import SimicConfig
from esper.simic.signals import GracefulStop
from esper.simic.tracking import Tracker, build_tracker

EPISODE_WINDOW = 100
"""Recent episodes averaged into ``rollout/episode_return`` (as Stable-Baselines3 does)."""

EVAL_SEED_OFFSET = 1_000_003
"""Eval envs draw their episodes from seeds disjoint from training's."""


def eval_seeds(run_seed: int, index: int, episodes: int) -> list[int]:
    """The env seeds of evaluation ``index`` (an update number), one per episode.

    Evaluation ``k`` takes the block ``[k * episodes, (k + 1) * episodes)`` past the run's
    base, so no two evaluations of one run (periodic or final) share an episode seed.
    """
    first = run_seed + EVAL_SEED_OFFSET + index * episodes
    return list(range(first, first + episodes))


class TrainingAbortedError(RuntimeError):
    """The run stopped on purpose (``agent.on_nonfinite=abort``); the message says why."""


class RunDirNotEmptyError(RuntimeError):
    """A fresh run pointed at a dir that already holds a run; one line naming both ways out."""


class RanksLostError(RuntimeError):
    """A collective failed or timed out: another rank of the run died or stalled."""


class RunStoppedError(Exception):
    """A stop signal ended the run at a safe point, after writing ``checkpoint``."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path) -> None:
        super().__init__(f"{signal_name}: stopped at step {step}")
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint


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


def rollout_size(settings: SimicConfig) -> int:
    """Env steps per update, the unit the budget is spent in."""
    return settings.agent.num_steps * settings.env.num_envs


def num_updates(settings: SimicConfig) -> int:
    """Updates that spend ``total_timesteps``, the last rollout rounded up."""
    return math.ceil(settings.total_timesteps / rollout_size(settings))


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


def reward_normalizer_state(envs: VectorEnv) -> dict[str, Any]:
    """Running return statistics of reward normalisation, for checkpoints (plain data)."""
    wrapper = find_wrapper(envs, vector_wrappers.NormalizeReward)
    if wrapper is None:
        return {}
    rms = wrapper.return_rms
    return {"return_rms": plain_stats({"mean": rms.mean, "var": rms.var, "count": rms.count})}


def restore_reward_normalizer(envs: VectorEnv, state: dict[str, Any]) -> None:
    """Undo ``reward_normalizer_state`` (older checkpoints pickled the gymnasium object)."""
    wrapper = find_wrapper(envs, vector_wrappers.NormalizeReward)
    if wrapper is None or not state:
        return
    saved = state["return_rms"]
    if isinstance(saved, dict):
        wrapper.return_rms.mean = np.array(saved["mean"])
        wrapper.return_rms.var = np.array(saved["var"])
        wrapper.return_rms.count = saved["count"]
    else:
        wrapper.return_rms = saved


class Trainer:
    """One run's parts wired together; ``run`` loops until the step budget is spent."""

    def __init__(
        self,
        settings: SimicConfig,
        run_dir: Path,
        run_config: dict[str, Any],
        ranks: Ranks = SINGLE,
    ) -> None:
        self.start_time = time.perf_counter()
        self.settings, self.files, self.run_config = settings, RunDir(run_dir), run_config
        self.ranks = ranks
        # Read now (the checkout may move on while a long run trains), by the rank that
        # writes the summary.
        self.code_version = git_commit() if ranks.main else None
        # This rank's envs and minibatch share; budgets and schedules stay the run's.
        self.local = distributed.local_settings(settings, ranks.world_size)
        agent, env_cfg, trainer = settings.agent, self.local.env, settings.trainer
        if trainer.torch_threads is not None:
            torch.set_num_threads(trainer.torch_threads)
        self.generator = seed_everything(settings.seed)
        self.device = resolve_device(trainer.device)
        self.batch_size = rollout_size(settings)
        self.num_updates = num_updates(settings)
        self.global_step = 0
        self.start_update = self.start_step = 0
        self.best_eval_return = -math.inf
        self.best_update = 0
        self.recent_returns: deque[float] = deque(maxlen=EPISODE_WINDOW)
        self.recent_lengths: deque[int] = deque(maxlen=EPISODE_WINDOW)
        self.tracker: Tracker | None = None
        self.stop: GracefulStop | None = None
        self.ranks_signal: str | None = None
        """A stop signal some rank received, as of the last update's gather."""
        self.score = reference_score(env_cfg)

        device = str(self.device)  # where a batched env computes
        self.envs = make_vector_env(env_cfg, gamma=agent.gamma, device=device)
        # Only rank 0 evaluates.
        self.eval_envs = (
            make_vector_env(
                dataclasses.replace(env_cfg, normalize_reward=False),
                gamma=agent.gamma,
                num_envs=trainer.eval_episodes,
                device=device,
            )
            if ranks.main
            else None
        )
        try:
            self._build_agent()
        except BaseException:
            self.close()
            raise

    def _build_agent(self) -> None:
        """The policy, learner and rollout of this rank; on several ranks, the policy
        starts from rank 0's weights and the normalisers' statistics span every rank."""
        agent, env_cfg, ranks = self.settings.agent, self.local.env, self.ranks
        obs_shape = self.envs.single_observation_space.shape
        mask = normalizable_entries(observation_layout(structured_observation_space(self.envs)))
        self.normalizer = make_normalizer(env_cfg.normalize_obs, obs_shape, env_cfg.clip_obs, mask)
        data_parallel = DataParallel() if ranks.distributed else None
        self.policy, self.learner = build_agent(
            self.local, self.envs, self.device, self.num_updates, data_parallel
        )
        if data_parallel is not None:
            data_parallel.broadcast_parameters(self.policy)
            self._synchronise_normalizers()
            self.generator = seed_everything(distributed.sampling_seed(self.settings.seed, ranks))
        self.runner = RolloutRunner(
            self.envs,
            self.policy,
            agent.num_steps,
            agent.gamma,
            agent.gae_lambda,
            self.normalizer,
            self.device,
            self._env_seed(self.settings.seed),
        )

    def _synchronise_normalizers(self) -> None:
        if isinstance(self.normalizer, ObservationNormalizer):
            self.normalizer.rms = distributed.synced_statistics(self.normalizer.rms)
        wrapper = find_wrapper(self.envs, vector_wrappers.NormalizeReward)
        if wrapper is not None:
            wrapper.return_rms = distributed.synced_statistics(wrapper.return_rms)

    def _env_seed(self, seed: int) -> int:
        return distributed.env_seed(seed, self.ranks, self.local.env.num_envs)

    def run(self, stop: GracefulStop | None = None) -> RunResult:
        """Train, evaluate, checkpoint and summarise; the tracker is opened last.

        ``stop`` is checked between updates, the safe point: a received signal writes a
        periodic checkpoint of the update just done and raises ``RunStoppedError``. On
        several ranks, a signal any of them received stops them all at the same update.
        """
        ranks = self.ranks
        self.tracker = (
            build_tracker(self.settings, self.files.path, self.run_config)
            if ranks.main
            else Tracker([])
        )
        trainer = self.settings.trainer
        loop_start = time.perf_counter()
        abort = self.settings.agent.on_nonfinite is NonFinitePolicy.abort
        self.stop = stop
        for update in range(self.start_update + 1, self.num_updates + 1):
            received = self._signal() if not ranks.distributed else self.ranks_signal
            if received is not None:
                self._stop(received, update - 1)
            # Under abort, the state before the update, which the failing update's finite
            # steps, schedule step and rollout have not touched: what the checkpoint claims.
            last_good = copy.deepcopy(self._state(update - 1)) if abort else None
            try:
                metrics = self._train_one_update(loop_start)
            except NonFiniteGradientsError as error:
                assert last_good is not None
                path = self.files.nonfinite
                self._save(last_good, path)
                raise TrainingAbortedError(
                    f"update {update}: {error}; the state after update {update - 1} is in {path}"
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
                self._save(self._state(update), self.files.periodic(update), periodic=True)
        return self._finish(train_time=time.perf_counter() - loop_start)

    def _save(self, state: dict[str, Any], path: Path, periodic: bool = False) -> None:
        """Rank 0 writes; ``state`` was assembled on every rank (it gathers their RNGs)."""
        if self.ranks.main:
            keep = self.settings.trainer.keep_checkpoints if periodic else None
            save_checkpoint(state, path, keep_last=keep)

    def _stop(self, signal_name: str, update: int) -> None:
        path = self.files.periodic(update)
        # Already written when the update was a checkpoint interval (rank 0 knows).
        if not distributed.broadcast(path.exists(), self.ranks):
            self._save(self._state(update), path, periodic=True)
        raise RunStoppedError(signal_name, self.global_step, path)

    def _signal(self) -> str | None:
        """The stop signal this process received, if any."""
        if self.stop is None or self.stop.received is None:
            return None
        return self.stop.received.name

    def _train_one_update(self, loop_start: float) -> dict[str, float]:
        """One rollout and update. On several ranks, one gather per update brings every
        rank's finished episodes and whether any received a stop signal (acted on at the
        next safe point, by all ranks together)."""
        t0 = time.perf_counter()
        rollout, episodes = self.runner.collect()
        t1 = time.perf_counter()
        metrics = self.learner.learn(rollout, self.generator)
        t2 = time.perf_counter()
        self.global_step += self.batch_size
        reports = distributed.gather(
            (episodes.returns, episodes.lengths, self._signal()), self.ranks
        )
        self.ranks_signal = next((signal for *_, signal in reports if signal), None)
        finished = [(returns, lengths) for returns, lengths, _ in reports]
        for returns, lengths in finished:
            self.recent_returns.extend(returns)
            self.recent_lengths.extend(lengths)
        if self.recent_returns:
            metrics["rollout/episode_return"] = float(np.mean(self.recent_returns))
            metrics["rollout/episode_length"] = float(np.mean(self.recent_lengths))
        metrics["rollout/episodes"] = float(sum(len(returns) for returns, _ in finished))
        metrics["time/rollout_s"] = t1 - t0
        metrics["time/update_s"] = t2 - t1
        metrics["time/env_steps_per_s"] = (self.global_step - self.start_step) / (t2 - loop_start)
        return metrics

    def _evaluate(self, index: int) -> np.ndarray:
        """Rank 0 evaluates; every rank gets the returns (they decide ``best.pt``)."""
        trainer = self.settings.trainer
        returns = None
        if self.eval_envs is not None:
            returns = evaluate(
                self.eval_envs,
                self.policy,
                self.normalizer,
                trainer.eval_deterministic,
                self.device,
                seed=eval_seeds(self.settings.seed, index, trainer.eval_episodes)[0],
            )
        return distributed.broadcast(returns, self.ranks)

    def _save_if_best(self, returns: np.ndarray, update: int) -> None:
        """Keep ``best.pt``: the checkpoint with the highest mean eval return so far."""
        if float(returns.mean()) > self.best_eval_return:
            self.best_eval_return = float(returns.mean())
            self.best_update = update
            self._save(self._state(update), self.files.best)

    def restore(self, point: ResumePoint) -> None:
        """Continue from a checkpoint's state (see ``_state``); envs begin fresh episodes.

        The envs' own state (positions, episode progress) is not checkpointed, so they
        reset with a seed derived from the run's seed and the update; then the RNGs
        are restored last so the rest of the run draws what the killed run would have.
        Checkpoints newer than the resume point (``resume_from_older``) and the old
        finish's files are removed with the history they belong to.
        """
        state = point.state
        self.policy.load_state_dict(state["policy"])
        self.learner.load_state_dict(state["learner"])
        self.normalizer.load_state_dict(state["obs_normalizer"])
        restore_reward_normalizer(self.envs, state["reward_normalizer"])
        self.start_update = state["counters"]["update"]
        self.global_step = self.start_step = state["counters"]["global_step"]
        self.best_eval_return = state.get("best_eval_return", -math.inf)
        self.best_update = state.get("best_update", 0)
        episodes = state.get("episodes", {})
        self.recent_returns.extend(episodes.get("returns", []))
        self.recent_lengths.extend(episodes.get("lengths", []))
        self.runner.restart(self._env_seed(restart_seed(self.settings.seed, self.start_update)))
        rank_rngs = state.get("rank_rngs", [state["rng"]])
        restore_rng(rank_rngs[self.ranks.rank], self.generator)
        if not self.ranks.main:
            return
        truncate_history(self.files.history, self.global_step)
        if point.superseded:
            for path in point.superseded:
                path.unlink()
            self.files.summary.unlink(missing_ok=True)
            self.files.policy.unlink(missing_ok=True)
            print(
                f"esper.simic: resume_from_older=true: dropped the history of the "
                f"{point.newest_step - point.step} steps after step {point.step} "
                f"(newest was {point.newest_step}) and {len(point.superseded)} newer checkpoints",
                file=sys.stderr,
                flush=True,
            )
        print(
            f"esper.simic: resuming {self.files.path} from {point.path.name}: step "
            f"{self.global_step} (update {self.start_update} of {self.num_updates})",
            file=sys.stderr,
            flush=True,
        )

    def _state(self, update: int) -> dict[str, Any]:
        """Everything a resumed run needs, plus the config that made it; on several ranks,
        each rank's RNGs (``rank_rngs``; ``rng`` is rank 0's). Every rank must call it."""
        state = {
            "policy": self.policy.state_dict(),
            "learner": self.learner.state_dict(),
            "obs_normalizer": plain_stats(self.normalizer.state_dict()),
            "reward_normalizer": reward_normalizer_state(self.envs),
            "counters": {"update": update, "global_step": self.global_step},
            "best_eval_return": self.best_eval_return,
            "best_update": self.best_update,
            "episodes": {
                "returns": list(self.recent_returns),
                "lengths": list(self.recent_lengths),
            },
            "rng": rng_state(self.generator),
            "config": self.run_config,
            "world_size": self.ranks.world_size,
        }
        if self.ranks.distributed:
            state["rank_rngs"] = distributed.gather(state["rng"], self.ranks)
        return state

    def _finish(self, train_time: float) -> RunResult:
        assert self.tracker is not None
        final_returns = self._evaluate(self.num_updates)
        final_metrics = eval_metrics(final_returns, self.score)
        self.tracker.log(final_metrics, self.global_step)
        self._save_if_best(final_returns, self.num_updates)
        final_state = self._state(self.num_updates)
        result = RunResult(
            final_eval_return_mean=float(final_returns.mean()),
            final_eval_return_std=float(final_returns.std()),
            total_env_steps=self.global_step,
            wall_time_s=time.perf_counter() - self.start_time,
            env_steps_per_s=(self.global_step - self.start_step) / train_time,
            num_updates=self.num_updates,
            eval_returns=final_returns.tolist(),
        )
        if not self.ranks.main:
            return result
        final = save_checkpoint(final_state, self.files.final)
        policy = save_checkpoint(self.policy.state_dict(), self.files.policy)
        summary = {
            **dataclasses.asdict(result),
            "experiment": self.settings.experiment,
            "seed": self.settings.seed,
            "env_id": self.settings.env.id,
            "policy_parameters": policy_parameters(self.policy),
            "world_size": self.ranks.world_size,
            "git_commit": self.code_version,
            "eval": self._eval_record(),
        }
        if "eval/normalized_score" in final_metrics:
            summary["final_eval_normalized_score"] = final_metrics["eval/normalized_score"]
        write_json_atomic(self.files.summary, summary)
        self.tracker.summarize(summary)
        self.tracker.log_artifacts({"policy": policy, "checkpoint": final})
        return result

    def _eval_record(self) -> dict[str, Any]:
        """What ``final_eval_*`` measured, and which checkpoint ``best.pt`` holds.

        ``best.pt`` was chosen by its own evaluation's return, so that return is biased
        upwards as an estimate of the policy's quality; the final evaluation is not.
        """
        trainer = self.settings.trainer
        return {
            "policy": "final",
            "deterministic": trainer.eval_deterministic,
            "episodes": trainer.eval_episodes,
            "env_seeds": eval_seeds(self.settings.seed, self.num_updates, trainer.eval_episodes),
            "best": {
                "checkpoint": str(self.files.best.relative_to(self.files.path)),
                "update": self.best_update,
                "global_step": self.best_update * self.batch_size,
                "selection_eval_return_mean": self.best_eval_return,
            },
        }

    def close(self) -> None:
        """Release envs and sinks; safe after a failure at any point."""
        try:
            if self.tracker is not None:
                self.tracker.close()
        finally:
            self.envs.close()
            if self.eval_envs is not None:
                self.eval_envs.close()


def eval_metrics(
    returns: np.ndarray, score: Callable[[float], float] | None = None
) -> dict[str, float]:
    metrics = {"eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std())}
    if score is not None:
        metrics["eval/normalized_score"] = score(float(returns.mean()))
    return metrics


def train(
    settings: SimicConfig,
    run_dir: Path,
    run_config: dict[str, Any],
    stop: GracefulStop | None = None,
    ranks: Ranks = SINGLE,
) -> RunResult:
    """Train one agent as ``settings`` says, writing everything under ``run_dir``.

    The run holds ``run_dir``'s lock throughout (``RunDir.acquire``); a fresh run into a
    dir that already holds a run is refused rather than mixed into its history. On several
    ranks, rank 0 holds the lock and its verdict stops or starts them all.
    """
    run = RunDir(run_dir)
    with contextlib.ExitStack() as owned:
        refusal: Exception | None = None
        if ranks.main:
            try:
                owned.enter_context(run.acquire())
                if settings.resume is None and run.run_files():
                    refusal = RunDirNotEmptyError(not_empty_message(run))
            except RunDirLockedError as error:
                refusal = error
        refusal = distributed.broadcast(refusal, ranks)
        if refusal is not None:
            raise refusal
        trainer = Trainer(settings, run_dir, run_config, ranks)
        try:
            if settings.resume is not None:
                point = select_checkpoint(settings.resume, settings.resume_from_older)
                finished = run.summary.exists() and not point.superseded
                check_resumable(
                    point.state, run_config, trainer.num_updates, finished, ranks.world_size
                )
                trainer.restore(point)
            return trainer.run(stop)
        except RuntimeError as error:
            if ranks.distributed and distributed.lost_ranks(error):
                raise RanksLostError(ranks_lost_message(error, ranks, run)) from error
            raise
        finally:
            trainer.close()


def ranks_lost_message(error: Exception, ranks: Ranks, run: RunDir) -> str:
    """One line: which rank saw what, and the checkpoint the run continues from."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    # gloo prefixes its source location and appends advice: keep what happened.
    detail = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0] or type(error).__name__
    return (
        f"rank {ranks.rank} of {ranks.world_size}: lost the other ranks ({detail}); "
        f"resume={run.path} continues from its newest checkpoint"
    )


def not_empty_message(run: RunDir) -> str:
    names = ", ".join(p.name for p in run.run_files())
    return (
        f"run dir {run.path} already holds a run ({names}): continue it with "
        f"resume={run.path}, or choose another hydra.run.dir"
    )
