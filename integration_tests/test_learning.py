"""PPO learns the classic-control tasks to their thresholds on every seed it trains.

Each test trains the shipped preset, unchanged but for logging, on several seeds, two
runs at a time (multi_seed.py), and asserts on every seed's deterministic evaluation at
the end. Seeds per preset, set by the budget of `.ci/run` (about 30 minutes on the
2-core CI machine) and each run's time there:

- cartpole_ppo, 4 seeds (0-3): ~25 s a run, two rounds (the test: 93 s on the shared
  machine).
- acrobot_ppo, 2 seeds (0-1) and pendulum_ppo, 2 seeds (0-1): 200k steps, one round of
  two runs each (~50 s a run), about as long as the one seed this file trained before.

The integration suite (`+suite=integration`) trains seeds 0-9 of each; its distribution
is the README's results table.
"""

import pytest
from multi_seed import final_returns

from esper.simic.testing import compose_settings

pytestmark = pytest.mark.slow


def test_cartpole_reaches_475_within_100k_steps_on_every_seed(quiet, tmp_path):
    assert compose_settings(["+experiment=cartpole_ppo"])[0].total_timesteps == 100_000
    returns = final_returns(["+experiment=cartpole_ppo", *quiet], range(4), tmp_path)
    assert all(r >= 475 for r in returns.values()), returns


def test_acrobot_reaches_minus_100_within_200k_steps_on_every_seed(quiet, tmp_path):
    assert compose_settings(["+experiment=acrobot_ppo"])[0].total_timesteps == 200_000
    returns = final_returns(["+experiment=acrobot_ppo", *quiet], range(2), tmp_path)
    assert all(r >= -100 for r in returns.values()), returns


def test_pendulum_reaches_minus_300_on_every_seed(quiet, tmp_path):
    returns = final_returns(["+experiment=pendulum_ppo", *quiet], range(2), tmp_path)
    assert all(r >= -300 for r in returns.values()), returns
