"""Factored, masked PPO masters Esper's seed-lifecycle task (medium difficulty).

The shipped presets train on the task's ground truth (SPARSE: the accuracy the fossilized
seeds commit, minus their params' cost), scored against Esper's heuristic controller: a
normalised score of 1 plays as well as the heuristic, the hidden-gain oracle scores 2.18.
CI budget: 40k env steps, a fifth of the presets' 200k (docs/seed_lifecycle.md, sec. 11,
has the learning curves over the full budget).
"""

import json

import pytest

from esper.simic.envs.seed_lifecycle import normalized_score
from esper.simic.testing import run_training

pytestmark = pytest.mark.slow

CI_BUDGET = ["total_timesteps=40000", "seed=0"]


def train_and_score(experiment: str, quiet: list[str], tmp_path) -> float:
    result = run_training([f"+experiment={experiment}", *CI_BUDGET, *quiet], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    score = summary["final_eval_normalized_score"]
    expected = normalized_score(result.final_eval_return_mean, "medium", "sparse")
    assert score == pytest.approx(expected)
    return score


def test_recurrent_ppo_plays_at_least_as_well_as_esper_heuristic(quiet, tmp_path):
    assert train_and_score("seed_lifecycle_rppo", quiet, tmp_path) >= 1.0


def test_feed_forward_ppo_on_the_same_budget(quiet, tmp_path):
    assert train_and_score("seed_lifecycle_ppo", quiet, tmp_path) >= 1.0
