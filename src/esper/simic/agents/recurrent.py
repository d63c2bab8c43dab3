"""Recurrent actor-critic for partially observable tasks: encoder -> LSTM/GRU core -> heads.

The rollout and evaluation step the core one step at a time (``acting``, written out as a
cell step in ``recurrent_acting``) and carry the state across rollout boundaries; training
replays chunks of steps (``forward``) through ONE fused ``nn.LSTM``/``nn.GRU`` call per
core, or, for windows that hold episode starts, through esper's kernel that resets the
state inside a sequence (``lstm_resets``). A per-step Python loop (CleanRL's
ppo_atari_lstm.py, the reference design otherwise) cannot match either in speed.

A state holds the actor core's layers, then the critic core's when the cores are
separate: ``h`` (and an LSTM's ``c``) are ``[K, N, H]`` with K = cores x layers, the
layout ``nn.LSTM`` takes, so one tensor per field serves both cores.
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from esper.simic.agents.batches import SequenceMemory, TrainingBatch
from esper.simic.agents.encoders import ObservationInput, as_encoder
from esper.simic.agents.heads import ActionSpec, make_action_head, policy_output
from esper.simic.agents.layers import VALUE_GAIN, init_layer, mlp
from esper.simic.agents.lstm_resets import lstm_with_resets
from esper.simic.agents.policy import Policy, PolicyOutput, PolicyState
from esper.simic.settings import NetworkConfig, RNNConfig, RNNType

if TYPE_CHECKING:
    from esper.simic.agents.recurrent_acting import RecurrentActingPass


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
    core: nn.LSTM | nn.GRU, x: torch.Tensor, state: PolicyState
) -> tuple[torch.Tensor, PolicyState]:
    """One fused call over all ``L`` steps of ``x`` [L, B, F] -> ([L, B, H], final state)."""
    if state.c is None:
        out, h = core(x, state.h.contiguous())
        return out, PolicyState(h, None)
    out, (h, c) = core(x, (state.h.contiguous(), state.c.contiguous()))
    return out, PolicyState(h, c)


class RecurrentActorCritic(Policy):
    """Observation encoder (``encoders.py``, shared) -> MLP (``network.actor_hidden``) ->
    core -> policy and value heads.

    ``rnn.shared_core``: one encoder and one core feed both heads. Otherwise actor and
    critic each have a core, and their own encoder (``critic_hidden``) unless
    ``network.shared_trunk``. ``rnn.learned_initial_state``: the state at episode starts is
    a trained parameter instead of zeros.
    """

    def __init__(
        self,
        observations: ObservationInput,
        actions: ActionSpec,
        network: NetworkConfig,
        rnn: RNNConfig,
        entropy_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.observation_encoder = as_encoder(observations)
        obs_dim = self.observation_encoder.out_dim
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
        self.action_head = make_action_head(rnn.hidden_size, actions, network, entropy_weights)
        self.value_head = init_layer(nn.Linear(rnn.hidden_size, 1), VALUE_GAIN, ortho)
        self.head_names = self.action_head.head_names

        cores = 1 if rnn.shared_core else 2
        shape = (cores * rnn.num_layers, 1, rnn.hidden_size)
        is_lstm = rnn.type is RNNType.lstm
        if rnn.learned_initial_state:
            self.initial_h = nn.Parameter(torch.zeros(shape))
            self.initial_c = nn.Parameter(torch.zeros(shape)) if is_lstm else None
        else:  # constants, kept out of checkpoints
            self.register_buffer("initial_h", torch.zeros(shape), persistent=False)
            self.register_buffer("initial_c", torch.zeros(shape) if is_lstm else None, False)

    def initial_state(self, num_envs: int) -> PolicyState:
        """The state at an episode start, ``[K, num_envs, H]`` (expanded views)."""
        c = None if self.initial_c is None else self.initial_c.expand(-1, num_envs, -1)
        return PolicyState(self.initial_h.expand(-1, num_envs, -1), c)

    def reset_state(self, state: PolicyState, episode_start: torch.Tensor) -> PolicyState:
        """``state`` with the initial state in the columns where ``episode_start`` [N]."""
        return state.replace_where(episode_start, self.initial_state(state.h.shape[1]))

    def acting(self, deterministic: bool = False) -> "RecurrentActingPass":
        """The rollout's (and evaluation's) step, the core written out as one cell step."""
        # recurrent_acting builds on this module: imported here to break the cycle.
        from esper.simic.agents.recurrent_acting import RecurrentActingPass  # noqa: PLC0415

        return RecurrentActingPass(self, deterministic)

    def value(
        self, obs: torch.Tensor, state: PolicyState, episode_start: torch.Tensor
    ) -> torch.Tensor:
        """V(obs) [N] from ``state`` (e.g. to bootstrap after the rollout's last step, or a
        truncated episode's final observation from the state its last step returned)."""
        state = self.reset_state(state, episode_start)
        if not self.shared_core:
            state = state.layers(self.num_layers, 2 * self.num_layers)
        features = self.observation_encoder(obs.unsqueeze(0))
        out, _ = _run_core(self.critic_core, self.critic_encoder(features), state)
        return self.value_head(out[0]).squeeze(-1)

    def forward(self, batch: TrainingBatch) -> PolicyOutput:
        """The training pass over chunks ``[L, C]`` from their start states."""
        memory = batch.memory
        if memory is None:
            raise ValueError("a recurrent policy trains on sequence chunks, got a step batch")
        if memory.starts is None:
            actor, critic = self._replay_chunks(batch.obs, memory)
        else:
            actor, critic = self._replay_windows(batch.obs, memory, memory.starts)
        values = self.value_head(critic).squeeze(-1)
        return policy_output(self.action_head, actor, batch.action_masks, values)

    def _cores_and_inputs(
        self, obs: torch.Tensor
    ) -> tuple[list[nn.LSTM | nn.GRU], list[torch.Tensor]]:
        """The cores to replay (the actor's, then the critic's when separate) and their
        encoded inputs."""
        features = self.observation_encoder(obs)
        actor_x = self.actor_encoder(features)
        if self.shared_core:
            return [self.actor_core], [actor_x]
        critic_x = actor_x if self.shared_encoder else self.critic_encoder(features)
        return [self.actor_core, self.critic_core], [actor_x, critic_x]

    def _features(
        self, obs: torch.Tensor, state: PolicyState, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, PolicyState]:
        """Replay ``obs`` [L, B, D] from ``state`` [K, B, H] (reset first where
        ``episode_start`` [B]) with one fused call per core -> actor and critic outputs
        ``[L, B, H]`` and the state after all L rows (padding rows included)."""
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
        return actor_out, critic_out, PolicyState(torch.cat([actor_final.h, critic_final.h]), c)

    def _replay_chunks(
        self, obs: torch.Tensor, memory: SequenceMemory
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Chunks split at episode starts: torch's fused cores from each chunk's start
        state, refreshed first by burn-in where the chunk has it (R2D2, Kapturowski et al.
        2019: a stored state goes stale as the update changes the weights)."""
        state, reset = PolicyState(memory.h0, memory.c0), memory.reset
        if memory.burn_in_obs is not None and memory.has_burn_in is not None:
            with torch.no_grad():
                refreshed = self._features(memory.burn_in_obs, state, reset)[2]
            state = state.replace_where(memory.has_burn_in, refreshed)
            reset = reset & ~memory.has_burn_in
        actor, critic, _ = self._features(obs, state, reset)
        return actor, critic

    def _replay_windows(
        self, obs: torch.Tensor, memory: SequenceMemory, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows with episode starts anywhere (``rnn.impl=esper``): ``starts`` [L, C]
        resets a column's state before that row; the LSTM cores step together in
        ``lstm_resets``."""
        if memory.c0 is None:
            raise ValueError("rnn.impl=esper replays LSTM cores only")
        cores, inputs = self._cores_and_inputs(obs)
        initial = self.initial_state(1)
        assert initial.c is not None
        lstms = [core for core in cores if isinstance(core, nn.LSTM)]
        assert len(lstms) == len(cores)  # a GRU has no cell state: refused above
        outputs, _, _ = lstm_with_resets(
            lstms, inputs, memory.h0, memory.c0, starts, initial.h, initial.c
        )
        return outputs[0], outputs[-1]

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role for gradient statistics: the cores and a learned initial state
        are ``recurrent``; the observation encoder and a shared MLP encoder count as actor,
        like a shared trunk."""
        actor = [
            *self.observation_encoder.parameters(),
            *self.actor_encoder.parameters(),
            *self.action_head.parameters(),
        ]
        critic = [*self.value_head.parameters()]
        if not self.shared_encoder:
            critic = [*self.critic_encoder.parameters(), *critic]
        recurrent = [*self.actor_core.parameters()]
        if not self.shared_core:
            recurrent += self.critic_core.parameters()
        recurrent += [p for p in (self.initial_h, self.initial_c) if isinstance(p, nn.Parameter)]
        return {"actor": actor, "critic": critic, "recurrent": recurrent}
