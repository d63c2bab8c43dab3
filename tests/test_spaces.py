"""Observation and action spaces beyond flat Box and Discrete: layouts that follow
gymnasium's flattening, encoders (identity, CNN, mixed), normalisation of real values
only, Bernoulli heads for MultiBinary, squashed Box actions, and training runs on each."""

import numpy as np
import pytest
import space_envs
import torch
from gymnasium import spaces
from gymnasium.spaces.utils import flatdim, flatten

from esper.simic.agents.encoders import (
    NATURE_CNN_FEATURES,
    ObservationEncoder,
    ObservationPart,
    PartKind,
)
from esper.simic.agents.heads import ActionSampler, BernoulliHead, BinaryActions
from esper.simic.agents.networks import ActorCritic
from esper.simic.assembly import (
    UnsupportedSpaceError,
    action_spec,
    normalizable_entries,
    observation_layout,
)
from esper.simic.envs.factory import _squash, make_vector_env, structured_observation_space
from esper.simic.envs.normalization import make_normalizer
from esper.simic.settings import EnvConfig, NetworkConfig
from esper.simic.testing import observation_batch, run_training

IMAGE = spaces.Box(0, 255, (36, 40, 3), np.uint8)
MIXED = spaces.Dict(
    {
        "cell": spaces.Discrete(4, start=2),
        "flags": spaces.MultiBinary(3),
        "pose": spaces.Box(-1.0, 1.0, (2, 2), np.float32),
        "inner": spaces.Tuple((spaces.MultiDiscrete([2, 3]), spaces.Box(0.0, 5.0, (1,)))),
    }
)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Discrete(7),
        spaces.MultiDiscrete([3, 2, 4]),
        spaces.MultiBinary(5),
        spaces.Box(-1.0, 1.0, (3, 4), np.float32),
        IMAGE,
        MIXED,
        spaces.Tuple((spaces.Discrete(32), spaces.Discrete(11), spaces.Discrete(2))),
    ],
    ids=str,
)
def test_layout_cuts_gymnasium_flattening_into_its_parts(space):
    layout = observation_layout(space)
    assert sum(part.size for part in layout) == flatdim(space)
    space.seed(0)
    sample = space.sample()
    flat = flatten(space, sample)
    leaves = _leaves(space, sample)
    assert len(leaves) == len(layout)
    start = 0
    for part, (leaf_space, leaf_value) in zip(layout, leaves, strict=True):
        np.testing.assert_array_equal(
            flat[start : start + part.size], flatten(leaf_space, leaf_value)
        )
        start += part.size


def _leaves(space, value):
    if isinstance(space, spaces.Dict):
        return [leaf for key, sub in space.spaces.items() for leaf in _leaves(sub, value[key])]
    if isinstance(space, spaces.Tuple):
        return [
            leaf for sub, v in zip(space.spaces, value, strict=True) for leaf in _leaves(sub, v)
        ]
    return [(space, value)]


def test_only_real_values_are_normalisable():
    layout = observation_layout(MIXED)
    kinds = [part.kind for part in layout]
    # Dict keys in gymnasium's (sorted) order: cell, flags, inner(MultiDiscrete, Box), pose.
    assert kinds == [
        PartKind.one_hot,
        PartKind.binary,
        PartKind.one_hot,
        PartKind.box,
        PartKind.box,
    ]
    mask = normalizable_entries(layout)
    assert mask.tolist() == [False] * (4 + 3 + 5) + [True] * (1 + 4)


def test_unsupported_spaces_name_themselves_and_what_is_supported():
    with pytest.raises(UnsupportedSpaceError, match=r"Text\(.*is not supported: expected Box"):
        observation_layout(spaces.Text(5))
    with pytest.raises(UnsupportedSpaceError, match="too small for the Nature CNN"):
        observation_layout(spaces.Box(0, 255, (24, 24, 3), np.uint8))
    with pytest.raises(UnsupportedSpaceError, match="1-D MultiBinary"):
        action_spec(spaces.MultiBinary((2, 2)), {})


def test_flat_box_encoder_is_the_identity_and_adds_no_parameters():
    encoder = ObservationEncoder(observation_layout(spaces.Box(-1, 1, (4,))))
    obs = torch.randn(3, 4)
    assert encoder.is_identity
    assert encoder(obs) is obs
    with_layout = ActorCritic(encoder, BinaryActions(2), NetworkConfig())
    with_size = ActorCritic(4, BinaryActions(2), NetworkConfig())
    assert with_layout.state_dict().keys() == with_size.state_dict().keys()
    assert not any(key.startswith("encoder") for key in with_size.state_dict())


@pytest.mark.parametrize("space", [IMAGE, spaces.Box(0, 255, (4, 48, 36), np.uint8)], ids=str)
def test_image_encoder_shapes_and_gradients(space):
    layout = observation_layout(space)
    assert layout[0].kind is PartKind.image
    encoder = ObservationEncoder(layout)
    pixels = torch.randint(0, 256, (5, layout[0].size)).float()
    features = encoder(pixels)
    assert features.shape == (5, NATURE_CNN_FEATURES)
    features.square().sum().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_image_encoder_reads_channels_where_they_are():
    """HxWxC and CxHxW of the same picture give the same features with the same weights."""
    hwc = ObservationEncoder([ObservationPart(PartKind.image, 36 * 36 * 2, (36, 36, 2), True)])
    chw = ObservationEncoder([ObservationPart(PartKind.image, 36 * 36 * 2, (2, 36, 36), False)])
    chw.load_state_dict(hwc.state_dict())
    picture = torch.randint(0, 256, (3, 2, 36, 36)).float()
    np.testing.assert_allclose(
        hwc(picture.permute(0, 2, 3, 1).reshape(3, -1)).detach(),
        chw(picture.reshape(3, -1)).detach(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_mixed_encoder_keeps_vectors_and_encodes_images_over_any_leading_dims():
    space = spaces.Dict(
        {"camera": IMAGE, "speed": spaces.Box(-1, 1, (3,)), "gear": spaces.Discrete(4)}
    )
    layout = observation_layout(space)
    encoder = ObservationEncoder(layout)
    vector = 4 + 3  # gear one-hot, then speed (sorted keys: camera, gear, speed)
    assert encoder.out_dim == NATURE_CNN_FEATURES + vector
    obs = torch.rand(6, 2, flatdim(space)) * 255  # [L, B, D], as recurrent replay passes
    obs.requires_grad_(True)
    features = encoder(obs)
    assert features.shape == (6, 2, NATURE_CNN_FEATURES + vector)
    torch.testing.assert_close(features[..., NATURE_CNN_FEATURES:], obs[..., -vector:])
    features.sum().backward()
    assert obs.grad is not None and obs.grad[..., :-vector].abs().sum() > 0


def test_normaliser_leaves_one_hots_flags_and_pixels_alone():
    layout = observation_layout(MIXED)
    mask = normalizable_entries(layout)
    normalizer = make_normalizer(True, (flatdim(MIXED),), 10.0, mask)
    MIXED.seed(1)
    batch = np.stack([flatten(MIXED, MIXED.sample()) for _ in range(64)]).astype(np.float32)
    out = normalizer(batch, update=True)
    np.testing.assert_array_equal(out[:, ~mask], batch[:, ~mask])
    np.testing.assert_allclose(out[:, mask].mean(0), 0.0, atol=1e-5)
    assert normalizer.state_dict()["mean"].shape == (int(mask.sum()),)
    images = normalizable_entries(observation_layout(IMAGE))
    assert type(make_normalizer(True, (images.size,), 10.0, images)).__name__ == (
        "IdentityNormalizer"
    )


def test_bernoulli_head_samples_flags_with_summed_log_probs_and_a_defined_mode():
    head = BernoulliHead(3, 4, ortho=True)
    features = torch.randn(6, 3)
    dist = head(features)
    flags = dist.sample()
    assert flags.shape == (6, 4) and set(flags.unique().tolist()) <= {0.0, 1.0}
    per_flag = torch.distributions.Bernoulli(logits=head.logits(features)).log_prob(flags)
    torch.testing.assert_close(dist.log_prob(flags), per_flag.sum(-1))
    with torch.no_grad():
        head.logits.weight.zero_()
        head.logits.bias.zero_()
    even = head(features)
    assert torch.equal(even.mode, torch.ones(6, 4))  # torch's own Bernoulli mode is NaN here
    torch.testing.assert_close(even.entropy(), torch.full((6,), 4 * np.log(2.0)))
    action, logp = ActionSampler(head, deterministic=True)(features, None)
    assert torch.equal(action, torch.ones(6, 4))
    torch.testing.assert_close(logp, torch.full((6,), 4 * np.log(0.5)))


def test_squash_maps_any_sample_into_the_bounds():
    space = spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 10.0]), dtype=np.float32)
    samples = np.array([[-1e3, 1e3], [0.0, 0.0], [1e3, -1e3]], dtype=np.float32)
    squashed = _squash(samples, space)
    np.testing.assert_allclose(squashed, [[-2.0, 10.0], [0.0, 5.0], [2.0, 0.0]], atol=1e-5)


def test_vector_env_flattens_observations_and_final_observations():
    config = EnvConfig(id="spaces_test/DictObservation-v0", num_envs=2)
    envs = make_vector_env(config, gamma=0.99)
    try:
        assert isinstance(structured_observation_space(envs), spaces.Dict)
        dim = flatdim(structured_observation_space(envs))
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, dim)
        for _ in range(space_envs.EPISODE_STEPS):
            obs, _, _, truncated, info = envs.step(np.array([1, 1]))
        assert truncated.all()
        assert np.stack(info["final_obs"]).shape == (2, dim)
    finally:
        envs.close()


@pytest.mark.parametrize("agent", ["ppo", "recurrent_ppo"])
@pytest.mark.parametrize(
    "env",
    [
        ["env.id=spaces_test/DictObservation-v0", "env.normalize_obs=true"],
        ["env.id=spaces_test/Image-v0"],
        ["env.id=spaces_test/Image-v0", "+env.kwargs.channels_last=false"],
        ["env.id=spaces_test/CopyBits-v0"],
        ["env.id=Pendulum-v1", "env.action_bounds=squash"],
    ],
    ids=["dict", "image-hwc", "image-chw", "multibinary-actions", "squashed-box"],
)
def test_each_space_trains_feed_forward_and_recurrent(agent, env, tiny, tmp_path, one_thread):
    result = run_training([*tiny, f"agent={agent}", *env], tmp_path)
    assert result.total_env_steps == 512
    assert np.isfinite(result.final_eval_return_mean)
    assert (tmp_path / "checkpoints" / "final.pt").exists()


def test_multibinary_actions_learn_to_copy_bits(tmp_path, one_thread):
    """Random flags copy half the bits (return 0.5 x 8 steps = 4); 8k steps learn more."""
    result = run_training(
        [
            "env.id=spaces_test/CopyBits-v0",
            "total_timesteps=8192",
            "agent.num_steps=64",
            "agent.learning_rate=3e-3",
            "trainer.eval_episodes=16",
            "trainer.progress=off",
            "logger=none",
        ],
        tmp_path,
    )
    assert result.final_eval_return_mean >= 6.5


def test_image_policy_is_made_from_the_structured_space():
    envs = make_vector_env(EnvConfig(id="spaces_test/Image-v0", num_envs=1), gamma=0.99)
    try:
        assert envs.single_observation_space.shape == (36 * 36,)
        layout = observation_layout(structured_observation_space(envs))
        assert [part.kind for part in layout] == [PartKind.image]
    finally:
        envs.close()


def test_acting_step_encodes_like_the_training_pass():
    """The rollout's step (encoder called, layers unwrapped) and the training pass give one
    log-probability and value for the same image observation and action."""
    space = spaces.Dict({"camera": IMAGE, "speed": spaces.Box(-1, 1, (3,))})
    torch.manual_seed(0)
    policy = ActorCritic(
        ObservationEncoder(observation_layout(space)), BinaryActions(3), NetworkConfig()
    )
    obs = torch.rand(4, flatdim(space)) * 255
    with torch.no_grad():
        action, logp, value, _ = policy.acting()(
            obs, policy.initial_state(4), torch.ones(4, dtype=torch.bool)
        )
        output = policy(observation_batch(obs))
    torch.testing.assert_close(logp, output.dist.log_prob(action))
    torch.testing.assert_close(value, output.values)
