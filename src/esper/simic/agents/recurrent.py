"""Recurrent actor-critic for partially observable tasks: encoder -> LSTM/GRU core -> heads.

The rollout steps the core one step at a time (``step``) and carries the state across
rollout boundaries; training replays padded chunks of steps (``sequences.ChunkBatch``)
through ONE fused ``nn.LSTM``/``nn.GRU`` call per core (``forward_sequences``), which a
per-step Python loop (CleanRL's ppo_atari_lstm.py, the reference design otherwise) cannot
match in speed.

A state holds the actor core's layers, then the critic core's when the cores are
separate: ``h`` (and an LSTM's ``c``) are ``[K, N, H]`` with K = cores x layers, the
layout ``nn.LSTM`` takes, so one tensor per field serves both cores.
"""

from typing import NamedTuple

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Distribution

from esper.simic.agents.factored import FactoredSpec
from esper.simic.agents.lstm_resets import lstm_with_resets
from esper.simic.agents.networks import VALUE_GAIN, init_layer, make_action_head, mlp
from esper.simic.agents.sequences import ChunkBatch
from esper.simic.settings import NetworkConfig, RNNConfig, RNNType

SATURATION = 0.99
"""|tanh| above which a unit counts as saturated: its tanh passes < 2% of the gradient."""


class RecurrentState(NamedTuple):
    """Hidden state ``[K, N, H]``; ``c`` is the LSTM cell state, None for a GRU."""

    h: torch.Tensor
    c: torch.Tensor | None

    def replace_where(self, condition: torch.Tensor, other: "RecurrentState") -> "RecurrentState":
        """This state with ``other``'s columns where ``condition`` [N] holds."""
        where = condition.reshape(1, -1, 1)
        h = torch.where(where, other.h, self.h)
        c = None if self.c is None or other.c is None else torch.where(where, other.c, self.c)
        return RecurrentState(h, c)

    def layers(self, start: int, stop: int) -> "RecurrentState":
        return RecurrentState(self.h[start:stop], None if self.c is None else self.c[start:stop])


def _make_core(rnn: RNNConfig, in_dim: int, ortho: bool) -> nn.LSTM | nn.GRU:
    """A time-major core; orthogonal weights and zero biases as in CleanRL's ppo_atari_lstm.py."""
    cls = nn.LSTM if rnn.type is RNNType.lstm else nn.GRU
    core = cls(in_dim, rnn.hidden_size, rnn.num_layers)
    if ortho:
        for name, param in core.named_parameters():
            if name.startswith("bias"):
                nn.init.zeros_(param)
            else:
                nn.init.orthogonal_(param, 1.0)
    return core


def _run_core(
    core: nn.LSTM | nn.GRU, x: torch.Tensor, state: RecurrentState
) -> tuple[torch.Tensor, RecurrentState]:
    """One fused call over all ``L`` steps of ``x`` [L, B, F] -> ([L, B, H], final state)."""
    if state.c is None:
        out, h = core(x, state.h.contiguous())
        return out, RecurrentState(h, None)
    out, (h, c) = core(x, (state.h.contiguous(), state.c.contiguous()))
    return out, RecurrentState(h, c)


class RecurrentActorCritic(nn.Module):
    """Observation encoder (``network.actor_hidden`` MLP) -> core -> policy and value heads.

    ``rnn.shared_core``: one encoder and one core feed both heads. Otherwise actor and
    critic each have a core, and their own encoder (``critic_hidden``) unless
    ``network.shared_trunk``. ``learned_initial_state``: the state at episode starts is a
    trained parameter instead of zeros.
    """

    def __init__(
        self,
        obs_dim: int,
        action_space: gym.Space,
        network: NetworkConfig,
        rnn: RNNConfig,
        learned_initial_state: bool = False,
        spec: FactoredSpec | None = None,
    ) -> None:
        super().__init__()
        ortho = network.ortho_init
        self.num_layers = rnn.num_layers
        self.shared_core = rnn.shared_core
        self.shared_encoder = rnn.shared_core or network.shared_trunk
        self.actor_encoder = mlp(obs_dim, network.actor_hidden, network.activation, ortho)
        actor_in = network.actor_hidden[-1] if network.actor_hidden else obs_dim
        self.actor_core = _make_core(rnn, actor_in, ortho)
        if self.shared_encoder:
            self.critic_encoder, critic_in = self.actor_encoder, actor_in
        else:
            self.critic_encoder = mlp(obs_dim, network.critic_hidden, network.activation, ortho)
            critic_in = network.critic_hidden[-1] if network.critic_hidden else obs_dim
        self.critic_core = self.actor_core if rnn.shared_core else _make_core(rnn, critic_in, ortho)
        self.action_head = make_action_head(rnn.hidden_size, action_space, network, spec)
        self.value_head = init_layer(nn.Linear(rnn.hidden_size, 1), VALUE_GAIN, ortho)

        cores = 1 if rnn.shared_core else 2
        shape = (cores * rnn.num_layers, 1, rnn.hidden_size)
        is_lstm = rnn.type is RNNType.lstm
        if learned_initial_state:
            self.initial_h = nn.Parameter(torch.zeros(shape))
            self.initial_c = nn.Parameter(torch.zeros(shape)) if is_lstm else None
        else:  # constants, kept out of checkpoints
            self.register_buffer("initial_h", torch.zeros(shape), persistent=False)
            self.register_buffer("initial_c", torch.zeros(shape) if is_lstm else None, False)

    def initial_state(self, num_envs: int) -> RecurrentState:
        """The state at an episode start, ``[K, num_envs, H]`` (expanded views)."""
        c = None if self.initial_c is None else self.initial_c.expand(-1, num_envs, -1)
        return RecurrentState(self.initial_h.expand(-1, num_envs, -1), c)

    def reset_state(self, state: RecurrentState, episode_start: torch.Tensor) -> RecurrentState:
        """``state`` with the initial state in the columns where ``episode_start`` [N]."""
        return state.replace_where(episode_start, self.initial_state(state.h.shape[1]))

    def _cores_and_inputs(
        self, obs: torch.Tensor
    ) -> tuple[list[nn.LSTM | nn.GRU], list[torch.Tensor]]:
        """The cores to replay (the actor's, then the critic's when separate) and their
        encoded inputs."""
        actor_x = self.actor_encoder(obs)
        if self.shared_core:
            return [self.actor_core], [actor_x]
        critic_x = actor_x if self.shared_encoder else self.critic_encoder(obs)
        return [self.actor_core, self.critic_core], [actor_x, critic_x]

    def _features(
        self, obs: torch.Tensor, state: RecurrentState, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, RecurrentState]:
        """Actor and critic core outputs ``[L, B, H]`` and the final state."""
        state = self.reset_state(state, episode_start)
        cores, inputs = self._cores_and_inputs(obs)
        if self.shared_core:
            out, final = _run_core(cores[0], inputs[0], state)
            return out, out, final
        actor_x, critic_x = inputs
        k = self.num_layers
        actor_out, actor_final = _run_core(self.actor_core, actor_x, state.layers(0, k))
        critic_out, critic_final = _run_core(self.critic_core, critic_x, state.layers(k, 2 * k))
        c = None
        if actor_final.c is not None and critic_final.c is not None:
            c = torch.cat([actor_final.c, critic_final.c])
        return actor_out, critic_out, RecurrentState(torch.cat([actor_final.h, critic_final.h]), c)

    def step(
        self,
        obs: torch.Tensor,
        state: RecurrentState,
        episode_start: torch.Tensor,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[Distribution, torch.Tensor, RecurrentState]:
        """One rollout step: ``obs`` [N, D], ``episode_start`` [N] bool (reset the state to
        the initial state first), ``action_mask`` [N, A] -> (distribution over [N], value
        [N], state after this step)."""
        actor, critic, final = self._features(obs.unsqueeze(0), state, episode_start)
        value = self.value_head(critic[0]).squeeze(-1)
        return self.action_head(actor[0], action_mask), value, final

    def value(
        self, obs: torch.Tensor, state: RecurrentState, episode_start: torch.Tensor
    ) -> torch.Tensor:
        """V(obs) [N] from ``state`` (e.g. to bootstrap after the rollout's last step, or a
        truncated episode's final observation from the state its last step returned)."""
        state = self.reset_state(state, episode_start)
        if not self.shared_core:
            state = state.layers(self.num_layers, 2 * self.num_layers)
        out, _ = _run_core(self.critic_core, self.critic_encoder(obs.unsqueeze(0)), state)
        return self.value_head(out[0]).squeeze(-1)

    def forward_sequences(
        self,
        obs: torch.Tensor,
        state: RecurrentState,
        episode_start: torch.Tensor,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[Distribution, torch.Tensor, RecurrentState]:
        """Replay ``obs`` [L, B, D] from ``state`` [K, B, H] with one core call per core
        -> (distribution over [L, B], values [L, B], state after all L rows).

        ``episode_start`` [B] resets a column before its first row only: chunks never
        hold an episode start later (``sequences``). The final state includes any padding
        rows, so it is the chunk's end state only for unpadded chunks.
        """
        actor, critic, final = self._features(obs, state, episode_start)
        return self.action_head(actor, action_mask), self.value_head(critic).squeeze(-1), final

    @torch.no_grad()
    def burn_in(
        self, obs: torch.Tensor, state: RecurrentState, episode_start: torch.Tensor
    ) -> RecurrentState:
        """The state after replaying ``obs`` [b, B, D] without gradient (R2D2 burn-in,
        Kapturowski et al. 2019): refreshes a stale stored state."""
        return self._features(obs, state, episode_start)[2]

    def forward_windows(
        self,
        obs: torch.Tensor,
        state: RecurrentState,
        starts: torch.Tensor,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[Distribution, torch.Tensor, RecurrentState]:
        """``forward_sequences`` for chunks that hold episode starts anywhere: ``starts``
        [L, B] resets a column's state before that row (``rnn.impl=esper``: LSTM cores
        stepped together by ``lstm_resets``)."""
        if state.c is None:
            raise ValueError("rnn.impl=esper replays LSTM cores only")
        cores, inputs = self._cores_and_inputs(obs)
        initial = self.initial_state(1)
        assert initial.c is not None
        lstms = [core for core in cores if isinstance(core, nn.LSTM)]
        assert len(lstms) == len(cores)  # a GRU has no cell state: refused above
        outputs, h, c = lstm_with_resets(
            lstms, inputs, state.h, state.c, starts, initial.h, initial.c
        )
        dist = self.action_head(outputs[0], action_mask)
        return dist, self.value_head(outputs[-1]).squeeze(-1), RecurrentState(h, c)

    def forward(self, chunks: ChunkBatch) -> tuple[Distribution, torch.Tensor]:
        """The training pass (``evaluate_chunks``), as ``torch.func.functional_call`` calls it."""
        return self.evaluate_chunks(chunks)

    def evaluate_chunks(self, chunks: ChunkBatch) -> tuple[Distribution, torch.Tensor]:
        """Distribution and values over ``chunks`` [L, C]: burn-in where the chunk has it,
        then one replay of all chunks from their start states."""
        state = RecurrentState(chunks.h0, chunks.c0)
        if chunks.starts is not None:
            dist, values, _ = self.forward_windows(
                chunks.obs, state, chunks.starts, chunks.action_masks
            )
            return dist, values
        reset = chunks.reset
        if chunks.burn_in_obs is not None and chunks.has_burn_in is not None:
            refreshed = self.burn_in(chunks.burn_in_obs, state, reset)
            state = state.replace_where(chunks.has_burn_in, refreshed)
            reset = reset & ~chunks.has_burn_in
        dist, values, _ = self.forward_sequences(chunks.obs, state, reset, chunks.action_masks)
        return dist, values

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role for gradient statistics: the cores and a learned initial state
        are ``recurrent``; a shared encoder counts as actor, like a shared trunk."""
        actor = [*self.actor_encoder.parameters(), *self.action_head.parameters()]
        critic = [*self.value_head.parameters()]
        if not self.shared_encoder:
            critic = [*self.critic_encoder.parameters(), *critic]
        recurrent = [*self.actor_core.parameters()]
        if not self.shared_core:
            recurrent += self.critic_core.parameters()
        recurrent += [p for p in (self.initial_h, self.initial_c) if isinstance(p, nn.Parameter)]
        return {"actor": actor, "critic": critic, "recurrent": recurrent}


def hidden_state_stats(h: torch.Tensor, c: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Health of hidden states ``[..., H]`` (e.g. a rollout's stored ``[T, N, K, H]``), as
    0-dim tensors (no host sync).

    ``recurrent/hidden_norm`` and ``recurrent/cell_norm`` (LSTM): mean L2 norm of a state
    vector; a growing cell norm warns of saturation before it shows in h.
    ``recurrent/saturated_frac``: fraction of units whose tanh is saturated,
    |tanh(c)| > 0.99 for an LSTM (h = o * tanh(c), so tanh(c) is what saturates), and
    |h| > 0.99 for a GRU (h is a convex mix of tanh candidates, bounded by 1). Saturated
    units pass almost no gradient back through time.
    """
    stats = {"recurrent/hidden_norm": torch.linalg.vector_norm(h, dim=-1).mean()}
    if c is None:
        saturated = h.abs() > SATURATION
    else:
        stats["recurrent/cell_norm"] = torch.linalg.vector_norm(c, dim=-1).mean()
        saturated = c.tanh().abs() > SATURATION
    stats["recurrent/saturated_frac"] = saturated.float().mean()
    return stats
