"""The seed state machine and the action masks of esper/SeedLifecycle-v0.

Random rollouts only make transitions Esper's state machine allows; masks follow Esper's
rules; a masked-out action changes nothing but the illegal flag.
"""

import copy
import itertools

import numpy as np
import pytest

from esper.simic.envs.seed_lifecycle import (
    HEAD_RELEVANCE,
    NUM_BLUEPRINTS,
    VALID_TRANSITIONS,
    Op,
    SeedLifecycleEnv,
    SeedStage,
    mask_size,
    split_action_mask,
)
from esper.simic.envs.seed_lifecycle.constants import (
    EMBARGO_EPOCHS,
    MIN_PRUNE_AGE,
    MIN_TRAINING_EPOCHS,
    AlphaMode,
)
from esper.simic.envs.seed_lifecycle.lifecycle import (
    AlphaController,
    Seed,
    advance,
    prune,
    set_alpha_target,
    tick,
)
from esper.simic.envs.seed_lifecycle.masks import compute_action_mask
from esper.simic.envs.seed_lifecycle.policies import RandomPolicy, make_action

K = 3


class LivelyRandomPolicy(RandomPolicy):
    """Random legal actions biased to non-WAIT ops and against PRUNE.

    Uniform random play prunes most seeds before they blend; this one walks many seeds
    through the whole lifecycle.
    """

    WEIGHTS = np.array([0.5, 1.0, 1.0, 0.05, 1.0, 1.0])

    def act(self, obs, info):
        action = super().act(obs, info)
        mask = split_action_mask(info["action_mask"], K, NUM_BLUEPRINTS)
        weights = self.WEIGHTS * mask.op
        op = int(self._rng.choice(6, p=weights / weights.sum()))
        action[0] = op
        action[1] = int(self._rng.choice(np.flatnonzero(mask.slot_by_op[op])))
        return action


def random_rollout(env: SeedLifecycleEnv, seed: int, policy: RandomPolicy | None = None):
    """Yield (info before the step, action, info after) along a random-legal episode."""
    policy = policy or RandomPolicy()
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    terminated = False
    while not terminated:
        action = policy.act(obs, info)
        before = info
        obs, _, terminated, _, info = env.step(action)
        yield before, action, info


def test_random_rollouts_only_make_allowed_transitions():
    env = SeedLifecycleEnv(difficulty="hard")
    seen = set()
    for seed, policy in itertools.product(range(40), (RandomPolicy(), LivelyRandomPolicy())):
        for _, _, info in random_rollout(env, seed, policy):
            assert not info["illegal_action"]
            for _, before, after in info["transitions"]:
                assert after in VALID_TRANSITIONS[before], (before, after)
                seen.add((before, after))
    # The rollouts exercise the whole lifecycle, failure path included.
    for edge in [
        (SeedStage.DORMANT, SeedStage.GERMINATED),
        (SeedStage.GERMINATED, SeedStage.TRAINING),
        (SeedStage.TRAINING, SeedStage.BLENDING),
        (SeedStage.BLENDING, SeedStage.HOLDING),
        (SeedStage.HOLDING, SeedStage.FOSSILIZED),
        (SeedStage.HOLDING, SeedStage.BLENDING),
        (SeedStage.TRAINING, SeedStage.PRUNED),
        (SeedStage.PRUNED, SeedStage.EMBARGOED),
        (SeedStage.EMBARGOED, SeedStage.RESETTING),
        (SeedStage.RESETTING, SeedStage.DORMANT),
    ]:
        assert edge in seen, edge


def test_wait_always_legal_and_empty_slot_row_iff_op_illegal():
    env = SeedLifecycleEnv()
    for seed in range(20):
        for before, _, after in random_rollout(env, seed):
            for flat in (before["action_mask"], after["action_mask"]):
                assert flat.dtype == bool and flat.shape == (mask_size(K, NUM_BLUEPRINTS),)
                mask = split_action_mask(flat, K, NUM_BLUEPRINTS)
                assert mask.op[Op.WAIT]
                assert mask.slot_by_op[Op.WAIT].tolist() == [True, False, False]
                np.testing.assert_array_equal(mask.slot_by_op.any(axis=1), mask.op)


def seed_in(stage: SeedStage, *, age: int = 10, mode: AlphaMode = AlphaMode.HOLD) -> Seed:
    seed = Seed(blueprint=0, tempo=1, blend_target=1.0, acc_at_germination=40.0, stage=stage)
    seed.epochs_total = age
    seed.controller.mode = mode
    return seed


def rows(seeds) -> dict[Op, list[bool]]:
    mask = split_action_mask(np.array(compute_action_mask(seeds, NUM_BLUEPRINTS)), K, 5)
    return {op: mask.slot_by_op[op].tolist() for op in Op}


def test_masks_follow_esper_rules():
    # Empty slots can germinate; nothing else is possible.
    assert rows([None, None, None])[Op.GERMINATE] == [True, True, True]
    # A BLENDING seed does not block germination elsewhere (scaffolding)...
    r = rows([seed_in(SeedStage.BLENDING), None, None])
    assert r[Op.GERMINATE] == [False, True, True]
    assert r[Op.ADVANCE] == [True, False, False]
    assert r[Op.PRUNE] == [True, False, False]
    assert r[Op.SET_ALPHA_TARGET] == [True, False, False]
    assert r[Op.FOSSILIZE] == [False, False, False]
    # ...but a TRAINING seed or a cooling-down slot does (one seed develops at a time).
    for stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.EMBARGOED):
        assert not any(rows([seed_in(stage), None, None])[Op.GERMINATE]), stage
    # PRUNE needs age >= MIN_PRUNE_AGE and a holding alpha; FOSSILIZE needs HOLDING.
    young = rows([seed_in(SeedStage.TRAINING, age=MIN_PRUNE_AGE - 1), None, None])
    assert young[Op.PRUNE] == [False, False, False]
    ramping = rows([seed_in(SeedStage.BLENDING, mode=AlphaMode.UP), None, None])
    assert ramping[Op.PRUNE] == ramping[Op.SET_ALPHA_TARGET] == [False, False, False]
    assert ramping[Op.ADVANCE] == [True, False, False]
    holding = rows([None, seed_in(SeedStage.HOLDING), seed_in(SeedStage.FOSSILIZED)])
    assert holding[Op.FOSSILIZE] == [False, True, False]
    assert holding[Op.ADVANCE] == [False, False, False]
    assert holding[Op.PRUNE] == [False, True, False]  # fossils are permanent


def test_alpha_target_head_pinned_to_full_when_unused():
    flat = compute_action_mask([seed_in(SeedStage.TRAINING), None, None], NUM_BLUEPRINTS)
    assert split_action_mask(np.array(flat), K, NUM_BLUEPRINTS).alpha_target.tolist() == [
        False,
        False,
        True,
    ]


def test_head_relevance_is_esper_causal_table_without_dropped_heads():
    expected = {
        Op.WAIT: [1, 0, 0, 0, 0],
        Op.GERMINATE: [1, 1, 1, 1, 1],
        Op.SET_ALPHA_TARGET: [1, 1, 0, 0, 1],
        Op.PRUNE: [1, 1, 0, 0, 0],
        Op.FOSSILIZE: [1, 1, 0, 0, 0],
        Op.ADVANCE: [1, 1, 0, 0, 0],
    }
    for op, row in expected.items():
        assert HEAD_RELEVANCE[op].tolist() == [bool(v) for v in row]
    assert not HEAD_RELEVANCE.flags.writeable


def test_split_action_mask_handles_batches_and_checks_length():
    flat = np.arange(mask_size(K, NUM_BLUEPRINTS)) % 2 == 0
    batch = np.stack([flat, ~flat])
    mask = split_action_mask(batch, K, NUM_BLUEPRINTS)
    assert mask.op.shape == (2, 6)
    assert mask.slot_by_op.shape == (2, 6, K)
    assert mask.slot_by_op[0, 1, 2] == flat[6 + 1 * K + 2]
    assert mask.blueprint.shape == (2, NUM_BLUEPRINTS)
    assert mask.alpha_target[1].tolist() == (~flat[-3:]).tolist()
    with pytest.raises(ValueError, match="expected 35"):
        split_action_mask(flat[:-1], K, NUM_BLUEPRINTS)


def env_states(num: int):
    """Envs paused at varied points of random-legal episodes."""
    env = SeedLifecycleEnv()
    states = []
    for seed in range(num):
        rollout = random_rollout(env, seed)
        for _ in range(8 + 5 * seed):
            _, _, info = next(rollout)
        states.append((copy.deepcopy(env), info))
    return states


def test_masked_out_actions_run_exactly_as_wait():
    all_actions = list(itertools.product(range(6), range(K), range(5), range(3), range(3)))
    checked = 0
    for env, info in env_states(6):
        mask = split_action_mask(info["action_mask"], K, NUM_BLUEPRINTS)
        wait_env = copy.deepcopy(env)
        wait = wait_env.step(make_action(Op.WAIT))
        for action in all_actions:
            op, slot = action[0], action[1]
            uses_slot = HEAD_RELEVANCE[op][1]
            if mask.op[op] and (not uses_slot or mask.slot_by_op[op, slot]):
                continue
            trial = copy.deepcopy(env)
            obs, reward, terminated, truncated, step_info = trial.step(np.array(action))
            assert step_info["illegal_action"]
            assert not wait[4]["illegal_action"]
            np.testing.assert_array_equal(obs, wait[0])
            assert (reward, terminated, truncated) == wait[1:4]
            for key in wait[4].keys() - {"illegal_action", "action_mask"}:
                assert step_info[key] == wait[4][key], key
            np.testing.assert_array_equal(step_info["action_mask"], wait[4]["action_mask"])
            checked += 1
    assert checked > 1000


def test_out_of_range_heads_are_illegal_not_errors():
    env = SeedLifecycleEnv()
    env.reset(seed=0)
    for action in ([9, 0, 0, 0, 0], [1, 7, 0, 0, 0], [1, 0, 99, 0, 0], [-1, 0, 0, 0, 0]):
        assert env.step(np.array(action))[4]["illegal_action"]
    with pytest.raises(ValueError, match="5 heads"):
        env.step(np.array([0, 0]))


def test_gates_and_alpha_ramp_by_hand():
    log = []
    seed = seed_in(SeedStage.GERMINATED, age=1)
    assert advance(seed, 0, log) and seed.stage == SeedStage.TRAINING  # G1 always passes
    seed.epochs_in_stage = MIN_TRAINING_EPOCHS - 1
    seed.gradient_health = 0.9
    assert not advance(seed, 0, log)  # G2: too few epochs
    seed.epochs_in_stage = MIN_TRAINING_EPOCHS
    seed.gradient_health = 0.69
    assert not advance(seed, 0, log)  # G2: unhealthy gradients
    seed.gradient_health = 0.7
    assert advance(seed, 0, log) and seed.stage == SeedStage.BLENDING
    # STANDARD tempo: a 2-epoch sigmoid ramp to 1, 0.5 after the first tick.
    assert seed.controller.mode == AlphaMode.UP
    assert not advance(seed, 0, log)  # G3: alpha not at target yet
    tick(seed, 0, log)
    assert seed.alpha == pytest.approx(0.5)
    tick(seed, 0, log)
    assert seed.alpha == 1.0 and seed.controller.mode == AlphaMode.HOLD
    assert advance(seed, 0, log) and seed.stage == SeedStage.HOLDING
    # A partial target from HOLDING goes back to BLENDING and ramps down.
    set_alpha_target(seed, 0, 0, log)
    assert seed.stage == SeedStage.BLENDING and seed.controller.mode == AlphaMode.DOWN
    assert [(a, b) for _, a, b in log] == [
        (SeedStage.GERMINATED, SeedStage.TRAINING),
        (SeedStage.TRAINING, SeedStage.BLENDING),
        (SeedStage.BLENDING, SeedStage.HOLDING),
        (SeedStage.HOLDING, SeedStage.BLENDING),
    ]


def test_blend_to_partial_target_fails_g3():
    log = []
    seed = seed_in(SeedStage.TRAINING)
    seed.blend_target = 0.7
    seed.epochs_in_stage, seed.gradient_health = MIN_TRAINING_EPOCHS, 1.0
    advance(seed, 0, log)
    tick(seed, 0, log)
    tick(seed, 0, log)
    assert seed.alpha == pytest.approx(0.7) and seed.controller.mode == AlphaMode.HOLD
    assert not advance(seed, 0, log)  # HOLDING needs a full-amplitude target


def test_sigmoid_ramp_matches_esper_curve():
    controller = AlphaController()
    controller.retarget(1.0, 3)
    values = []
    for _ in range(3):
        controller.step()
        values.append(controller.alpha)
    # Esper's normalised logistic, steepness 12: t = 1/3 -> 0.11731, t = 2/3 -> 0.88269.
    assert values == pytest.approx([0.11731, 0.88269, 1.0], abs=1e-5)


def test_cooldown_lasts_pruned_embargo_resetting():
    log = []
    seed = seed_in(SeedStage.HOLDING)
    seed.controller.alpha = 1.0
    prune(seed, 0, log)
    assert seed.alpha == 0.0 and seed.contribution is None
    slot_seed = tick(seed, 0, log)  # PRUNED -> EMBARGOED within the same epoch
    assert slot_seed is seed and seed.stage == SeedStage.EMBARGOED
    for _ in range(EMBARGO_EPOCHS - 1):
        assert tick(seed, 0, log).stage == SeedStage.EMBARGOED
    assert tick(seed, 0, log).stage == SeedStage.RESETTING
    assert tick(seed, 0, log) is None  # empty again
