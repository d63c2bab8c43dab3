"""The peers (scripts/peers_sb3.py) read their settings from the composed presets, with
Stable-Baselines3's conventions converted, and write results the seeds report reads."""

import math

import pytest

from esper.simic.bench.peers import peer_setup, train_peer
from esper.simic.testing import compose_settings


def setup_of(preset: str):
    settings, _ = compose_settings([f"+experiment={preset}"])
    return settings, peer_setup(settings)


def test_cartpole_peer_has_the_presets_settings_in_sb3s_conventions():
    settings, setup = setup_of("cartpole_ppo")
    algorithm = setup.algorithm
    assert (setup.runner, setup.env_id, setup.num_envs) == ("stable-baselines3", "CartPole-v1", 8)
    assert (algorithm["n_steps"], algorithm["batch_size"], algorithm["n_epochs"]) == (32, 256, 20)
    assert algorithm["vf_coef"] == settings.agent.vf_coef / 2  # MSE without the 1/2
    # Both schedules decay linearly to 0 over SB3's remaining progress (1 -> 0).
    assert algorithm["learning_rate"](1.0) == pytest.approx(1e-3)
    assert algorithm["learning_rate"](0.25) == pytest.approx(2.5e-4)
    assert algorithm["clip_range"](0.5) == pytest.approx(0.1)
    assert (algorithm["gamma"], algorithm["gae_lambda"], setup.normalize) == (0.98, 0.8, None)
    assert setup.total_timesteps == settings.total_timesteps == 100_000


def test_acrobot_keeps_a_constant_rate_and_normalised_rewards():
    settings, setup = setup_of("acrobot_ppo")
    assert setup.algorithm["learning_rate"] == 3e-4 and setup.algorithm["batch_size"] == 64
    assert setup.normalize is not None and setup.normalize["norm_reward"]
    assert setup.normalize["norm_obs"] == settings.env.normalize_obs


def test_recurrent_preset_maps_to_sb3_contrib_with_a_separate_critic_lstm():
    _, setup = setup_of("stateless_cartpole_rppo")
    kwargs = setup.algorithm["policy_kwargs"]
    assert (setup.runner, setup.algorithm["policy"]) == ("sb3-contrib", "MlpLstmPolicy")
    assert (kwargs["lstm_hidden_size"], kwargs["shared_lstm"], kwargs["enable_critic_lstm"]) == (
        64,
        False,
        True,
    )
    assert setup.env_id == "esper/StatelessCartPole-v0" and setup.normalize is not None


def test_a_preset_without_an_sb3_equivalent_is_refused_with_the_ones_there_are():
    settings, _ = compose_settings(["+experiment=seed_lifecycle_ppo"])
    with pytest.raises(ValueError, match="cartpole_ppo"):
        peer_setup(settings)


@pytest.mark.parametrize("preset", ["pendulum_ppo", "stateless_cartpole_rppo"])
def test_a_tiny_peer_run_records_one_seeds_result(preset):
    result = train_peer(preset, 3, ("total_timesteps=512",))
    assert (result.preset, result.seed, result.budget, result.eval_episodes) == (preset, 3, 512, 10)
    assert result.deterministic and result.version and math.isfinite(result.final_eval_return)
