"""The summary says what its evaluation measured; evaluations of a run never share a seed."""

import json

from hypothesis import given
from hypothesis import strategies as st

from esper.simic.checkpoint import load_checkpoint
from esper.simic.testing import run_training
from esper.simic.train import eval_seeds


@given(
    run_seed=st.integers(0, 2**31),
    episodes=st.integers(1, 64),
    first=st.integers(0, 10_000),
    second=st.integers(0, 10_000),
)
def test_evaluations_of_one_run_share_no_seed(run_seed, episodes, first, second):
    a, b = eval_seeds(run_seed, first, episodes), eval_seeds(run_seed, second, episodes)
    assert len(set(a)) == episodes
    assert first == second or not set(a) & set(b)


def test_summary_records_the_evaluated_policy_and_best_checkpoint(tiny, tmp_path):
    run_training([*tiny, "seed=3", "trainer.eval_deterministic=false"], tmp_path)
    record = json.loads((tmp_path / "summary.json").read_text())["eval"]
    # TINY_OVERRIDES: 8 updates of 64 steps, 2 eval episodes, periodic eval at update 4.
    assert record["policy"] == "final"
    assert record["deterministic"] is False
    assert record["episodes"] == 2
    assert record["env_seeds"] == eval_seeds(3, 8, 2)
    best = record["best"]
    assert best["update"] in (4, 8)
    assert best["global_step"] == 64 * best["update"]
    state = load_checkpoint(tmp_path / best["checkpoint"])
    assert state["counters"]["update"] == best["update"]
    assert state["best_eval_return"] == best["selection_eval_return_mean"]
