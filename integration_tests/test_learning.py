"""PPO learns the classic-control tasks to their thresholds within CI-sized budgets.

Each test trains the shipped experiment preset, unchanged but for logging, with a
fixed seed, and checks the deterministic evaluation return at the end.
"""

import pytest

from esper.simic.testing import run_training

pytestmark = pytest.mark.slow


def test_cartpole_reaches_475_within_100k_steps(quiet, tmp_path):
    result = run_training(["+experiment=cartpole_ppo", "seed=0", *quiet], tmp_path)
    assert result.total_env_steps <= 100_352  # 100k rounded up to whole rollouts
    assert result.final_eval_return_mean >= 475


def test_acrobot_reaches_minus_100_within_200k_steps(quiet, tmp_path):
    result = run_training(["+experiment=acrobot_ppo", "seed=0", *quiet], tmp_path)
    assert result.total_env_steps <= 200_704
    assert result.final_eval_return_mean >= -100


def test_pendulum_reaches_minus_300(quiet, tmp_path):
    result = run_training(["+experiment=pendulum_ppo", "seed=0", *quiet], tmp_path)
    assert result.final_eval_return_mean >= -300
