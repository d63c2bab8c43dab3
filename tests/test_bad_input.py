"""Every check at the door: bad values stop with one line before any run dir exists.

These are the checks that used to escape into a traceback after the envs, the run dir and
the W&B run were made (gradient thresholds, per-head entropy names, a recurrent compile
without the windows kernel, an observation space the agents cannot take), and the checks
that came with the one PPO core (window minibatch shapes, the moved ``on_nonfinite`` key).
"""

import subprocess
import sys

import pytest

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
    "discrete-observations": (
        ["env.id=FrozenLake-v1"],
        "env.id=FrozenLake-v1: observation space Discrete(16) is not supported: expected a "
        "flat (1-D) Box",
    ),
    "tuple-observations": (
        ["env.id=Blackjack-v1"],
        "env.id=Blackjack-v1: observation space Tuple(Discrete(32), Discrete(11), "
        "Discrete(2)) is not supported",
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
    result = subprocess.run(
        [sys.executable, "-m", "esper.simic", *overrides, "logger=none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("esper.simic: config error: ")
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []
