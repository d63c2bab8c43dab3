"""hydra_plugins.esper_optuna_sweeper: Hydra's sweep syntax as Optuna distributions, and the
preset's study kept with its sweep."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.esper_optuna_sweeper.search_space import split_overrides


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("lr=tag(log, interval(1e-4, 3e-3))", FloatDistribution(1e-4, 3e-3, log=True)),
        ("clip=interval(0.1, 0.3)", FloatDistribution(0.1, 0.3)),
        ("width=int(interval(8, 64))", IntDistribution(8, 64)),
        ("epochs=choice(4, 10, 20)", CategoricalDistribution([4, 10, 20])),
        ("gamma=0.98,0.99", CategoricalDistribution([0.98, 0.99])),
        ("seq=range(8, 33, 8)", IntDistribution(8, 32, step=8)),
    ],
)
def test_hydra_sweeps_become_optuna_distributions(line, expected):
    space, fixed = split_overrides([line])
    assert space == {line.split("=")[0]: expected}
    assert fixed == {}


def test_a_value_on_the_command_line_takes_a_key_out_of_the_search():
    preset = ["agent.gamma=choice(0.98, 0.99)", "agent.clip_coef=interval(0.1, 0.3)"]
    space, fixed = split_overrides([*preset, "agent.gamma=0.95", "seed=3"])
    assert set(space) == {"agent.clip_coef"}
    assert fixed == {"agent.gamma": "0.95", "seed": "3"}
