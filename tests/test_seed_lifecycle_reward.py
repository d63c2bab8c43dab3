"""Esper's SHAPED reward terms against hand-computed values; its ESCROW and SPARSE modes."""

import math

import numpy as np
import pytest

from esper.simic.envs.seed_lifecycle import (
    PAIRED_COMPONENTS,
    SHAPED_COMPONENTS,
    SPARSE_COMPONENTS,
    Op,
    SeedLifecycleEnv,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.constants import BLUEPRINT_INDEX
from esper.simic.envs.seed_lifecycle.lifecycle import Seed
from esper.simic.envs.seed_lifecycle.policies import HeuristicPolicy, RandomPolicy, make_action
from esper.simic.envs.seed_lifecycle.reward import (
    ESCROW_COMPONENTS,
    EscrowStep,
    attribution,
    escrow_attribution,
    fossilize_shaping,
    germination_clawback,
    paired_reward,
    prune_shaping,
    rent,
    shaped_reward,
    sparse_reward,
    timing_discount,
)


def make_seed(stage: SeedStage, *, acc_at_germination=50.0, age=10, in_stage=3) -> Seed:
    seed = Seed(blueprint=0, tempo=1, blend_target=1.0, acc_at_germination=acc_at_germination)
    seed.stage, seed.epochs_total, seed.epochs_in_stage = stage, age, in_stage
    return seed


BLENDING = make_seed(SeedStage.BLENDING)  # germinated at epoch 20 - 10 = 10: no discount


@pytest.mark.parametrize(
    ("contribution", "val_acc", "cf", "expected"),
    [
        (-1.5, 52.0, 0.5, -1.5),  # harm is paid in full
        (3.0, 51.0, 3.0, 2 * 1 * 3 / 4),  # c >= p > 0: harmonic mean of p=1, c=3
        (1.0, 53.0, 3.0, 1.0),  # c < p: c
        (2.0, 49.0, 3.0, 0.0),  # p <= 0: nothing
        (0.5, 53.0, -0.5, 0.5 / (1 + math.exp(1.5))),  # cf < 0: times sigmoid(3 cf)
    ],
)
def test_attribution_by_hand(contribution, val_acc, cf, expected):
    value, penalty = attribution(Op.WAIT, BLENDING, contribution, cf, val_acc, epoch=20)
    assert value == pytest.approx(expected)
    assert penalty == 0.0


def test_attribution_sign_flip_timing_discount_and_fossilize_suppression():
    assert attribution(Op.PRUNE, BLENDING, 1.0, 3.0, 53.0, 20)[0] == pytest.approx(-1.0)
    assert attribution(Op.FOSSILIZE, BLENDING, 1.0, -0.1, 53.0, 20)[0] == 0.0
    early = make_seed(SeedStage.BLENDING, age=9)  # germinated at epoch 1 of a 4-epoch warm-up
    assert timing_discount(1) == pytest.approx(0.4 + 0.6 / 4)
    assert attribution(Op.WAIT, early, 1.0, 3.0, 53.0, 10)[0] == pytest.approx(0.55)


def test_ratio_penalty_by_hand():
    # c / cf = 8 > 5: -min(0.3, 0.1 * (8 - 5) / 5)
    assert attribution(Op.WAIT, BLENDING, 4.0, 0.5, 60.0, 20)[1] == pytest.approx(-0.06)
    # cf <= 0.1 with c > 1: -0.3 * min(1, c / 10)
    assert attribution(Op.WAIT, BLENDING, 2.0, 0.05, 60.0, 20)[1] == pytest.approx(-0.06)


def test_rent_by_hand():
    assert rent(0.0, 6000) == 0.0
    conv_light = 0.0039 * 6000 + 37_000
    assert rent(conv_light, 6000) == pytest.approx(-0.5 * math.log(1 + conv_light / 6000))
    assert rent(1e9, 6000) == -1.5
    assert rent(100.0, 50) == pytest.approx(-0.5 * math.log(1.5))  # host floored at 200


def test_fossilize_shaping_by_hand():
    holding = make_seed(SeedStage.HOLDING, in_stage=1)  # legitimacy 1/2
    immediate = 3 * math.tanh(1 / 3)
    assert fossilize_shaping(holding, 3.0, 2.0) == pytest.approx(
        -0.01 + (0.5 + 0.1 * 3 + immediate) * 0.5
    )
    assert fossilize_shaping(holding, 0.5, 2.0) == pytest.approx(-0.01 - 0.2)
    # Harmful (cf < 0) with a ransomware signature (c > 0.1, cf < -0.2).
    assert fossilize_shaping(holding, 0.5, -1.0) == pytest.approx(-0.01 - 0.5 - 0.2 - 0.3)


def test_prune_shaping_by_hand():
    training = make_seed(SeedStage.TRAINING, in_stage=3)  # Phi = 2 + 0.9
    assert prune_shaping(training, None) == pytest.approx(-0.3 * 2.9 - 0.005)
    base = -0.3 * (3.5 + 0.9) - 0.005  # BLENDING, 3 epochs in stage
    assert prune_shaping(BLENDING, -1.0) == pytest.approx(base + 0.15)
    assert prune_shaping(BLENDING, -0.2) == pytest.approx(base + 0.1)
    assert prune_shaping(BLENDING, 2.0) == pytest.approx(base - 0.3 - 0.1)
    assert prune_shaping(BLENDING, 20.0) == pytest.approx(base - 0.9)


def test_warnings_terminal_bonus_and_capacity_terms():
    holding = make_seed(SeedStage.HOLDING, in_stage=4)
    holding.phi_prev = holding.phi_last = 5.5 + 1.2
    terms = shaped_reward(Op.WAIT, holding, 2.0, 2.0, 52.0, 40, 40, 0.0, 0.0, 6000, 3, 1, 0.0)
    assert terms["holding_warning"] == pytest.approx(-(0.1 + 2 * 0.05))
    assert terms["terminal_bonus"] == pytest.approx(0.05 * 52.0)
    assert terms["occupancy_rent"] == pytest.approx(-0.01 * 2)
    assert terms["fossilized_rent"] == pytest.approx(-0.002)
    assert terms["pbrs"] == pytest.approx(0.3 * (0.995 * 6.7 - 6.7))
    assert list(terms) == list(SHAPED_COMPONENTS)
    blending = make_seed(SeedStage.BLENDING, in_stage=3)
    warned = shaped_reward(Op.WAIT, blending, 0.5, -0.2, 52.0, 20, 40, 0.0, 0.0, 6000, 1, 0, 0.0)
    assert warned["blending_warning"] == pytest.approx(-0.1 - 0.15)
    assert warned["alpha_shock"] == 0.0
    shocked = shaped_reward(Op.WAIT, None, None, 0.0, 52.0, 20, 40, 0.0, 10.0, 6000, 0, 0, 0.0)
    assert shocked["alpha_shock"] == -1.0  # capped


def test_germination_bonus_and_clawback():
    terms = shaped_reward(Op.GERMINATE, None, None, 0.0, 50.0, 2, 40, 0.0, 0.0, 6000, 0, 0, 0.0)
    assert terms["action_shaping"] == pytest.approx(0.3 * 0.995 * timing_discount(2) - 0.15)
    seeds = [make_seed(SeedStage.TRAINING, age=3), make_seed(SeedStage.BLENDING), None]
    assert germination_clawback(seeds) == pytest.approx(-0.3 * 0.995 / 0.995**3)


def test_sparse_reward_by_hand():
    assert sparse_reward(60.0, 37_000, 39, 40) == {"accuracy": 0.0, "param_cost": 0.0}
    terms = sparse_reward(60.0, 37_000, 40, 40)
    assert list(terms) == list(SPARSE_COMPONENTS)
    assert terms["accuracy"] + terms["param_cost"] == pytest.approx(0.6 - 0.1 * 37_000 / 500_000)


@pytest.mark.parametrize("reward", ["shaped", "escrow", "sparse"])
def test_components_sum_to_reward(reward):
    for policy, env in (
        (RandomPolicy(), SeedLifecycleEnv(reward=reward)),
        (HeuristicPolicy(), SeedLifecycleEnv(reward=reward, difficulty="hard")),
    ):
        for seed in range(15):
            obs, info = env.reset(seed=seed)
            policy.reset(env, seed)
            terminated = False
            while not terminated:
                obs, reward_, terminated, _, info = env.step(policy.act(obs, info))
                assert isinstance(reward_, float)
                assert abs(sum(info["reward_components"].values()) - reward_) <= 1e-9


def run(env: SeedLifecycleEnv, actions):
    """Step through (epoch -> action); WAIT elsewhere; return {epoch: (reward, info)}."""
    out = {}
    terminated = False
    while not terminated:
        epoch = env.epoch
        _, reward, terminated, _, info = env.step(actions.get(epoch, make_action(Op.WAIT)))
        out[epoch] = (reward, info)
    return out


def test_pbrs_pays_stage_jumps_and_alpha_shock_in_the_env():
    env = SeedLifecycleEnv(difficulty="easy")
    env.reset(seed=3)
    light = BLUEPRINT_INDEX["conv_light"]
    steps = run(
        env, {5: make_action(Op.GERMINATE, 0, light, tempo=0), 6: make_action(Op.ADVANCE, 0)}
    )
    pbrs = {epoch: info["reward_components"]["pbrs"] for epoch, (_, info) in steps.items()}
    assert pbrs[5] == 0.0  # empty slot 0 when the action is scored
    assert pbrs[6] == pytest.approx(0.3 * (0.995 * 1.3 - 1.0))  # GERMINATED, 1 epoch
    assert pbrs[7] == pytest.approx(0.3 * (0.995 * 2.3 - 1.3))  # jump to TRAINING
    assert pbrs[8] == pytest.approx(0.3 * (0.995 * 2.6 - 2.3))
    # WAIT never passes G2, so the seed stays in TRAINING: no rent, no shock yet.
    assert steps[20][1]["reward_components"]["rent"] == 0.0
    assert all(info["reward_components"]["alpha_shock"] == 0.0 for _, info in steps.values())


def test_fast_blend_of_a_big_seed_costs_the_capped_alpha_shock():
    env = SeedLifecycleEnv(difficulty="easy")
    env.reset(seed=3)
    env.step(make_action(Op.GERMINATE, 1, BLUEPRINT_INDEX["conv_light"], tempo=0))
    env.step(make_action(Op.ADVANCE, 1))
    seed = env.seeds[1]
    while seed.stage == SeedStage.TRAINING:
        env.step(make_action(Op.ADVANCE, 1))
    # The blend-in ramp ran in that step's clock tick: alpha 0 -> 1 in one epoch.
    assert seed.alpha == 1.0
    _, reward, _, _, info = env.step(make_action(Op.WAIT))
    terms = info["reward_components"]
    assert terms["alpha_shock"] == -1.0  # 0.1958 * 1 * 37,000 / 6,000 > 1
    assert terms["rent"] == pytest.approx(rent(0.0039 * 6000 + 37_000, 6000))
    # WAIT scores slot 0, which is empty: the slot-1 seed earns no attribution or PBRS.
    assert terms["attribution"] == terms["pbrs"] == 0.0
    assert np.isclose(reward, sum(terms.values()))


@pytest.mark.parametrize(
    ("op", "contribution", "stable_acc", "cf", "credit", "expected"),
    [
        (Op.WAIT, 4.0, 51.0, 4.0, 0.0, EscrowStep(2.0, 2.0)),  # sqrt(1 * 4) = 2
        (Op.WAIT, 9.0, 51.0, 9.0, 1.0, EscrowStep(2.0, 3.0)),  # target 3, delta 2
        (Op.WAIT, 1.0, 53.0, 3.0, 0.5, EscrowStep(0.5, 1.0)),  # c < p: target c
        (Op.WAIT, 6.0, 60.0, 6.0, 0.0, EscrowStep(2.0, 2.0)),  # change clipped to +2
        (Op.WAIT, 1.0, 53.0, 3.0, 4.0, EscrowStep(-2.0, 2.0)),  # and to -2
        (Op.WAIT, 2.0, 49.0, 3.0, 1.5, EscrowStep(-1.5, 0.0)),  # p <= 0: target 0
        (Op.WAIT, -1.0, 53.0, 3.0, 1.5, EscrowStep(-2.5, 0.0)),  # harm paid, credit lost
        (Op.PRUNE, 1.0, 53.0, 3.0, 1.5, EscrowStep(-1.5, 0.0)),  # prune claws back
        (Op.FOSSILIZE, 1.0, 53.0, -0.5, 0.5, EscrowStep(0.0, 1.0)),  # cf < 0: pays nothing
        (Op.WAIT, None, 53.0, 3.0, 1.5, EscrowStep(0.0, 1.5)),  # no counterfactual yet
    ],
)
def test_escrow_attribution_by_hand(op, contribution, stable_acc, cf, credit, expected):
    step = escrow_attribution(op, BLENDING, contribution, cf, stable_acc, credit)
    assert step.paid == pytest.approx(expected.paid)
    assert step.credit == pytest.approx(expected.credit)


def test_escrow_keeps_the_ratio_penalty_inside_the_credit():
    # c = 8 against cf = 1: ratio 8 > 5 costs min(0.3, 0.1 * 3 / 5) = 0.06.
    step = escrow_attribution(Op.WAIT, BLENDING, 8.0, 1.0, 58.0, 7.0)
    assert step.credit == pytest.approx(8.0 - 0.06)


def blended_seed_steps(reward: str, retarget: bool) -> dict[int, tuple[float, dict]]:
    """A conv_small seed in slot 0, advanced into BLENDING and kept there to the end,
    WAITing (which scores slot 0) or re-targeting its alpha to 1.0 every epoch."""
    env = SeedLifecycleEnv(difficulty="easy", reward=reward)
    env.reset(seed=1)  # a helpful seed: c about 4.6 pp once blended
    steps = {}
    terminated = False
    while not terminated:
        seed = env.seeds[0]
        if env.epoch == 4:
            action = make_action(Op.GERMINATE, 0, BLUEPRINT_INDEX["conv_small"], tempo=0)
        elif seed is not None and seed.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
            action = make_action(Op.ADVANCE, 0)
        elif seed is not None and retarget and seed.alpha == 1.0:
            action = make_action(Op.SET_ALPHA_TARGET, 0)  # alpha target head: 1.0
        else:
            action = make_action(Op.WAIT)
        epoch = env.epoch
        _, reward_, terminated, _, info = env.step(action)
        assert not info["illegal_action"]
        steps[epoch] = (reward_, info)
    assert env.seeds[0].stage == SeedStage.BLENDING
    return steps


def test_turntabling_a_blended_seed_pays_every_epoch_under_shaped_but_not_under_escrow():
    shaped = blended_seed_steps("shaped", retarget=True)
    escrow = blended_seed_steps("escrow", retarget=True)
    late = range(25, 40)
    assert all(shaped[e][1]["reward_components"]["attribution"] > 0.5 for e in late)
    assert sum(abs(escrow[e][1]["reward_components"]["attribution"]) for e in late) < 0.5
    assert list(escrow[40][1]["reward_components"]) == list(ESCROW_COMPONENTS)


def test_escrow_forfeits_the_credit_of_a_seed_still_live_at_the_end():
    steps = blended_seed_steps("escrow", retarget=False)
    paid = sum(info["reward_components"]["attribution"] for _, info in steps.values())
    forfeit = steps[40][1]["reward_components"]["escrow_forfeit"]
    assert paid > 1.0  # the seed helped and built up credit...
    assert forfeit == pytest.approx(-paid)  # ...which the run takes back: it never settled


def test_paired_reward_by_hand():
    assert paired_reward(60.0, 58.0, 37_000, 39, 40) == {
        "accuracy": 0.0,
        "param_cost": 0.0,
        "twin_accuracy": 0.0,
    }
    terms = paired_reward(60.0, 58.0, 37_000, 40, 40)
    assert list(terms) == list(PAIRED_COMPONENTS)
    assert sum(terms.values()) == pytest.approx(0.02 - 0.1 * 37_000 / 500_000)
