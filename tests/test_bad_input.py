"""Every check at the door: bad values stop with one line before any run dir exists.

These are the checks that used to escape into a traceback after the envs, the run dir and
the W&B run were made (gradient thresholds, per-head entropy names, a recurrent compile
without the windows kernel, an observation space the agents cannot take), and the checks
that came with the one PPO core (window minibatch shapes, the moved ``on_nonfinite`` key).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXIT_CONFIG_ERROR = 2
BAD_INPUTS = {
    "vanishing-above-exploding": (
        ["collector.vanishing_threshold=200"],
        "collector.vanishing_threshold=200.0 must be >= 0 and below "
        "collector.exploding_threshold=100.0",
    ),
    "negative-vanishing": (
        ["collector.vanishing_threshold=-1"],
        "collector.vanishing_threshold=-1.0 must be >= 0",
    ),
    "unknown-head": (
        ["+experiment=seed_lifecycle_ppo", "+agent.head_ent_coefs.blueprnt=2"],
        "agent.head_ent_coefs names blueprnt, but esper/SeedLifecycle-v0's action space has "
        "no such head: its heads are op, slot, blueprint, tempo, alpha_target",
    ),
    "head-of-an-unfactored-env": (
        ["+experiment=cartpole_ppo", "+agent.head_ent_coefs.op=2"],
        "agent.head_ent_coefs names op, but CartPole-v1's action space has no such head: "
        "it has one head",
    ),
    "recurrent-compile-on-torch-cores": (
        ["+experiment=stateless_cartpole_rppo", "agent.compile=true"],
        "agent.compile=true for recurrent PPO needs agent.rnn.impl=esper",
    ),
    "unknown-module-in-id": (
        ["env.id=no_such_suite:Foo-v0"],
        "env.id=no_such_suite:Foo-v0: module 'no_such_suite' could not be imported (No module "
        "named 'no_such_suite'): install the package that provides it, e.g. pip install "
        "no-such-suite",
    ),
    "unknown-module-in-imports": (
        ["env.imports=[no_such_suite.envs]"],
        "env.imports: module 'no_such_suite.envs' could not be imported (No module named "
        "'no_such_suite'): install the package that provides it, e.g. pip install no-such-suite",
    ),
    "module-that-registers-nothing-under-the-id": (
        ["env.id=gymnasium.envs.classic_control:CartPol-v1"],
        "env.id='gymnasium.envs.classic_control:CartPol-v1' is not a registered gymnasium "
        "environment: importing gymnasium.envs.classic_control registered no environment "
        "CartPol-v1. Did you mean CartPole-v1",
    ),
    "unknown-id-after-imports": (
        ["env.imports=[gymnasium.envs.classic_control]", "env.id=Acrobat-v1"],
        "env.id='Acrobat-v1' is not a registered gymnasium environment. Did you mean Acrobot-v1",
    ),
    "wrapper-target-that-does-not-exist": (
        ["env.wrappers=[{_target_:gymnasium.wrappers.NoSuchWrapper}]"],
        "env.wrappers[0]._target_=gymnasium.wrappers.NoSuchWrapper cannot be imported: name an "
        "existing wrapper class",
    ),
    "wrapper-that-does-not-accept-an-env": (
        ["env.wrappers=[{_target_:collections.Counter}]"],
        "env.wrappers[0] (collections.Counter) does not accept the env: TypeError: 'TimeLimit' "
        "object is not iterable",
    ),
    "wrapper-that-returns-no-env": (
        ["env.wrappers=[{_target_:builtins.str}]"],
        "env.wrappers[0] (builtins.str) returned a str, not a gymnasium env",
    ),
    "wrapper-without-target": (
        ["env.wrappers=[{stack_size:4}]"],
        "env.wrappers[0] has no _target_: give each wrapper as {_target_: module.Class, ...}",
    ),
    "per-env-wrappers-on-a-batched-env": (
        [
            "+experiment=seed_lifecycle_mlp_ppo",
            "env.wrappers=[{_target_:gymnasium.wrappers.TimeLimit,max_episode_steps:5}]",
        ],
        "env.vectorization=batched steps every env in one computation, so per-env "
        "env.wrappers cannot apply",
    ),
    "window-minibatch-of-two-shapes": (
        ["+experiment=stateless_cartpole_rppo", "agent.rnn.impl=esper", "agent.minibatch_size=96"],
        "agent.rnn.impl=esper cuts the rollout into 16 windows of agent.seq_len=16 steps: "
        "agent.minibatch_size=96 must be a multiple of agent.seq_len whose window count "
        "divides 16",
    ),
    "moved-on-nonfinite": (
        ["collector.on_nonfinite=abort"],
        "collector.on_nonfinite moved to agent.on_nonfinite: set agent.on_nonfinite=VALUE",
    ),
}


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_stops_with_one_line_and_creates_nothing(overrides, message, tmp_path):
    assert_refused_at_the_door(overrides, message, tmp_path)


def assert_refused_at_the_door(
    overrides: list[str], message: str, tmp_path: Path, env: dict[str, str] | None = None
) -> None:
    """The command exits 2 with the one line ``message`` and creates nothing."""
    result = subprocess.run(
        [sys.executable, "-m", "esper.simic", *overrides, "logger=none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("esper.simic: config error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []


TWO_RANKS = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
"""What torchrun exports to rank 0 of two: the door refuses before joining the group."""
BAD_DISTRIBUTED_INPUTS = {
    "envs-not-split-evenly": (
        TWO_RANKS,
        ["+experiment=cartpole_ppo", "env.num_envs=3", "agent.minibatch_size=96"],
        "env.num_envs=3 is split over the 2 processes of this run and must be a multiple of 2: "
        "set env.num_envs=2 or start another number",
    ),
    "minibatch-not-split-evenly": (
        TWO_RANKS,
        ["+experiment=cartpole_ppo", "env.num_envs=6", "agent.minibatch_size=3"],
        "agent.minibatch_size=3 is split over the 2 processes of this run and must be a "
        "multiple of 2",
    ),
    "recurrent-minibatch-counts-would-differ": (
        TWO_RANKS,
        ["+experiment=stateless_cartpole_rppo", "agent.minibatch_size=96"],
        "recurrent PPO over 2 processes: each takes agent.minibatch_size / 2 = 48 steps of its "
        "128-step rollout per minibatch, which must divide 128",
    ),
    "sweep-under-torchrun": (
        TWO_RANKS,
        ["-m", "seed=0,1"],
        "a sweep (-m) under torchrun is not supported",
    ),
    "nccl-without-cuda": (
        {},
        ["distributed.backend=nccl"],
        "distributed.backend=nccl runs on CUDA GPUs only, here trainer.device=cpu",
    ),
}


@pytest.mark.skipif(torch.cuda.is_available(), reason="NCCL's refusal is about CPU machines")
@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    BAD_DISTRIBUTED_INPUTS.values(),
    ids=BAD_DISTRIBUTED_INPUTS.keys(),
)
def test_bad_distributed_input_stops_with_one_line(env, overrides, message, tmp_path):
    assert_refused_at_the_door(overrides, message, tmp_path, env)
