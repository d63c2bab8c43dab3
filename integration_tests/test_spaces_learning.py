"""Feed-forward and recurrent PPO learn gymnasium's own envs with structured observations
well above a uniform random policy: FrozenLake (``Discrete`` observation, one-hot) and
Blackjack (``Tuple`` of three ``Discrete``), 20k steps each, seed 0.

Measured at 20k steps on the project's 2-core machine: FrozenLake (not slippery) 1.0 for
both agents, random 0.017; Blackjack -0.05 (feed-forward) and -0.13 (recurrent) over 500
episodes, random -0.40.
"""

import gymnasium as gym
import numpy as np
import pytest

from esper.simic.testing import run_training

pytestmark = pytest.mark.slow

BUDGET = ["total_timesteps=20000", "trainer.eval_interval=0", "seed=0"]


def random_return(env_id: str, episodes: int, **kwargs) -> float:
    """Mean return of uniformly random actions over ``episodes`` episodes."""
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(0)
    returns = []
    for episode in range(episodes):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


@pytest.mark.parametrize("agent", ["ppo", "recurrent_ppo"])
def test_discrete_observations_frozen_lake(agent, quiet, tmp_path):
    baseline = random_return("FrozenLake-v1", 2000, is_slippery=False)
    result = run_training(
        [
            "env.id=FrozenLake-v1",
            "+env.kwargs.is_slippery=false",
            "agent.ent_coef=0.01",
            f"agent={agent}",
            "trainer.eval_episodes=10",
            *BUDGET,
            *quiet,
        ],
        tmp_path,
    )
    assert baseline < 0.05
    assert result.final_eval_return_mean >= 0.9  # every eval episode but one reaches the goal


@pytest.mark.parametrize("agent", ["ppo", "recurrent_ppo"])
def test_tuple_observations_blackjack(agent, quiet, tmp_path):
    baseline = random_return("Blackjack-v1", 2000)
    result = run_training(
        ["env.id=Blackjack-v1", f"agent={agent}", "trainer.eval_episodes=500", *BUDGET, *quiet],
        tmp_path,
    )
    # The mean of 500 episodes has a standard error of about 0.04.
    assert result.final_eval_return_mean >= baseline + 0.15
