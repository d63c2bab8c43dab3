"""``env.vectorization=batched``: N seed-lifecycle envs whose real hosts train as one batch.

A gymnasium ``VectorEnv`` (same-step autoreset, like the factory's sync and async
envs): each env's lifecycle, reward and observation stay in its own
:class:`SeedLifecycleEnv`, while the host epoch that every step runs, training and
validation, is one :class:`BatchedMlpHost` computation for all N.

With ``tensors=False`` it speaks NumPy, as every gymnasium vector env does. With
``tensors=True`` (what training builds, :func:`esper.simic.envs.factory.make_vector_env`)
it takes the policy's action tensor as it comes and returns observations, rewards,
terminations, truncations, ``info["action_mask"]`` and ``info["final_obs"]`` as tensors
on ``device``, so the rollout keeps them there: one copy of the actions to the host
(the lifecycles are Python) and one copy of each result to the device per step.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from esper.simic.envs.seed_lifecycle.batched_host import BatchedMlpHost
from esper.simic.envs.seed_lifecycle.constants import BATCHED_HOSTS, DEFAULT_NUM_SLOTS
from esper.simic.envs.seed_lifecycle.env import SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.host import Evaluation
from esper.simic.envs.seed_lifecycle.lifecycle import Seed
from esper.simic.envs.seed_lifecycle.mlp_host import MLP_TASKS

# What the env returns: NumPy arrays, or tensors on its device with ``tensors=True``.
Batch = NDArray[Any] | torch.Tensor


class _HostRow:
    """One env's view of the batched host, with the per-env ``Host`` interface."""

    def __init__(self, batched: BatchedMlpHost, env: int) -> None:
        self._batched, self._env = batched, env
        self.host_params = batched.host_params

    def reset(self, rng: np.random.Generator, max_epochs: int) -> None:
        self._batched.reset(self._env, rng)

    def germinate(self, slot: int, blueprint: int) -> None:
        self._batched.germinate(self._env, slot, blueprint)

    def remove(self, slot: int) -> None:
        self._batched.remove(self._env, slot)

    def seed_params(self, slot: int) -> int:
        return self._batched.seed_params(self._env, slot)

    def train_epoch(self, seeds: Sequence[Seed | None]) -> list[float | None]:
        """This env alone, as a batch of one."""
        return self._batched.train_epoch([self._env], [seeds])[0]

    def evaluate(self, seeds: Sequence[Seed | None]) -> Evaluation:
        """This env alone, as a batch of one."""
        return self._batched.evaluate([self._env], [seeds])[0]

    def twin_accuracy(self) -> float:
        return self._batched.twin_accuracy(self._env)


class SeedLifecycleVectorEnv(VectorEnv):
    """``num_envs`` copies of ``esper/SeedLifecycle-v0`` sharing one batched real host.

    ``device`` is where the hosts' weights and data live (``cpu``, ``cuda``, ``cuda:N``);
    ``tensors`` makes it step in torch tensors on that device rather than NumPy arrays;
    the other keyword arguments are :class:`SeedLifecycleEnv`'s, with ``host="mlp"``.
    """

    # The single env's declarations (its factored action heads) travel with the vector env,
    # as gymnasium's own vector envs copy them.
    metadata: dict[str, Any] = {  # noqa: RUF012 (gymnasium's API)
        **SeedLifecycleEnv.metadata,
        "autoreset_mode": AutoresetMode.SAME_STEP,
    }

    def __init__(
        self, num_envs: int, device: str = "cpu", tensors: bool = False, **env_kwargs: Any
    ) -> None:
        host = env_kwargs.pop("host", "surrogate")
        if host not in BATCHED_HOSTS:
            raise ValueError(
                f"vectorization=batched runs host in {list(BATCHED_HOSTS)}, got host={host!r}: "
                "set host='mlp' or use sync/async vectorization"
            )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.tensors = tensors
        num_slots = env_kwargs.get("num_slots", DEFAULT_NUM_SLOTS)
        task = MLP_TASKS[env_kwargs.get("mlp_task", "baseline")]
        twins = env_kwargs.get("reward") == "paired"
        self.host = BatchedMlpHost(num_envs, num_slots, self.device, task, twins)
        self.envs = [
            SeedLifecycleEnv(host=_HostRow(self.host, i), **env_kwargs) for i in range(num_envs)
        ]
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Batch, dict[str, Any]]:
        """Reset every env (env i gets ``seed + i``, as gymnasium's vector envs do)."""
        seeds = (
            [seed + i for i in range(self.num_envs)]
            if isinstance(seed, int)
            else (seed if seed is not None else [None] * self.num_envs)
        )
        for env, env_seed in zip(self.envs, seeds, strict=True):
            env.begin_episode(seed=env_seed, options=options)
        self._run_epoch()
        infos: dict[str, Any] = {}
        observations = []
        for i, env in enumerate(self.envs):
            obs, mask = env.observe()
            observations.append(obs)
            infos = self._add_info(infos, {"action_mask": mask}, i)
        return self._out(np.stack(observations)), self._out_info(infos)

    def step(
        self, actions: NDArray[np.int64] | torch.Tensor
    ) -> tuple[Batch, Batch, Batch, Batch, dict[str, Any]]:
        """Act in every env, run all host epochs as one batch, then observe."""
        if isinstance(actions, torch.Tensor):
            actions = actions.cpu().numpy()  # the lifecycles read Python ints
        rewards = np.zeros(self.num_envs)
        terminations = np.zeros(self.num_envs, dtype=bool)
        step_infos = []
        for i, env in enumerate(self.envs):
            rewards[i], terminations[i], info = env.act(actions[i])
            step_infos.append(info)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            if terminations[i]:
                # Same-step autoreset: the finished episode's last obs and info go in final_*.
                final_obs, step_infos[i]["action_mask"] = env.observe()
                infos = self._add_info(
                    infos, {"final_obs": final_obs, "final_info": step_infos[i]}, i
                )
                step_infos[i] = {}
                env.begin_episode()
        self._run_epoch()
        observations = []
        for i, env in enumerate(self.envs):
            obs, step_infos[i]["action_mask"] = env.observe()
            observations.append(obs)
            infos = self._add_info(infos, step_infos[i], i)
        return (
            self._out(np.stack(observations)),
            self._out(rewards),
            self._out(terminations),
            self._out(np.zeros(self.num_envs, dtype=bool)),
            self._out_info(infos),
        )

    def _out(self, array: NDArray[Any]) -> Batch:
        """``array`` as this env returns it: as is, or as a tensor on its device."""
        return torch.from_numpy(array).to(self.device) if self.tensors else array

    def _out_info(self, infos: dict[str, Any]) -> dict[str, Any]:
        """The entries a rollout reads every step as tensors; the rest stays as gymnasium's.

        ``final_obs`` becomes one ``[N, *obs]`` tensor (zeros where ``_final_obs`` is
        False) rather than gymnasium's object array of per-env observations.
        """
        if not self.tensors:
            return infos
        infos["action_mask"] = self._out(infos["action_mask"])
        if "final_obs" in infos:
            rows = np.zeros((self.num_envs, *self.single_observation_space.shape), np.float32)
            ended = infos["_final_obs"]
            rows[ended] = np.stack(infos["final_obs"][ended])
            infos["final_obs"] = self._out(rows)
        return infos

    def _run_epoch(self) -> None:
        """Every env's host epoch, trained and validated together."""
        everyone = list(range(self.num_envs))
        seeds = [list(env.seeds) for env in self.envs]
        health = self.host.train_epoch(everyone, seeds)
        evaluations = self.host.evaluate(everyone, seeds)
        for env, env_health, evaluation in zip(self.envs, health, evaluations, strict=True):
            env.record_epoch(env_health, evaluation)
