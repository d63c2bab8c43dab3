"""Cut a ``[T, N]`` rollout into chunks for truncated BPTT, in one of two layouts.

Split layout (``rnn.impl=torch``, ``build_layout``): each env's rollout is split at
episode boundaries and every episode piece is cut into chunks of at most ``seq_len``
steps, each padded at its end to ``seq_len``. A chunk therefore never holds an episode
start after its first step, so a minibatch of chunks is replayed by ONE fused
``nn.LSTM``/``nn.GRU`` call from one start state per chunk (the state stored at the
chunk's first step, or the initial state where that step begins an episode). Resetting
the state inside sequences instead (CleanRL's ppo_atari_lstm.py, and sb3-contrib's
RecurrentPPO whenever a sequence holds an episode start) needs a Python loop over time
steps around torch's cores. Padding sits after the valid steps, so a causal core never
lets it touch a valid output; the loss masks it out (``losses``, with a mask).

Window layout (``rnn.impl=esper``, ``build_window_layout``): each env's rollout is cut
every ``seq_len`` steps whatever the episode ends, and ``starts`` marks the rows where
the replay resets the state, which esper's LSTM kernel (``lstm_resets``) does inside the
sequence. No padding (unless ``seq_len`` does not divide the rollout), and every
minibatch has the same shape, which a compiled step needs.

The rollout stores the hidden state at EVERY step ([T, N, K, H], K = cores x layers; with
H=64, K=1, an LSTM's h and c take 512 B per step, less than most observations), not only
at chunk starts: chunk starts are known only once the rollout's episode ends are, and
burn-in needs the state ``burn_in`` steps before a chunk.

Optional burn-in (split layout only), after R2D2 (Kapturowski et al. 2019, "Recurrent
Experience Replay in Distributed Reinforcement Learning"): a stored state was computed by
the rollout's policy and goes stale as the update changes the weights, so a chunk that
continues an episode is preceded by the ``burn_in`` steps before it, replayed without
gradient from the state stored there to refresh the chunk's start state. Those steps are
not in this chunk's loss but in the loss of the chunk they belong to, so every valid step
is trained on exactly once (cutting the first steps of each chunk out of the loss
instead, as a literal DRQN burn-in would, drops data). Chunks that begin an episode need
no burn-in (their initial state is exact); the first chunk of an env's rollout that
continues an episode from the previous rollout has no stored steps before it and starts
from its stored state.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class SequenceLayout:
    """Where every step of a ``[T, N]`` rollout lands in ``[seq_len, num_chunks]``.

    Indices are flat row-major indices into the rollout, ``t * N + n``. Chunks are ordered
    env by env, in time order within an env. Built once per update by ``build_layout``.
    """

    index: torch.Tensor
    """[L, C] long: the rollout step at each chunk row; padding repeats the chunk's first
    step, so gathered padding is real (finite) data that the mask removes."""
    mask: torch.Tensor
    """[L, C] bool: True at valid steps, False at padding."""
    lengths: torch.Tensor
    """[C] long, on the CPU: valid steps per chunk (host-side minibatch planning)."""
    start_index: torch.Tensor
    """[C] long: the step whose stored state the chunk's replay starts from: the first
    burn-in step for chunks with burn-in, the chunk's first step otherwise."""
    reset: torch.Tensor
    """[C] bool: the step at ``start_index`` begins an episode, so the replay starts from
    the policy's initial state instead of the stored one."""
    burn_in_index: torch.Tensor | None
    """[burn_in, C] long: the steps replayed before each chunk; rows of chunks without
    burn-in repeat the chunk's first step and their result is discarded. None without
    burn-in."""
    has_burn_in: torch.Tensor | None
    """[C] bool: the chunk is preceded by burn-in steps. None without burn-in."""
    starts: torch.Tensor | None = None
    """[L, C] bool, window layout only (``build_window_layout``): an episode starts at that
    step, so the replay resets the state there. None for chunks split at episode starts."""

    @property
    def num_chunks(self) -> int:
        return self.mask.shape[1]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, ...]`` rollout tensor -> ``[L, C, ...]`` padded chunks."""
        return x.flatten(0, 1)[self.index]

    def gather_burn_in(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, ...]`` rollout tensor -> ``[burn_in, C, ...]`` burn-in steps."""
        if self.burn_in_index is None:
            raise ValueError("the layout was built without burn-in")
        return x.flatten(0, 1)[self.burn_in_index]

    def gather_start_state(self, stored: torch.Tensor) -> torch.Tensor:
        """Stored states ``[T, N, K, H]`` -> each chunk's start state ``[K, C, H]``."""
        return stored.flatten(0, 1)[self.start_index].transpose(0, 1).contiguous()


def build_layout(
    dones: torch.Tensor, first_starts: torch.Tensor, seq_len: int, burn_in: int = 0
) -> SequenceLayout:
    """Chunk a rollout: ``dones`` [T, N] (the episode ended with step t's transition),
    ``first_starts`` [N] (step 0 begins an episode, e.g. after a reset or a done at the
    previous rollout's last step).

    Vectorised: each env's steps are laid end to end (env-major), the offset of every step
    from its episode piece's first step comes from a running maximum of piece starts, and
    ``offset % seq_len`` gives the chunk row. Runs on the CPU (the one host sync reads the
    chunk count); the results move to ``dones``' device, except ``lengths``.
    """
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    if not 0 <= burn_in <= seq_len:
        # Chunks after an episode piece's first are >= seq_len steps into it, so up to
        # seq_len steps before them are always stored.
        raise ValueError(f"need 0 <= burn_in <= seq_len, got burn_in={burn_in}, {seq_len=}")
    device = dones.device
    num_steps, num_envs = dones.shape
    starts = torch.cat([first_starts.reshape(1, num_envs), dones[:-1]]).bool().cpu()
    # Env-major position p = n * T + t: each env's rollout is one contiguous run.
    starts_em = starts.T.reshape(-1)
    piece_first = starts_em.clone()
    piece_first[::num_steps] = True  # a rollout's first step begins a piece
    pos = torch.arange(num_steps * num_envs)
    piece_start = torch.where(piece_first, pos, 0).cummax(0).values
    offset = pos - piece_start
    row = offset % seq_len
    chunk_first = row == 0
    chunk_id = chunk_first.cumsum(0) - 1
    num_chunks = int(chunk_id[-1]) + 1
    flat = (pos % num_steps) * num_envs + pos // num_steps  # row-major t * N + n

    first_flat = flat[chunk_first]
    index = first_flat.repeat(seq_len, 1)
    index[row, chunk_id] = flat
    mask = torch.zeros(seq_len, num_chunks, dtype=torch.bool)
    mask[row, chunk_id] = True
    lengths = torch.bincount(chunk_id, minlength=num_chunks)

    chunk_pos = pos[chunk_first]
    burn_in_index = has_burn_in = None
    replay_pos = chunk_pos
    if burn_in:
        has_burn_in = offset[chunk_first] > 0  # continues an episode piece
        replay_pos = torch.where(has_burn_in, chunk_pos - burn_in, chunk_pos)
        steps = torch.arange(burn_in).unsqueeze(1)
        burn_pos = torch.where(has_burn_in, replay_pos + steps, chunk_pos)
        burn_in_index = flat[burn_pos].to(device)
        has_burn_in = has_burn_in.to(device)
    return SequenceLayout(
        index=index.to(device),
        mask=mask.to(device),
        lengths=lengths,
        start_index=flat[replay_pos].to(device),
        reset=starts_em[replay_pos].to(device),
        burn_in_index=burn_in_index,
        has_burn_in=has_burn_in,
    )


def build_window_layout(
    dones: torch.Tensor, first_starts: torch.Tensor, seq_len: int
) -> SequenceLayout:
    """Chunk a rollout into windows: each env's steps cut every ``seq_len`` steps, whatever
    the episode ends, with ``starts`` marking where the replay must reset the state
    (``rnn.impl=esper``, whose kernel does that inside a sequence). Only a rollout whose
    length ``seq_len`` does not divide has padding: its last window per env."""
    if seq_len <= 0:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    device = dones.device
    num_steps, num_envs = dones.shape
    starts = torch.cat([first_starts.reshape(1, num_envs), dones[:-1]]).bool()
    windows = -(-num_steps // seq_len)
    # Chunk c = (env n, window w), env by env: its row r is step w * seq_len + r of env n.
    step = torch.arange(windows).repeat(num_envs) * seq_len + torch.arange(seq_len).unsqueeze(1)
    env = torch.arange(num_envs).repeat_interleave(windows)
    mask = step < num_steps
    step = torch.where(mask, step, step[0])  # padding repeats the window's first step
    index = step * num_envs + env
    lengths = mask.sum(0)
    mask, index = mask.to(device), index.to(device)
    return SequenceLayout(
        index=index,
        mask=mask,
        lengths=lengths,
        start_index=index[0],
        reset=torch.zeros(index.shape[1], dtype=torch.bool, device=device),
        burn_in_index=None,
        has_burn_in=None,
        starts=starts.flatten()[index] & mask,
    )


def chunk_minibatches(
    lengths: torch.Tensor, minibatch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffle whole chunks and group them into minibatches of about ``minibatch_size``
    valid steps (not a fixed chunk count: chunks differ in length, and PPO's step size
    should not depend on where episodes happened to end).

    A chunk joins the minibatch in which its first step falls when the shuffled chunks'
    steps are counted end to end, so each minibatch differs from ``minibatch_size`` by
    less than ``seq_len`` steps (the last one may be smaller) and every chunk is in
    exactly one. ``lengths``: [C] on the CPU; returns CPU index tensors of chunks.
    """
    order = torch.randperm(len(lengths), generator=generator)
    shuffled = lengths[order]
    group = (shuffled.cumsum(0) - shuffled) // minibatch_size
    counts = torch.bincount(group).tolist()
    return [chunks for chunks in order.split(counts) if len(chunks)]


def window_minibatches(
    num_windows: int, windows_per_minibatch: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffle windows and group them ``windows_per_minibatch`` at a time: every minibatch
    has the same shape (the config check makes the count divide ``num_windows``), so a
    compiled step never recompiles for a smaller last group."""
    order = torch.randperm(num_windows, generator=generator)
    return list(order.split(windows_per_minibatch))
