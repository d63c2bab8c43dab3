"""Two gloo ranks, each on half of a rollout, take the gradient steps one process takes on
the whole of it: the weights after an update agree to float tolerance.

The minibatch is the whole rollout, so each rank's share is its half and the steps are
the same steps; the ranks normalise advantages with the whole minibatch's moments, weight
their losses by their share of its valid steps and sum their gradients before clipping.
"""

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from compile_support import needs_compile
from distributed_workers import (
    OBS_DIM,
    learn,
    rank_worker,
    reward_batches,
    settings_for,
    statistics_batches,
    statistics_worker,
    synthetic_rollout,
)
from gymnasium.wrappers.utils import RunningMeanStd

from esper.simic.agents.heads import DiscreteActions
from esper.simic.assembly import build_policy
from esper.simic.envs.tensor_wrappers import TensorRunningMeanStd

WORLD = 2

CASES = {
    "feed-forward": [],
    "feed-forward, compiled": ["agent.compile=true"],
    "feed-forward, loop collector": ["collector=loop"],
    "feed-forward, target-KL stop after the first epoch": ["agent.target_kl=1e-9"],
    "lstm, torch chunks": ["agent=recurrent_ppo", "agent.seq_len=4"],
    "gru, torch chunks, separate cores": [
        "agent=recurrent_ppo",
        "agent.seq_len=4",
        "agent.rnn.type=gru",
    ],
    "lstm, esper windows, compiled": [
        "agent=recurrent_ppo",
        "agent.seq_len=4",
        "agent.rnn.impl=esper",
        "agent.compile=true",
    ],
}


def marks(name: str) -> list[pytest.MarkDecorator]:
    return [needs_compile] if "compiled" in name else []


@pytest.mark.parametrize(
    "overrides",
    [pytest.param(v, id=k, marks=marks(k)) for k, v in CASES.items()],
)
def test_two_ranks_on_halves_take_the_single_process_step(overrides, tmp_path):
    settings = settings_for(overrides)
    single = learn(settings, synthetic_rollout(settings), data_parallel=None)
    mp.spawn(
        rank_worker,
        args=(WORLD, str(tmp_path / "store"), str(tmp_path), overrides),
        nprocs=WORLD,
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank in ranks:
        for name, weight in single["weights"].items():
            torch.testing.assert_close(rank["weights"][name], weight, rtol=1e-5, atol=1e-6)
    # The ranks agree exactly (the same summed gradients from the same weights), and the
    # gradient statistics they report are the whole minibatch's.
    for name in single["weights"]:
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name])
    for key in ("grad/global_norm", "train/clipfrac", "train/epochs"):
        assert ranks[0]["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-4)


def test_the_update_moves_the_weights():
    """The comparison above is not between two untouched initialisations."""
    settings = settings_for([])
    torch.manual_seed(0)
    initial = build_policy(settings.agent, OBS_DIM, DiscreteActions(2)).state_dict()
    after = learn(settings, synthetic_rollout(settings), data_parallel=None)["weights"]
    moved = sum(float((after[k] - initial[k]).abs().sum()) for k in initial)
    assert moved > 1e-3


def test_synced_normaliser_statistics_are_those_of_all_ranks_rows(tmp_path):
    """Observation and reward normalisers on two ranks hold the statistics one process
    stepping every env would have: gymnasium's NumPy statistics and a tensor env's."""
    single = {
        "numpy": RunningMeanStd(shape=(2,)),
        "tensor": TensorRunningMeanStd(torch.device("cpu")),
    }
    for batch, rewards in zip(statistics_batches(), reward_batches(), strict=True):
        single["numpy"].update(batch)
        single["tensor"].update(rewards)
    mp.spawn(statistics_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD)
    for rank in range(WORLD):
        state = torch.load(tmp_path / f"stats{rank}.pt", weights_only=False)
        for kind, rtol in (("numpy", 1e-10), ("tensor", 1e-5)):  # float32 moments there
            np.testing.assert_allclose(state[kind]["mean"], single[kind].mean, rtol=rtol)
            np.testing.assert_allclose(state[kind]["var"], single[kind].var, rtol=rtol)
            assert state[kind]["count"] == pytest.approx(single[kind].count)
