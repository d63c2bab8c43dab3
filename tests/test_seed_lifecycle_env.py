"""esper/SeedLifecycle-v0 as a gymnasium env: API, spaces, info, determinism, both hosts."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from esper.simic.config import ConfigError
from esper.simic.envs.registration import register_esper_envs
from esper.simic.envs.seed_lifecycle import (
    NUM_BLUEPRINTS,
    Op,
    SeedLifecycleEnv,
    SeedStage,
    mask_size,
    split_action_mask,
)
from esper.simic.envs.seed_lifecycle.constants import BLUEPRINT_INDEX
from esper.simic.envs.seed_lifecycle.observation import (
    ACCURACY_HISTORY,
    BASE_SIZE,
    LAST_OP,
    LAST_SUCCESS,
    SLOT_COUNTERFACTUAL_KNOWN,
    SLOT_HEALTH,
    SLOT_OCCUPIED,
    SLOT_STAGE,
    slot_size,
)
from esper.simic.envs.seed_lifecycle.policies import HeuristicPolicy, RandomPolicy, make_action
from esper.simic.testing import compose_settings

ENV_ID = "esper/SeedLifecycle-v0"


@pytest.fixture(autouse=True)
def _registered() -> None:
    register_esper_envs()


def test_gymnasium_env_checker_passes():
    check_env(SeedLifecycleEnv(), skip_render_check=True)
    check_env(gym.make(ENV_ID, difficulty="hard", num_slots=2).unwrapped, skip_render_check=True)


def test_spaces_and_kwargs_through_gym_make():
    env = gym.make(ENV_ID, difficulty="easy", num_slots=4, max_epochs=12, reward="sparse")
    assert env.action_space == gym.spaces.MultiDiscrete([6, 4, NUM_BLUEPRINTS, 3, 3])
    assert env.observation_space.shape == (23 + 4 * (20 + NUM_BLUEPRINTS),)
    assert env.observation_space.dtype == np.float32
    _, info = env.reset(seed=0)
    assert info["action_mask"].shape == (mask_size(4, NUM_BLUEPRINTS),)
    steps = 0
    terminated = truncated = False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = env.step(make_action(Op.WAIT))
        steps += 1
    assert (steps, terminated, truncated) == (12, True, False)
    assert set(info["reward_components"]) == {"accuracy", "param_cost"}
    assert reward == pytest.approx(info["final_accuracy"] / 100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"difficulty": "nightmare"}, r"difficulty must be one of \['easy', 'medium', 'hard'\]"),
        ({"num_slots": 0}, "num_slots must be a positive int"),
        ({"max_epochs": 2.5}, "max_epochs must be a positive int"),
        (
            {"reward": "dense"},
            r"reward must be one of \['shaped', 'escrow', 'sparse', 'paired'\]",
        ),
        ({"host": "resnet"}, r"host must be one of \['surrogate', 'mlp'\]"),
        ({"mlp_task": "cifar"}, r"mlp_task must be one of \['baseline', 'impaired'\]"),
        ({"mlp_task": "impaired"}, r"mlp_task='impaired' is the real host's task: set host='mlp'"),
        (
            {"reward": "paired"},
            r"reward='paired' pays against a twin host trained without seeds, which only the "
            r"real host trains: set host='mlp'",
        ),
    ],
)
def test_bad_kwargs_name_the_argument_and_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SeedLifecycleEnv(**kwargs)


def rollout(env, policy, seed):
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed)
    trajectory = [(obs, info)]
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        trajectory.append((obs, reward, terminated, truncated, info))
    return trajectory


def test_same_seed_and_actions_give_identical_trajectories():
    for seed in (0, 7):
        first = rollout(SeedLifecycleEnv(difficulty="hard"), RandomPolicy(), seed)
        actions = []
        replay_env = SeedLifecycleEnv(difficulty="hard")
        policy = RandomPolicy()
        obs, info = replay_env.reset(seed=seed)
        policy.reset(replay_env, seed)
        for step in first[1:]:
            actions.append(policy.act(obs, info))
            obs, *_, info = replay_env.step(actions[-1])
            np.testing.assert_array_equal(obs, step[0])
        second = SeedLifecycleEnv(difficulty="hard")
        second.reset(seed=seed)
        for action, step in zip(actions, first[1:], strict=True):
            again = second.step(action)
            np.testing.assert_array_equal(again[0], step[0])
            assert again[1:4] == step[1:4]
            assert again[4]["reward_components"] == step[4]["reward_components"]
            assert again[4]["transitions"] == step[4]["transitions"]
            np.testing.assert_array_equal(again[4]["action_mask"], step[4]["action_mask"])
    other = rollout(SeedLifecycleEnv(difficulty="hard"), RandomPolicy(), 1)
    assert not np.array_equal(other[5][0], first[5][0])


def test_observations_stay_in_bounds_and_mark_unknowns():
    env = SeedLifecycleEnv(difficulty="hard")
    obs, _ = env.reset(seed=0)
    assert np.all(obs[ACCURACY_HISTORY : ACCURACY_HISTORY + 5] == -1.0)  # no history yet
    assert obs[LAST_SUCCESS] == 1.0 and obs[LAST_OP + Op.WAIT] == 1.0
    assert np.all(obs[BASE_SIZE:] == 0.0)  # empty slots are zeros
    obs, *_ = env.step(make_action(Op.GERMINATE, 1, BLUEPRINT_INDEX["norm"]))
    slot1 = obs[BASE_SIZE + slot_size(NUM_BLUEPRINTS) :][: slot_size(NUM_BLUEPRINTS)]
    assert slot1[SLOT_OCCUPIED] == 1.0 and slot1[SLOT_STAGE] == 1.0  # GERMINATED
    assert slot1[SLOT_HEALTH] == -1.0  # gradients not measured yet
    assert slot1[SLOT_COUNTERFACTUAL_KNOWN] == -1.0
    assert obs[LAST_OP + Op.GERMINATE] == 1.0
    for policy in (RandomPolicy(), HeuristicPolicy()):
        for seed in range(10):
            for step in rollout(env, policy, seed):
                assert env.observation_space.contains(step[0])


def test_info_keys_on_every_step_and_at_the_end():
    env = SeedLifecycleEnv()
    trajectory = rollout(env, HeuristicPolicy(), 4)
    assert set(trajectory[0][1]) == {"action_mask"}
    per_step = {
        "action_mask",
        "illegal_action",
        "action_success",
        "reward_components",
        "transitions",
        "epoch",
        "accuracy",
    }
    for *_, info in trajectory[1:]:
        assert per_step <= set(info)
        assert info["action_mask"].dtype == bool
    final = trajectory[-1][4]
    assert final["epoch"] == 40
    assert final["final_accuracy"] == final["accuracy"]
    assert final["fossilized_params"] >= 0 and final["germinated_seeds"] >= 0
    assert "final_accuracy" not in trajectory[-2][4]


def test_vector_env_stacks_the_mask():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID) for _ in range(3)])
    _, infos = envs.reset(seed=0)
    assert infos["action_mask"].shape == (3, mask_size(3, NUM_BLUEPRINTS))
    mask = split_action_mask(infos["action_mask"], 3, NUM_BLUEPRINTS)
    assert mask.op[:, Op.WAIT].all()
    _, _, _, _, infos = envs.step(np.zeros((3, 5), dtype=np.int64))
    assert infos["action_mask"].shape == (3, mask_size(3, NUM_BLUEPRINTS))
    envs.close()


def test_surrogate_seed_quality_ramps_and_enters_in_proportion_to_alpha():
    env = SeedLifecycleEnv(difficulty="easy")
    env.reset(seed=11)
    env.step(make_action(Op.GERMINATE, 0, BLUEPRINT_INDEX["conv_small"], tempo=2))
    env.step(make_action(Op.ADVANCE, 0))
    seed = env.seeds[0]
    while seed.stage == SeedStage.TRAINING:
        assert seed.contribution is None  # TRAINING does not touch the host's output
        env.step(make_action(Op.ADVANCE, 0))
    host = env.host
    for _ in range(3):  # SLOW tempo: 3 ticks of the ramp
        env.step(make_action(Op.WAIT))
        expected = seed.alpha * host.quality(0) * host.gain[0]
        assert seed.contribution == pytest.approx(expected)
        assert env.val_accuracy - env.all_off_accuracy == pytest.approx(expected)


@pytest.mark.usefixtures("one_thread")
def test_mlp_host_is_seeded_and_runs_a_lifecycle():
    env = SeedLifecycleEnv(host="mlp", max_epochs=10)
    assert 6000 < env.host.host_params < 7000
    first, _ = env.reset(seed=1)
    again, _ = env.reset(seed=1)
    np.testing.assert_array_equal(first, again)
    env.reset(seed=0)
    env.step(make_action(Op.GERMINATE, 0, BLUEPRINT_INDEX["conv_small"], tempo=0))
    env.step(make_action(Op.ADVANCE, 0))
    assert env.host.seed_params(0) == 4219
    seed = env.seeds[0]
    accuracy_before = env.val_accuracy
    assert env.all_off_accuracy == accuracy_before  # TRAINING leaves the output unchanged
    while seed.stage == SeedStage.TRAINING:
        *_, info = env.step(make_action(Op.ADVANCE, 0))
    assert seed.gradient_health is not None
    env.step(make_action(Op.WAIT))
    # With one seed, "this slot off" and "all seeds off" are the same network.
    assert seed.alpha == 1.0
    assert seed.contribution == pytest.approx(env.val_accuracy - env.all_off_accuracy)
    terminated = False
    while not terminated:
        *_, terminated, _, info = env.step(make_action(Op.WAIT))
    assert 0.0 < info["final_accuracy"] < 100.0


@pytest.mark.parametrize("host", ["surrogate", "mlp"])
@pytest.mark.usefixtures("one_thread")
def test_committed_accuracy_counts_fossilized_seeds_only(host):
    """A blended seed is in the accuracy but not in the committed accuracy, which SPARSE
    pays; fossilizing commits it."""
    env = SeedLifecycleEnv(host=host, reward="sparse", max_epochs=16, difficulty="easy")
    env.reset(seed=1)
    env.step(make_action(Op.GERMINATE, 0, BLUEPRINT_INDEX["conv_small"], tempo=0))
    seed = env.seeds[0]
    while seed.stage != SeedStage.HOLDING:
        env.step(make_action(Op.ADVANCE, 0))
    assert env.val_accuracy != env.all_off_accuracy  # the seed is in the output...
    assert env.committed_accuracy == env.all_off_accuracy  # ...but not committed
    env.step(make_action(Op.WAIT))
    env.step(make_action(Op.FOSSILIZE, 0))
    assert seed.stage == SeedStage.FOSSILIZED
    terminated = False
    while not terminated:
        *_, terminated, _, info = env.step(make_action(Op.WAIT))
    assert info["final_committed_accuracy"] == info["final_accuracy"]
    assert info["reward_components"]["accuracy"] == pytest.approx(info["final_accuracy"] / 100)


def test_sparse_pays_nothing_for_a_seed_left_blended():
    env = SeedLifecycleEnv(reward="sparse", difficulty="easy")
    env.reset(seed=1)
    env.step(make_action(Op.GERMINATE, 0, BLUEPRINT_INDEX["conv_small"], tempo=0))
    terminated = False
    while not terminated:
        *_, terminated, _, info = env.step(make_action(Op.ADVANCE, 0))
    assert env.seeds[0].stage == SeedStage.HOLDING
    assert info["final_accuracy"] > info["final_committed_accuracy"] + 1.0
    assert info["final_committed_accuracy"] == info["final_host_accuracy"]
    assert info["reward_components"] == {
        "accuracy": pytest.approx(info["final_host_accuracy"] / 100),
        "param_cost": 0.0,
    }


PAIRED_KWARGS = {"host": "mlp", "mlp_task": "impaired", "max_epochs": 14}


def play(env: SeedLifecycleEnv, seed: int, script: dict[int, list[int]]) -> tuple[float, dict]:
    """One episode: the action ``script`` gives each epoch, WAIT elsewhere; (return, last info)."""
    env.reset(seed=seed)
    total, terminated = 0.0, False
    while not terminated:
        _, reward, terminated, _, info = env.step(script.get(env.epoch, make_action(Op.WAIT)))
        total += reward
    return total, info


@pytest.mark.usefixtures("one_thread")
def test_paired_pays_wait_exactly_nothing_and_its_twin_is_the_wait_episodes_host():
    paired, sparse = (
        SeedLifecycleEnv(reward="paired", **PAIRED_KWARGS),
        SeedLifecycleEnv(reward="sparse", **PAIRED_KWARGS),
    )
    for seed in (0, 1, 2):
        paired_return, info = play(paired, seed, {})
        _, wait_info = play(sparse, seed, {})
        assert paired_return == 0.0
        twin = -100.0 * info["reward_components"]["twin_accuracy"]
        assert twin == pytest.approx(wait_info["final_committed_accuracy"], abs=1e-9)


@pytest.mark.usefixtures("one_thread")
def test_paired_is_sparse_minus_the_twin_whatever_the_seeds_do():
    """Germination draws the seed's weights from the host's generator, shifting its later
    batches; the twin's stay those of the WAIT episode on the same seed."""
    conv_small = BLUEPRINT_INDEX["conv_small"]
    script = {1: make_action(Op.GERMINATE, 0, conv_small, tempo=0)}
    script |= {epoch: make_action(Op.ADVANCE, 0) for epoch in range(2, 10)}
    script |= {epoch: make_action(Op.FOSSILIZE, 0) for epoch in range(10, 13)}
    paired, sparse = (
        SeedLifecycleEnv(reward="paired", **PAIRED_KWARGS),
        SeedLifecycleEnv(reward="sparse", **PAIRED_KWARGS),
    )
    for seed in (0, 3):
        paired_return, info = play(paired, seed, script)
        sparse_return, sparse_info = play(sparse, seed, script)
        _, wait_info = play(sparse, seed, {})
        assert info["fossilized_blueprints"] == ["conv_small"]
        assert sparse_info["final_committed_accuracy"] == info["final_committed_accuracy"]
        twin = wait_info["final_committed_accuracy"]
        assert paired_return == pytest.approx(sparse_return - twin / 100.0, abs=1e-9)
        assert paired_return != 0.0


def test_paired_on_the_surrogate_is_one_line_at_the_door():
    with pytest.raises(ConfigError) as error:
        compose_settings(["+experiment=seed_lifecycle_ppo", "env.kwargs.reward=paired"])
    assert str(error.value) == (
        "env.kwargs of esper/SeedLifecycle-v0: reward='paired' pays against a twin host "
        "trained without seeds, which only the real host trains: set host='mlp'"
    )
