"""Chunking a rollout for truncated BPTT, against layouts written out by hand."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.simic.agents.batches import Rollout
from esper.simic.agents.batching import SequenceChunks, ShuffledSteps, Windows
from esper.simic.agents.sequences import (
    SequenceLayout,
    build_layout,
    chunk_minibatches,
    window_minibatches,
)


def _dones(num_steps: int, num_envs: int, ends: list[tuple[int, int]]) -> torch.Tensor:
    dones = torch.zeros(num_steps, num_envs, dtype=torch.bool)
    for t, n in ends:
        dones[t, n] = True
    return dones


def test_episode_end_mid_chunk_starts_a_new_chunk_and_pads_the_old_one():
    # T=6, N=2, seq_len=3. Flat index t * 2 + n.
    # env 0: an episode begins at t=0 and ends at t=1; the next runs t=2..5 (4 steps: 3 + 1).
    # env 1: continues an episode from the previous rollout, no end: t=0..2, t=3..5.
    layout = build_layout(_dones(6, 2, [(1, 0)]), torch.tensor([True, False]), seq_len=3)
    expected_index = [
        [0, 4, 10, 1, 7],
        [2, 6, 10, 3, 9],
        [0, 8, 10, 5, 11],  # padding repeats the chunk's first step
    ]
    expected_mask = [
        [True, True, True, True, True],
        [True, True, False, True, True],
        [False, True, False, True, True],
    ]
    assert layout.index.tolist() == expected_index
    assert layout.mask.tolist() == expected_mask
    assert layout.lengths.tolist() == [2, 3, 1, 3, 3]
    assert layout.start_index.tolist() == [0, 4, 10, 1, 7]
    assert layout.reset.tolist() == [True, True, False, False, False]
    assert layout.burn_in_index is None
    assert layout.has_burn_in is None


def test_one_step_episodes_and_an_episode_ending_at_the_last_step():
    # T=4, N=3, seq_len=2. Flat index t * 3 + n.
    # env 0: episode [t0] (ends at t0), then [t1 t2 t3] -> chunks [t1 t2], [t3].
    # env 1: continuation [t0 t1 t2] (ends at t2) -> [t0 t1], [t2]; new episode [t3].
    # env 2: [t0 t1] (ends at t1), [t2] (ends at t2), [t3].
    dones = _dones(4, 3, [(0, 0), (3, 0), (2, 1), (1, 2), (2, 2)])
    layout = build_layout(dones, torch.tensor([True, False, True]), seq_len=2)
    assert layout.index.tolist() == [
        [0, 3, 9, 1, 7, 10, 2, 8, 11],
        [0, 6, 9, 4, 7, 10, 5, 8, 11],
    ]
    assert layout.mask.int().tolist() == [
        [1, 1, 1, 1, 1, 1, 1, 1, 1],
        [0, 1, 0, 1, 0, 0, 1, 0, 0],
    ]
    assert layout.lengths.tolist() == [1, 2, 1, 2, 1, 1, 2, 1, 1]
    assert layout.reset.tolist() == [True, True, False, False, False, True, True, True, True]


def test_burn_in_replays_the_steps_before_chunks_that_continue_an_episode():
    dones = _dones(4, 3, [(0, 0), (3, 0), (2, 1), (1, 2), (2, 2)])
    layout = build_layout(dones, torch.tensor([True, False, True]), seq_len=2, burn_in=1)
    # Only env 0's [t3] (after t2 = flat 6) and env 1's [t2] (after t1 = flat 4) continue
    # an episode piece; the rest begin an episode or the rollout.
    assert layout.has_burn_in.tolist() == [False, False, True, False, True] + [False] * 4
    assert layout.burn_in_index.tolist() == [[0, 3, 6, 1, 4, 10, 2, 8, 11]]
    assert layout.start_index.tolist() == [0, 3, 6, 1, 4, 10, 2, 8, 11]
    assert layout.reset.tolist() == [True, True, False, False, False, True, True, True, True]
    # The loss layout does not change: burn-in steps are trained in their own chunk.
    plain = build_layout(dones, torch.tensor([True, False, True]), seq_len=2)
    assert torch.equal(layout.index, plain.index)
    assert torch.equal(layout.mask, plain.mask)


def test_burn_in_from_an_episode_start_resets_the_replayed_state():
    dones = _dones(4, 3, [(0, 0), (3, 0), (2, 1), (1, 2), (2, 2)])
    layout = build_layout(dones, torch.tensor([True, False, True]), seq_len=2, burn_in=2)
    # env 0's [t3] replays t1, t2 and t1 begins an episode; env 1's [t2] replays t0, t1 of
    # an episode continued from the last rollout, so it starts from the state stored at t0.
    assert layout.burn_in_index.tolist() == [
        [0, 3, 3, 1, 1, 10, 2, 8, 11],
        [0, 3, 6, 1, 4, 10, 2, 8, 11],
    ]
    assert layout.start_index.tolist() == [0, 3, 3, 1, 1, 10, 2, 8, 11]
    assert layout.reset.tolist() == [True, True, True, False, False, True, True, True, True]


def test_invalid_lengths_are_rejected():
    dones = torch.zeros(4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="seq_len"):
        build_layout(dones, torch.ones(2, dtype=torch.bool), seq_len=0)
    with pytest.raises(ValueError, match="burn_in"):
        build_layout(dones, torch.ones(2, dtype=torch.bool), seq_len=2, burn_in=3)


def _check_layout(layout: SequenceLayout, dones: torch.Tensor, first: torch.Tensor, seq_len: int):
    num_steps, num_envs = dones.shape
    starts = torch.cat([first[None], dones[:-1]])
    valid = layout.index[layout.mask]
    # Every step exactly once.
    assert sorted(valid.tolist()) == list(range(num_steps * num_envs))
    assert layout.lengths.tolist() == layout.mask.sum(0).tolist()
    for c in range(layout.num_chunks):
        length = int(layout.lengths[c])
        assert 1 <= length <= seq_len
        assert layout.mask[:length, c].all() and not layout.mask[length:, c].any()
        steps = layout.index[:length, c]
        t, n = steps // num_envs, steps % num_envs
        # One env, consecutive steps, no episode start after the first step.
        assert (n == n[0]).all() and torch.equal(t, t[0] + torch.arange(length))
        assert not starts[t[1:], n[1:]].any()
        assert (layout.index[length:, c] == steps[0]).all()
        if layout.has_burn_in is None or not layout.has_burn_in[c]:
            assert int(layout.start_index[c]) == int(steps[0])
            assert bool(layout.reset[c]) == bool(starts[t[0], n[0]])
        # Chunks are maximal: a short chunk ends at an episode end or the rollout's end.
        last = int(t[-1])
        if length < seq_len:
            assert last == num_steps - 1 or bool(dones[last, n[0]])


@settings(max_examples=40, deadline=None)
@given(
    num_steps=st.integers(1, 12),
    num_envs=st.integers(1, 4),
    seq_len=st.integers(1, 5),
    data=st.data(),
)
def test_chunks_cover_each_step_once_and_never_cross_an_episode_start(
    num_steps, num_envs, seq_len, data
):
    bits = st.lists(st.booleans(), min_size=num_steps * num_envs, max_size=num_steps * num_envs)
    dones = torch.tensor(data.draw(bits)).reshape(num_steps, num_envs)
    first = torch.tensor(data.draw(st.lists(st.booleans(), min_size=num_envs, max_size=num_envs)))
    burn_in = data.draw(st.integers(0, seq_len))
    layout = build_layout(dones, first, seq_len, burn_in)
    _check_layout(layout, dones, first, seq_len)
    if burn_in:
        starts = torch.cat([first[None], dones[:-1]])
        for c in torch.nonzero(layout.has_burn_in).flatten().tolist():
            chunk_start = int(layout.index[0, c])
            prefix = layout.burn_in_index[:, c]
            # The burn_in steps right before the chunk, in its env, inside its episode.
            assert torch.equal(prefix, chunk_start - num_envs * torch.arange(burn_in, 0, -1))
            t, n = prefix // num_envs, prefix % num_envs
            assert not starts[t[1:], n[1:]].any()
            assert not starts[chunk_start // num_envs, chunk_start % num_envs]
            assert int(layout.start_index[c]) == int(prefix[0])
            assert bool(layout.reset[c]) == bool(starts[t[0], n[0]])


def test_minibatches_hold_every_chunk_once_and_about_minibatch_size_steps():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([4, 1, 3, 4, 2, 4, 4, 1, 4, 3, 2, 4])  # 36 steps, seq_len 4
    minibatches = chunk_minibatches(lengths, minibatch_size=10, generator=generator)
    chunks = torch.cat(minibatches)
    assert sorted(chunks.tolist()) == list(range(12))
    sizes = [int(lengths[mb].sum()) for mb in minibatches]
    assert sum(sizes) == 36
    assert all(abs(size - 10) < 4 for size in sizes[:-1])
    assert 0 < sizes[-1] < 10 + 4


def test_minibatches_follow_the_generator_and_skip_empty_groups():
    lengths = torch.full((6,), 8)
    a = chunk_minibatches(lengths, 3, torch.Generator().manual_seed(1))
    b = chunk_minibatches(lengths, 3, torch.Generator().manual_seed(1))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    # Chunks longer than a minibatch: one chunk per minibatch, none empty.
    assert [len(x) for x in a] == [1] * 6


def test_chunk_batch_gathers_states_and_trims_minibatch_rows():
    dones = _dones(6, 2, [(1, 0)])
    layout = build_layout(dones, torch.tensor([True, False]), seq_len=3)
    obs = torch.arange(12.0).reshape(6, 2, 1)  # obs value = flat index
    states_h = torch.arange(12.0).reshape(6, 2, 1, 1).expand(6, 2, 2, 3)  # [T, N, K=2, H=3]
    step = obs[..., 0]
    rollout = Rollout(
        obs, step, step, step, step, step, dones, None, states_h, None, torch.tensor([True, False])
    )
    chunking = SequenceChunks(seq_len=3, minibatch_size=6, burn_in=0)
    batch, telemetry = chunking.prepare(rollout)
    assert batch.obs.shape == (3, 5, 1)
    assert batch.obs[..., 0].tolist() == layout.index.float().tolist()
    assert batch.memory.h0.shape == (2, 5, 3)
    assert batch.memory.h0[0, :, 0].tolist() == [0.0, 4.0, 10.0, 1.0, 7.0]  # at chunk starts
    assert set(telemetry) == {"recurrent/hidden_norm", "recurrent/saturated_frac"}
    short = chunking.select(batch, torch.tensor([2, 0]))  # lengths 1 and 2: two rows replayed
    assert short.obs[..., 0].tolist() == [[10.0, 0.0], [10.0, 2.0]]
    assert short.mask.tolist() == [[True, True], [False, True]]
    assert short.memory.reset.tolist() == [False, True]
    assert short.memory.h0[1, :, 0].tolist() == [10.0, 0.0]
    assert short.memory.lengths.tolist() == [1, 2]
    full = chunking.take(batch, torch.tensor([2, 0]))  # the compiled step's fixed shape
    assert full.obs.shape == (3, 2, 1)


def test_windows_make_minibatches_of_one_shape():
    """rnn.impl=esper: every minibatch the same number of whole windows (no recompiles)."""
    steps, envs, seq_len = 8, 3, 4
    dones = _dones(steps, envs, [(2, 0), (5, 2)])
    obs = torch.randn(steps, envs, 1)
    step = obs[..., 0]
    states = torch.zeros(steps, envs, 1, 2)
    rollout = Rollout(
        obs, step, step, step, step, step, dones, None, states, states, torch.ones(envs).bool()
    )
    windows = Windows(seq_len, minibatch_size=2 * seq_len)
    batch, _ = windows.prepare(rollout)
    assert batch.obs.shape == (seq_len, 6, 1) and batch.mask.all()
    minibatches = windows.minibatches(batch, torch.Generator().manual_seed(0))
    assert [len(index) for index in minibatches] == [2, 2, 2]
    assert sorted(torch.cat(minibatches).tolist()) == list(range(6))
    shapes = {windows.select(batch, index).obs.shape for index in minibatches}
    assert shapes == {(seq_len, 2, 1)}
    assert [len(x) for x in window_minibatches(6, 3, torch.Generator().manual_seed(0))] == [3, 3]


def test_shuffled_steps_flatten_time_and_envs_and_cover_each_step_once():
    obs = torch.arange(12.0).reshape(6, 2, 1)
    step = obs[..., 0]
    rollout = Rollout(
        obs, step, step, step, step, step, step.bool(), None, torch.zeros(6, 2, 0, 0), None,
        torch.ones(2).bool(),
    )  # fmt: skip
    shuffled = ShuffledSteps(minibatch_size=4)
    batch, telemetry = shuffled.prepare(rollout)
    assert telemetry == {} and batch.mask is None and batch.memory is None
    assert batch.obs[:, 0].tolist() == list(range(12))  # row-major: t * N + n
    minibatches = shuffled.minibatches(batch, torch.Generator().manual_seed(0))
    assert [len(index) for index in minibatches] == [4, 4, 4]
    picked = torch.cat([shuffled.select(batch, index).logp for index in minibatches])
    assert sorted(picked.tolist()) == list(range(12))
