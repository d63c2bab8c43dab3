"""Recurrent PPO solves partially observable tasks that feed-forward PPO cannot.

The shipped presets, unchanged but for logging, with fixed seeds (runs are
deterministic on CPU, so each result is reproducible).
"""

import pytest

from esper.simic.testing import compose_settings, run_training

pytestmark = pytest.mark.slow


def test_recurrent_ppo_balances_the_velocity_hidden_cartpole(quiet, tmp_path):
    result = run_training(["+experiment=stateless_cartpole_rppo", "seed=0", *quiet], tmp_path)
    assert result.final_eval_return_mean >= 400


def test_recurrent_ppo_on_esper_kernel_compiled_balances_it_too(quiet, tmp_path):
    """The same preset trained on unpadded windows through esper's LSTM kernel, each
    gradient step compiled whole: the fast path learns as the default one does."""
    overrides = ["agent.rnn.impl=esper", "agent.compile=true"]
    result = run_training(
        ["+experiment=stateless_cartpole_rppo", "seed=0", *overrides, *quiet], tmp_path
    )
    assert result.final_eval_return_mean >= 400


def test_feed_forward_ppo_stays_well_below_on_the_same_budget(quiet, tmp_path):
    result = run_training(["+experiment=stateless_cartpole_ppo", "seed=0", *quiet], tmp_path)
    assert result.final_eval_return_mean <= 150


def test_recurrent_ppo_recalls_a_cue_across_an_8_step_delay(quiet, tmp_path):
    overrides = ["+experiment=cue_recall_rppo", "seed=0", *quiet]
    settings, _ = compose_settings(overrides)
    assert settings.env.kwargs["delay"] >= 8
    result = run_training(overrides, tmp_path)
    assert result.final_eval_return_mean >= 0.95  # optimal return is 1
