"""Factored, masked PPO wired to Esper's seed-lifecycle task: both agents run it, the
score is reported, and unused heads are configured by name."""

import json

import pytest

from esper.simic.envs.scoring import reference_score
from esper.simic.envs.seed_lifecycle import (
    REAL_HOST_REFERENCE_RETURNS,
    REAL_HOST_REFERENCE_RETURNS_BY_REWARD,
    normalized_score,
)
from esper.simic.settings import EnvConfig
from esper.simic.testing import run_training

SEED_LIFECYCLE = "esper/SeedLifecycle-v0"


@pytest.mark.parametrize("agent", ["ppo", "recurrent_ppo"])
def test_both_agents_train_and_report_the_normalised_score(tiny, tmp_path, agent):
    result = run_training([*tiny, f"agent={agent}", "env=seed_lifecycle"], tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_eval_normalized_score"] == pytest.approx(
        normalized_score(result.final_eval_return_mean, "medium")
    )
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    update = next(r for r in rows if "train/policy_loss" in r)
    for head in ("op", "slot", "blueprint", "tempo", "alpha_target"):
        assert 0.0 <= update[f"train/masked_mass/{head}"] <= 1.0
        assert update[f"train/entropy/{head}"] >= 0.0


def test_per_head_entropy_coefficients_are_checked_by_name(tiny, tmp_path):
    with pytest.raises(
        ValueError, match=r"head_ent_coefs names blueprnt, but .*heads are op, slot"
    ):
        run_training([*tiny, "env=seed_lifecycle", "+agent.head_ent_coefs.blueprnt=2"], tmp_path)


def test_reference_score_only_where_the_table_applies():
    assert reference_score(EnvConfig(id="CartPole-v1")) is None
    assert reference_score(EnvConfig(id=SEED_LIFECYCLE, kwargs={"num_slots": 2})) is None
    assert reference_score(EnvConfig(id=SEED_LIFECYCLE, kwargs={"reward": "escrow"})) is None
    real_host = {"host": "mlp", "reward": "sparse"}
    assert reference_score(EnvConfig(id=SEED_LIFECYCLE, kwargs=real_host)) is None
    impaired = reference_score(
        EnvConfig(id=SEED_LIFECYCLE, kwargs={**real_host, "mlp_task": "impaired"})
    )
    assert impaired is not None
    heuristic, random = (
        REAL_HOST_REFERENCE_RETURNS["heuristic"],
        REAL_HOST_REFERENCE_RETURNS["random"],
    )
    assert impaired(heuristic) == pytest.approx(1.0) and impaired(random) == pytest.approx(0.0)
    paired = reference_score(
        EnvConfig(
            id=SEED_LIFECYCLE, kwargs={**real_host, "mlp_task": "impaired", "reward": "paired"}
        )
    )
    assert paired is not None
    table = REAL_HOST_REFERENCE_RETURNS_BY_REWARD["paired"]
    assert paired(table["heuristic"]) == pytest.approx(1.0)
    assert paired(table["random"]) == pytest.approx(0.0)
    # The twin term is the same for every policy on a seed: the scores match SPARSE's.
    for policy in ("wait", "fixed_schedule"):
        assert paired(table[policy]) == pytest.approx(
            impaired(REAL_HOST_REFERENCE_RETURNS[policy]), abs=0.01
        )
    score = reference_score(EnvConfig(id=SEED_LIFECYCLE, kwargs={"difficulty": "hard"}))
    assert score is not None
    assert score(12.5) == pytest.approx(normalized_score(12.5, "hard"))
    sparse = reference_score(EnvConfig(id=SEED_LIFECYCLE, kwargs={"reward": "sparse"}))
    assert sparse is not None
    assert sparse(0.6) == pytest.approx(normalized_score(0.6, "medium", "sparse"))
