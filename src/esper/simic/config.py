"""The door: register the schemas with Hydra, then check and convert a composed config once.

Below this module nothing sees OmegaConf: ``load_settings`` turns the composed tree
into a typed ``SimicConfig`` or raises ``ConfigError`` with one line that names the
key and what it expected.
"""

import dataclasses
import difflib
import operator
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from esper.simic.envs.registration import BATCHED_ENVS, register_esper_envs
from esper.simic.envs.seed_lifecycle.constants import BATCHED_HOSTS
from esper.simic.settings import (
    EnvConfig,
    RNNConfig,
    RNNImpl,
    RNNType,
    SimicConfig,
    Vectorization,
)


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key and the fix."""


def register_schemas() -> None:
    """Put the run schema in Hydra's ConfigStore; ``conf/config.yaml`` lists it first."""
    ConfigStore.instance().store(name="simic_schema", node=SimicConfig)


_COMPARISONS = {
    "gt": (operator.gt, ">"),
    "ge": (operator.ge, ">="),
    "lt": (operator.lt, "<"),
    "le": (operator.le, "<="),
}


def _bounded_fields(node: Any, prefix: str) -> Iterator[tuple[str, Any, dict[str, float]]]:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _bounded_fields(value, f"{key}.")
        elif "bounds" in f.metadata:
            yield key, value, f.metadata["bounds"]


def check_bounds(settings: Any, prefix: str = "") -> None:
    """Raise ``ConfigError`` for the first field outside the bounds its schema declares."""
    for key, value, bounds in _bounded_fields(settings, prefix):
        if value is None:
            continue
        for name, limit in bounds.items():
            compare, symbol = _COMPARISONS[name]
            if not compare(value, limit):
                raise ConfigError(f"{key}={value} is out of range: expected {key} {symbol} {limit}")


def check_cross_field(settings: SimicConfig) -> None:
    """Constraints that relate several keys."""
    agent = settings.agent
    batch = agent.num_steps * settings.env.num_envs
    if agent.rnn is None and batch % agent.minibatch_size != 0:
        raise ConfigError(
            f"agent.minibatch_size={agent.minibatch_size} must divide the rollout batch "
            f"agent.num_steps * env.num_envs = {batch}"
        )
    if (agent.rnn is None) != (agent.name == "ppo"):
        raise ConfigError(
            f"agent.name={agent.name} with agent.rnn {'unset' if agent.rnn is None else 'set'}: "
            "choose agent=ppo or agent=recurrent_ppo"
        )
    if agent.rnn is not None and agent.compile and agent.rnn.impl is not RNNImpl.esper:
        raise ConfigError(
            "agent.compile=true for recurrent PPO needs agent.rnn.impl=esper (torch's fused "
            "LSTM/GRU cannot be compiled into the step): set one or the other"
        )
    if agent.rnn is not None and agent.rnn.impl is RNNImpl.esper:
        check_esper_rnn(agent.rnn, agent.burn_in, settings.trainer.device)
    if agent.burn_in > agent.seq_len:
        raise ConfigError(
            f"agent.burn_in={agent.burn_in} must not exceed agent.seq_len={agent.seq_len}"
        )
    device = settings.trainer.device
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"trainer.device={device!r}: expected cpu, cuda, cuda:N or auto")


def check_esper_rnn(rnn: RNNConfig, burn_in: int, device: str) -> None:
    """What ``agent.rnn.impl=esper``'s kernel implements: an LSTM, on the CPU, without burn-in."""
    if rnn.type is not RNNType.lstm:
        raise ConfigError(
            f"agent.rnn.impl=esper implements LSTM cores only, got agent.rnn.type="
            f"{rnn.type.value}: set agent.rnn.impl=torch"
        )
    if device != "cpu":
        raise ConfigError(
            f"agent.rnn.impl=esper runs on the CPU only, got trainer.device={device}: set "
            "trainer.device=cpu or agent.rnn.impl=torch"
        )
    if burn_in:
        raise ConfigError(
            f"agent.burn_in={burn_in} needs chunks that start at episode boundaries: set "
            "agent.burn_in=0 or agent.rnn.impl=torch"
        )


def check_env_id(env_id: str) -> None:
    """Fail early, with suggestions, on an id gymnasium does not know."""
    register_esper_envs()
    if env_id in gym.envs.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"env.id={env_id!r} is not a registered gymnasium environment.{hint}")


def check_batched(env: EnvConfig, device: str) -> None:
    """``env.vectorization=batched``: an env and host with a batched form, on a usable device.

    The batched env computes on ``trainer.device`` (the per-env ones stay on the CPU).
    """
    if env.vectorization is not Vectorization["batched"]:
        return
    batched = "env.vectorization=batched"
    if env.id not in BATCHED_ENVS:
        raise ConfigError(
            f"{batched}: env.id={env.id} has no batched implementation: set "
            "env.vectorization=sync or async"
        )
    host = env.kwargs.get("host", "surrogate")
    if host not in BATCHED_HOSTS:
        raise ConfigError(
            f"{batched} batches env.kwargs.host in {list(BATCHED_HOSTS)}, got {host!r}: set "
            "++env.kwargs.host=mlp or env.vectorization=sync"
        )
    if env.max_episode_steps is not None:
        raise ConfigError(
            f"{batched} takes no env.max_episode_steps (got {env.max_episode_steps}): set "
            "env.kwargs.max_epochs instead"
        )
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            available = torch.cuda.device_count()
            raise ConfigError(
                f"{batched} puts the hosts on trainer.device={device}, but this machine has "
                f"{available} CUDA device(s): set trainer.device=cpu or auto"
            )


def load_settings(cfg: DictConfig) -> SimicConfig:
    """Convert and check a composed config; ``ConfigError`` names the first problem."""
    try:
        settings = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(describe_config_exception(error)) from error
    if not isinstance(settings, SimicConfig):
        raise ConfigError(
            "the composed config does not follow the simic_schema; "
            "conf/config.yaml must list simic_schema first in its defaults"
        )
    check_bounds(settings)
    check_cross_field(settings)
    check_env_id(settings.env.id)
    check_batched(settings.env, settings.trainer.device)
    return settings


def describe_config_exception(error: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, the problem, the fix."""
    cause = error.__cause__ if error.__cause__ is not None else error
    if isinstance(cause, MissingConfigException) or isinstance(error, MissingConfigException):
        missing = cause if isinstance(cause, MissingConfigException) else error
        group = (missing.missing_cfg_file or "").rsplit("/", 1)
        options = ", ".join(missing.options or [])
        if len(group) == 2 and options:
            name, option = group
            return f"{name}={option} is not an option of group '{name}': choose one of {options}"
        return str(missing).splitlines()[0]
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or "config"
        message = (getattr(cause, "msg", None) or str(cause)).splitlines()[0]
        if isinstance(cause, ConfigKeyError | ConfigAttributeError):
            return f"{key} is not a config key{_suggest_key(key)}"
        return f"{key}: {message}"
    return str(error).splitlines()[0]


def _suggest_key(full_key: str) -> str:
    """A 'did you mean' for a misspelled key, read off the schema."""
    node: Any = SimicConfig
    *parents, leaf = full_key.split(".")
    for part in parents:
        types = (
            {f.name: f.type for f in dataclasses.fields(node)}
            if dataclasses.is_dataclass(node)
            else {}
        )
        annotation = types.get(part)
        if getattr(annotation, "__origin__", None) is dict:
            return f"; {'.'.join(parents)} is a mapping: add an entry with +{full_key}=VALUE"
        node = _dataclass_of(annotation)
        if node is None:
            return ""
    names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
    close = difflib.get_close_matches(leaf, names, n=1)
    if not close:
        return f"; valid keys: {', '.join(names)}" if names else ""
    prefix = ".".join(parents)
    return f"; did you mean {prefix + '.' if prefix else ''}{close[0]}?"


def _dataclass_of(annotation: Any) -> Any:
    """The dataclass inside ``X`` or ``X | None``, else None."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if dataclasses.is_dataclass(arg):
            return arg
    return None
