"""Envs by id, as a user meets them on the command line: ``module:Id`` and ``env.imports``
from a package made on the fly, the ``esper/`` ids after ``import esper.simic.envs`` in a
fresh interpreter, and one line at the door for a space the agents cannot take."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

EXIT_CONFIG_ERROR = 2
TINY = [
    "total_timesteps=256",
    "agent.num_steps=32",
    "agent.minibatch_size=64",
    "agent.update_epochs=1",
    "env.num_envs=2",
    "trainer.eval_episodes=2",
    "trainer.progress=off",
    "logger=none",
]

THROWAWAY_SUITE = '''
"""A suite that registers its envs on import, as third-party suites do."""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class GuessEnv(gym.Env):
    """Discrete observation (the answer), Discrete action; reward 1 for echoing it."""

    observation_space = spaces.Discrete(3)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._answer = int(self.np_random.integers(3))
        return self._answer, {}

    def step(self, action):
        return self._answer, float(action == self._answer), True, False, {}


class TextEnv(GuessEnv):
    observation_space = spaces.Text(8)


gym.register("Throwaway-v0", entry_point=GuessEnv)
gym.register("ThrowawayText-v0", entry_point=TextEnv)
'''


@pytest.fixture(scope="module")
def suite_path(tmp_path_factory):
    """A directory holding the throwaway suite, to put on the subprocess's path."""
    root = tmp_path_factory.mktemp("suite")
    (root / "throwaway_suite").mkdir()
    (root / "throwaway_suite" / "__init__.py").write_text(textwrap.dedent(THROWAWAY_SUITE))
    return root


def run_cli(*args, cwd, suite_path):
    env = {**os.environ, "PYTHONPATH": str(suite_path)}
    return subprocess.run(
        [sys.executable, "-m", "esper.simic", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def summary(cwd):
    (path,) = cwd.glob("outputs/*/*/summary.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    "overrides",
    [
        ["env.id=throwaway_suite:Throwaway-v0"],
        ["env.imports=[throwaway_suite]", "env.id=Throwaway-v0"],
    ],
    ids=["module-colon-id", "env-imports"],
)
def test_a_suite_registered_on_import_trains_through_the_cli(overrides, tmp_path, suite_path):
    result = run_cli(*overrides, *TINY, cwd=tmp_path, suite_path=suite_path)
    assert result.returncode == 0, result.stderr
    assert summary(tmp_path)["total_env_steps"] == 256


def test_unsupported_space_stops_with_one_line_and_creates_nothing(tmp_path, suite_path):
    result = run_cli(
        "env.id=throwaway_suite:ThrowawayText-v0", *TINY, cwd=tmp_path, suite_path=suite_path
    )
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(
        "esper.simic: config error: env.id=throwaway_suite:ThrowawayText-v0: observation space "
        "Text("
    )
    assert "is not supported: expected Box (any shape; uint8 images" in line
    assert list(tmp_path.iterdir()) == []


def test_esper_ids_make_after_importing_the_envs_package(tmp_path):
    """No call to a registration function: importing the package is enough."""
    script = textwrap.dedent(
        """
        import gymnasium
        import esper.simic.envs
        ids = sorted(i for i in gymnasium.envs.registry if i.startswith("esper/"))
        for env_id in ids:
            env = gymnasium.make(env_id)
            env.reset(seed=0)
            env.close()
        print(",".join(ids))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().split(",") == [
        "esper/CueRecall-v0",
        "esper/SeedLifecycle-v0",
        "esper/StatelessCartPole-v0",
    ]
