"""The door: register the schemas with Hydra, then check and convert a composed config once.

Below this module nothing sees OmegaConf: ``load_settings`` turns the composed tree
into a typed ``SimicConfig`` or raises ``ConfigError`` with one line that names the
key and what it expected.
"""

import dataclasses
import difflib
import importlib
import math
import operator
import os
import pydoc
import shutil
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from esper.simic.assembly import UnsupportedSpaceError, action_spec, observation_layout
from esper.simic.distributed import detect_ranks
from esper.simic.envs.registration import BATCHED_ENVS, register_esper_envs
from esper.simic.envs.seed_lifecycle.constants import BATCHED_HOSTS
from esper.simic.settings import (
    AgentConfig,
    DistBackend,
    EnvConfig,
    RNNConfig,
    RNNImpl,
    RNNType,
    SimicConfig,
    Vectorization,
)

MOVED_KEYS = {"collector.on_nonfinite": "agent.on_nonfinite"}
"""Keys that moved, old -> new: an old key gets one line naming its new place."""

COMPILE_TORCH = "2.13"
"""The first torch with what ``agent.compile=true``'s whole step asks of ``torch.compile``
(``isolate_recompiles``; ``guard_filter_fn`` is older). Every other path runs on the floor
that pyproject.toml states (``scripts/check_floors.sh``)."""


def compile_unsupported(device: str) -> str | None:
    """Why ``agent.compile=true`` cannot run on ``device`` here (the fix included), or None.

    On the CPU, inductor compiles the graph to C++ with ``$CXX`` (else g++), as its
    ``config.cpp.cxx`` reads: without one the first update would fail, after the run dir,
    envs and W&B run exist.
    """
    if torch.__version__ < COMPILE_TORCH:
        return f"needs torch>={COMPILE_TORCH}, this is torch {torch.__version__}: upgrade torch"
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    compiler = os.environ.get("CXX", "g++")
    if on_cpu and shutil.which(compiler) is None:
        return (
            f"on the CPU needs a C++ compiler (inductor's), {compiler} is not on PATH: install one"
        )
    return None


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


def _values(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _values(getattr(node, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _values(value, f"{key}.{name}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _values(value, f"{key}[{index}]")
    else:
        yield key, node


def check_finite(settings: Any) -> None:
    """No inf or nan anywhere (``agent.learning_rate=inf`` would only fail mid-update)."""
    for key, value in _values(settings, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a finite number: give a finite value")


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
        check_windows(agent, settings.env.num_envs)
    if agent.burn_in > agent.seq_len:
        raise ConfigError(
            f"agent.burn_in={agent.burn_in} must not exceed agent.seq_len={agent.seq_len}"
        )
    device = settings.trainer.device
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"trainer.device={device!r}: expected cpu, cuda, cuda:N or auto")
    unsupported = compile_unsupported(device) if agent.compile else None
    if unsupported is not None:
        raise ConfigError(f"agent.compile=true {unsupported} or set agent.compile=false")
    collector = settings.collector
    if not 0.0 <= collector.vanishing_threshold < collector.exploding_threshold:
        raise ConfigError(
            f"collector.vanishing_threshold={collector.vanishing_threshold} must be >= 0 and "
            f"below collector.exploding_threshold={collector.exploding_threshold}"
        )


def check_windows(agent: AgentConfig, num_envs: int) -> None:
    """``rnn.impl=esper`` trains on minibatches of whole windows, all of one shape (a
    compiled step never recompiles): ``minibatch_size / seq_len`` windows each, a count that
    must divide the rollout's windows."""
    windows = num_envs * -(-agent.num_steps // agent.seq_len)
    per_minibatch, remainder = divmod(agent.minibatch_size, agent.seq_len)
    if remainder or windows % per_minibatch:
        raise ConfigError(
            f"agent.rnn.impl=esper cuts the rollout into {windows} windows of "
            f"agent.seq_len={agent.seq_len} steps: agent.minibatch_size={agent.minibatch_size} "
            "must be a multiple of agent.seq_len whose window count divides "
            f"{windows} (e.g. {agent.seq_len * windows})"
        )


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


def _import_module(name: str, key: str) -> None:
    """Import ``name`` (which registers envs), or name it and the pip command that brings it."""
    try:
        importlib.import_module(name)
    except Exception as error:  # any failure of a user module is reported
        package = name.split(".", maxsplit=1)[0].replace("_", "-")
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"{key}: module {name!r} could not be imported ({cause}): install the package "
            f"that provides it, e.g. pip install {package}"
        ) from error


def check_env_id(env: EnvConfig) -> None:
    """Import ``env.imports`` and a ``module:`` prefix of ``env.id``, then fail early, with
    suggestions, on an id gymnasium does not know."""
    register_esper_envs()
    for name in env.imports:
        _import_module(name, "env.imports")
    module, _, name = env.id.rpartition(":")
    if module:
        _import_module(module, f"env.id={env.id}")
    if name in gym.envs.registry:
        return
    close = difflib.get_close_matches(name, list(gym.envs.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    where = f": importing {module} registered no environment {name}" if module else ""
    raise ConfigError(f"env.id={env.id!r} is not a registered gymnasium environment{where}.{hint}")


def check_env_wrappers(env: EnvConfig) -> None:
    """Every ``env.wrappers`` entry names an importable ``_target_``."""
    for index, spec in enumerate(env.wrappers):
        key = f"env.wrappers[{index}]"
        target = spec.get("_target_")
        if not isinstance(target, str):
            raise ConfigError(
                f"{key} has no _target_: give each wrapper as {{_target_: module.Class, ...}}"
            )
        # pydoc.locate, not Hydra's get_object, which logs its own multi-line error.
        if pydoc.locate(target) is None:
            raise ConfigError(
                f"{key}._target_={target} cannot be imported: name an existing wrapper class, "
                "e.g. gymnasium.wrappers.FrameStackObservation"
            )


def _probe_env(env_cfg: EnvConfig) -> gym.Env:
    """One env made and wrapped as the run will make it, errors as one line each."""
    try:
        env = gym.make(env_cfg.id, **env_cfg.kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"env.kwargs of {env_cfg.id}: {str(error).splitlines()[0]}") from error
    except gym.error.DependencyNotInstalled as error:  # its message names the pip command
        raise ConfigError(f"env.id={env_cfg.id}: {str(error).splitlines()[0]}") from error
    for index, spec in enumerate(env_cfg.wrappers):
        try:
            wrapped = instantiate(dict(spec), env)
        except (InstantiationException, TypeError, ValueError) as error:
            env.close()
            cause = error.__cause__ or error
            raise ConfigError(
                f"env.wrappers[{index}] ({spec['_target_']}) does not accept the env: "
                f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
            ) from error
        if not isinstance(wrapped, gym.Env):
            env.close()
            raise ConfigError(
                f"env.wrappers[{index}] ({spec['_target_']}) returned a "
                f"{type(wrapped).__name__}, not a gymnasium env: name a wrapper class"
            )
        env = wrapped
    return env


def check_env_spaces(settings: SimicConfig) -> None:
    """Make one env and check that the agents can handle its spaces and declared heads."""
    env_cfg = settings.env
    env = _probe_env(env_cfg)
    try:
        observation_layout(env.observation_space)
        actions = action_spec(env.action_space, env.metadata)
    except UnsupportedSpaceError as error:
        raise ConfigError(f"env.id={env_cfg.id}: {error}") from error
    finally:
        env.close()
    head_names = actions.head_names
    unknown = sorted(set(settings.agent.head_ent_coefs) - set(head_names))
    if unknown:
        heads = f"its heads are {', '.join(head_names)}" if head_names else "it has one head"
        raise ConfigError(
            f"agent.head_ent_coefs names {', '.join(unknown)}, but {env_cfg.id}'s action "
            f"space has no such head: {heads}"
        )


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
    if env.wrappers:
        raise ConfigError(
            f"{batched} steps every env in one computation, so per-env env.wrappers cannot "
            "apply: drop env.wrappers or set env.vectorization=sync or async"
        )
    if env.normalize_obs:
        raise ConfigError(
            f"{batched} keeps observations on trainer.device, where env.normalize_obs "
            "(NumPy statistics) cannot run: set env.normalize_obs=false"
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
    check_finite(settings)
    check_bounds(settings)
    check_cross_field(settings)
    check_env_id(settings.env)
    check_batched(settings.env, settings.trainer.device)
    check_env_wrappers(settings.env)
    check_env_spaces(settings)
    check_distributed(settings, detect_ranks().world_size)
    return settings


def check_distributed(settings: SimicConfig, world_size: int) -> None:
    """What splitting the run over ``world_size`` processes needs (``distributed.py``):
    whole envs and whole minibatch shares per rank, the same number of minibatches on
    every rank, and a backend that can run on the device."""
    backend, device = settings.distributed.backend, settings.trainer.device
    on_gpu = device.startswith("cuda") and torch.cuda.is_available()
    if backend is DistBackend.nccl and not on_gpu:
        raise ConfigError(
            f"distributed.backend=nccl runs on CUDA GPUs only, here trainer.device={device} "
            f"and CUDA is {'' if torch.cuda.is_available() else 'not '}available: set "
            "distributed.backend=gloo (or auto), or trainer.device=cuda on a GPU machine"
        )
    if world_size == 1:
        return
    agent, num_envs = settings.agent, settings.env.num_envs
    for key, value in (("env.num_envs", num_envs), ("agent.minibatch_size", agent.minibatch_size)):
        if value % world_size:
            raise ConfigError(
                f"{key}={value} is split over the {world_size} processes of this run and "
                f"must be a multiple of {world_size}: set {key}="
                f"{max(world_size, value - value % world_size)} or start another number"
            )
    local_envs, local_minibatch = num_envs // world_size, agent.minibatch_size // world_size
    if agent.rnn is not None and agent.rnn.impl is RNNImpl.esper:
        check_windows(dataclasses.replace(agent, minibatch_size=local_minibatch), local_envs)
    elif agent.rnn is not None:
        local_batch = agent.num_steps * local_envs
        if local_batch % local_minibatch or agent.seq_len > local_minibatch:
            raise ConfigError(
                f"recurrent PPO over {world_size} processes: each takes "
                f"agent.minibatch_size / {world_size} = {local_minibatch} steps of its "
                f"{local_batch}-step rollout per minibatch, which must divide {local_batch} "
                f"and hold agent.seq_len={agent.seq_len} steps, so that every process takes "
                "the same number of gradient steps: change agent.minibatch_size"
            )


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
            if key in MOVED_KEYS:
                return f"{key} moved to {MOVED_KEYS[key]}: set {MOVED_KEYS[key]}=VALUE instead"
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
