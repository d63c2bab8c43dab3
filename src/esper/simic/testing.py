"""Compose and run configs in-process, as the test suites and benchmarks do.

Uses Hydra's compose API over the packaged config, so what the tests check is
exactly what ``python -m esper.simic`` runs.
"""

from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from esper.simic.agents.batches import Rollout, TrainingBatch
from esper.simic.app import CONFIG_MODULE, CONFIG_NAME, plain_config
from esper.simic.config import load_settings, register_schemas
from esper.simic.settings import SimicConfig
from esper.simic.train import RunResult, train

# Overrides that make any preset a few-second smoke run.
TINY_OVERRIDES = [
    "total_timesteps=512",
    "agent.num_steps=16",
    "agent.minibatch_size=64",
    "agent.update_epochs=2",
    "env.num_envs=4",
    "trainer.eval_episodes=2",
    "trainer.eval_interval=4",
    "trainer.progress=off",
    "logger=none",
]


def compose_config(overrides: list[str]) -> DictConfig:
    register_schemas()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=overrides)


def compose_settings(overrides: list[str]) -> tuple[SimicConfig, dict[str, Any]]:
    cfg = compose_config(overrides)
    return load_settings(cfg), plain_config(cfg)


def run_training(overrides: list[str], run_dir: Path) -> RunResult:
    """Compose, check and train one run in this process, writing under ``run_dir``."""
    settings, container = compose_settings(overrides)
    return train(settings, run_dir, container)


def observation_batch(obs: torch.Tensor, mask: torch.Tensor | None = None) -> TrainingBatch:
    """A step batch of observations (and action masks) alone: enough for a feed-forward
    policy's training pass, as tests and benchmarks call it outside a rollout."""
    empty = obs.new_zeros(0)
    return TrainingBatch(obs, empty, empty, empty, empty, empty, mask)


def steps_rollout(**steps: torch.Tensor | None) -> Rollout:
    """A rollout of one env and a feed-forward policy whose ``T`` steps are the given
    ``[T, ...]`` tensors (``obs``, ``actions``, ``logp``, ``values``, ``advantages``,
    ``returns``, ``action_masks``): a learner's input without an env."""
    size = len(steps["obs"])
    fields = {k: None if v is None else v.unsqueeze(1) for k, v in steps.items()}
    return Rollout(
        **fields,
        dones=torch.zeros(size, 1, dtype=torch.bool),
        states_h=torch.zeros(size, 1, 0, 0),
        states_c=None,
        first_starts=torch.ones(1, dtype=torch.bool),
    )
