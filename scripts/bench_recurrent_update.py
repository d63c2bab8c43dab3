"""Time one recurrent PPO update: padded chunks in one fused core call vs a per-step loop.

python scripts/bench_recurrent_update.py
python scripts/bench_recurrent_update.py --seq-len 16 --burn-in 4 --rounds 20

Both paths compute the same PPO loss (forward, loss, backward) for every minibatch of one
update: ``--epochs`` passes over a rollout of ``--envs`` x ``--steps`` (the sb3-contrib
RecurrentPPO benchmark's 8 envs x 32 steps, batch 256, 20 epochs) on CartPole-sized inputs
(velocity-hidden CartPole: 2 observations, 2 actions). The optimiser step is left out: it
costs the same on both paths.

- ``chunks``: the ``SequenceChunks`` batching strategy prepares the rollout once per
  update, then per minibatch the policy's training pass: one core call over ``[L, chunks]``.
- ``per-step``: CleanRL ppo_atari_lstm.py's replay: encoder and heads batched over the
  rollout, but one core call per time step with the state reset where an episode starts.
- ``core only``: the fused core's forward and backward over the same minibatches, nothing
  else: the floor that only a faster LSTM/GRU kernel than torch's (oneDNN's on CPU) lowers.

Rounds interleave the two so that machine load hits both alike; medians are reported.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from esper.simic.agents import batches
from esper.simic.agents.batches import TrainingBatch
from esper.simic.agents.batching import SequenceChunks
from esper.simic.agents.heads import DiscreteActions
from esper.simic.agents.losses import LossCoefficients, ppo_loss
from esper.simic.agents.policy import PolicyState
from esper.simic.agents.recurrent import RecurrentActorCritic
from esper.simic.settings import NetworkConfig, RNNConfig, RNNType

OBS_DIM = 2
COEFFICIENTS = LossCoefficients(
    clip_coef=0.2, value_clip=None, norm_adv=True, ent_coef=0.0, vf_coef=0.5
)


class Rollout:
    """A synthetic rollout with geometric episode lengths, stored as a recurrent one is."""

    def __init__(self, policy: RecurrentActorCritic, steps: int, envs: int, mean_episode: float):
        gen = torch.Generator().manual_seed(1)  # the same rollout whatever the policy
        self.obs = torch.randn(steps, envs, OBS_DIM, generator=gen)
        self.actions = torch.randint(0, 2, (steps, envs), generator=gen)
        self.dones = torch.rand(steps, envs, generator=gen) < 1.0 / mean_episode
        self.first = torch.rand(envs, generator=gen) < 0.5
        self.starts = torch.cat([self.first[None], self.dones[:-1]])
        self.logp, self.values, self.advantages, self.returns = torch.randn(
            4, steps, envs, generator=gen
        )
        init = policy.initial_state(envs)
        self.state0 = PolicyState(
            torch.randn(init.h.shape, generator=gen),
            None if init.c is None else torch.randn(init.c.shape, generator=gen),
        )
        # The states the rollout stored before each step, [T, N, K, H].
        hs, cs, state = [], [], self.state0
        with torch.no_grad():
            for t in range(steps):
                hs.append(state.h.transpose(0, 1))
                cs.append(None if state.c is None else state.c.transpose(0, 1))
                state = policy.acting()(self.obs[t], state, self.starts[t], None)[3]
        self.states_h = torch.stack(hs)
        self.states_c = None if state.c is None else torch.stack(cs)

    def batches(self) -> batches.Rollout:
        return batches.Rollout(
            self.obs, self.actions, self.logp, self.values, self.advantages, self.returns,
            self.dones, None, self.states_h, self.states_c, self.first,
        )  # fmt: skip


def chunking(args: argparse.Namespace) -> SequenceChunks:
    return SequenceChunks(args.seq_len, args.minibatch_size, args.burn_in)


def chunk_pass(policy: RecurrentActorCritic, chunks: TrainingBatch) -> torch.Tensor:
    """Forward, loss and backward of one minibatch of chunks."""
    out = policy(chunks)
    terms = ppo_loss(
        out.dist.log_prob(chunks.actions), out.entropy, out.values, chunks.logp, chunks.values,
        chunks.advantages, chunks.returns, chunks.mask, COEFFICIENTS,
    )  # fmt: skip
    terms.loss.backward()
    return terms.loss


def core_pass(policy: RecurrentActorCritic, chunks: TrainingBatch) -> None:
    """The fused core alone over one minibatch of chunks, forward and backward (including
    the input gradient, as in ``chunk_pass``): the part of ``chunk_pass`` that no change
    outside the core's kernel can remove."""
    memory = chunks.memory
    assert memory is not None
    features = policy.actor_encoder(chunks.obs).detach().requires_grad_()
    state = policy.reset_state(PolicyState(memory.h0, memory.c0), memory.reset)
    if state.c is None:
        out, _ = policy.actor_core(features, state.h.contiguous())
    else:
        out, _ = policy.actor_core(features, (state.h.contiguous(), state.c.contiguous()))
    out.sum().backward()


def per_step_pass(
    policy: RecurrentActorCritic, rollout: Rollout, envs: torch.Tensor
) -> torch.Tensor:
    """CleanRL ppo_atari_lstm.py's replay (``get_states``) of the envs ``envs``: encoder and
    heads over all their steps at once, the core one step at a time from the rollout's
    first state, reset where an episode starts. Shared core only, as in CleanRL."""
    features = policy.actor_encoder(rollout.obs[:, envs])
    h = rollout.state0.h[:, envs]
    state = PolicyState(h, None if rollout.state0.c is None else rollout.state0.c[:, envs])
    outputs = []
    for t in range(features.shape[0]):
        state = policy.reset_state(state, rollout.starts[t, envs])
        if state.c is None:
            out, h = policy.actor_core(features[t : t + 1], state.h.contiguous())
            state = PolicyState(h, None)
        else:
            out, (h, c) = policy.actor_core(features[t : t + 1], (state.h, state.c))
            state = PolicyState(h, c)
        outputs.append(out)
    hidden = torch.cat(outputs)
    dist = policy.action_head(hidden)
    terms = ppo_loss(
        dist.log_prob(rollout.actions[:, envs]).flatten(), dist.entropy().flatten(),
        policy.value_head(hidden).flatten(), rollout.logp[:, envs].flatten(),
        rollout.values[:, envs].flatten(), rollout.advantages[:, envs].flatten(),
        rollout.returns[:, envs].flatten(), None, COEFFICIENTS,
    )  # fmt: skip
    terms.loss.backward()
    return terms.loss


def chunk_update(
    policy: RecurrentActorCritic,
    rollout: Rollout,
    args: argparse.Namespace,
    gen: torch.Generator,
    minibatch_pass: Callable[[RecurrentActorCritic, TrainingBatch], object] = chunk_pass,
) -> None:
    """One update's epochs of ``minibatch_pass`` over shuffled minibatches of chunks."""
    strategy = chunking(args)
    chunks, _ = strategy.prepare(rollout.batches())
    for _ in range(args.epochs):
        for minibatch in strategy.minibatches(chunks, gen):
            minibatch_pass(policy, strategy.select(chunks, minibatch))


def per_step_update(
    policy: RecurrentActorCritic, rollout: Rollout, args: argparse.Namespace, gen: torch.Generator
) -> None:
    """Minibatches of whole envs, as CleanRL's recurrent PPO draws them."""
    envs_per_minibatch = max(1, args.minibatch_size // args.steps)
    for _ in range(args.epochs):
        for envs in torch.randperm(args.envs, generator=gen).split(envs_per_minibatch):
            per_step_pass(policy, rollout, envs)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--minibatch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--rnn", choices=[t.value for t in RNNType], default="lstm")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--burn-in", type=int, default=0)
    parser.add_argument("--mean-episode", type=float, default=20.0, help="steps per episode")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rnn = RNNConfig(RNNType(args.rnn), args.hidden, num_layers=1, shared_core=True)
    network = NetworkConfig(actor_hidden=[args.hidden], critic_hidden=[args.hidden])
    policy = RecurrentActorCritic(OBS_DIM, DiscreteActions(2), network, rnn)
    rollout = Rollout(policy, args.steps, args.envs, args.mean_episode)

    # Both paths give the same loss and, without truncation (seq_len = steps), the same
    # gradients: every chunk starts from its exact stored state.
    policy.zero_grad()
    whole = SequenceChunks(args.steps, args.minibatch_size, 0)
    chunk_loss = chunk_pass(policy, whole.prepare(rollout.batches())[0])
    chunk_grads = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad()
    loop_loss = per_step_pass(policy, rollout, torch.arange(args.envs))
    grad_gap = max(
        (p.grad - g).abs().max().item()
        for p, g in zip(policy.parameters(), chunk_grads, strict=True)
    )
    print(
        f"whole-rollout loss: chunks {chunk_loss.item():.6f}, per-step {loop_loss.item():.6f}; "
        f"max |grad difference| {grad_gap:.2e}"
    )

    gen = torch.Generator().manual_seed(0)
    candidates = {
        "chunks": lambda: chunk_update(policy, rollout, args, gen),
        "per-step": lambda: per_step_update(policy, rollout, args, gen),
        "core only": lambda: chunk_update(policy, rollout, args, gen, core_pass),
    }
    for fn in candidates.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    prep = [timed(lambda: chunking(args).prepare(rollout.batches())) for _ in range(20)]

    chunks, _ = chunking(args).prepare(rollout.batches())
    assert chunks.memory is not None and chunks.mask is not None
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); {args.envs} envs x {args.steps} "
        f"steps, minibatch {args.minibatch_size}, {args.epochs} epochs, {args.rnn} hidden "
        f"{args.hidden}, seq_len {args.seq_len}, burn-in {args.burn_in}: "
        f"{len(chunks.memory.lengths)} chunks, {int(chunks.mask.sum())} valid of "
        f"{chunks.mask.numel()} padded steps"
    )
    print("forward+loss+backward per update (no optimiser step), median (min) of rounds:")
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    for name, median in medians.items():
        print(f"{name:>9}: {median * 1e3:8.1f} ms ({min(times[name]) * 1e3:.1f})")
    speed_up = medians["per-step"] / medians["chunks"]
    print(
        f"speed-up: {speed_up:.1f}x; chunks' once-per-update layout + gather "
        f"{statistics.median(prep) * 1e3:.2f} ms; the core alone is "
        f"{medians['core only'] / medians['chunks']:.0%} of chunks"
    )


if __name__ == "__main__":
    main()
