"""``RecurrentActorCritic``'s rollout step with its core written out as one cell step.

A rollout steps the core one time step at a time, for a handful of envs. There the fused
``nn.LSTM``/``nn.GRU`` call (oneDNN's RNN primitive on CPU) costs ~150 us per core and step
for what is two small matrix products and a few gate activations (64 units, 8 envs, one
thread); stepping the same weights as plain tensor ops costs ~60 us. Training still replays
whole chunks through the fused core (``RecurrentActorCritic.forward``), where one call
over all time steps is what pays. The two agree to float rounding (tested): the
rollout's stored log-probabilities and states are what training's replay recomputes.
"""

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from esper.simic.agents.heads import ActionSampler
from esper.simic.agents.layers import apply_layers, unwrap_layer
from esper.simic.agents.policy import PolicyState
from esper.simic.agents.recurrent import RecurrentActorCritic

Cell = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]
]
"""(input [N, F], h [N, H], c [N, H] or None) -> (h', c' or None)."""


def _lstm_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``nn.LSTM``'s step (gates in PyTorch's i, f, g, o order); ``bias`` = b_ih + b_hh."""
    assert c is not None
    gates = torch.addmm(torch.addmm(bias, x, w_ih.T), h, w_hh.T)
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
) -> tuple[torch.Tensor, None]:
    """``nn.GRU``'s step (gates in PyTorch's r, z, n order; the reset gate scales the
    hidden part of the candidate, so the hidden product keeps its own bias)."""
    input_r, input_z, input_n = torch.addmm(b_ih, x, w_ih.T).chunk(3, dim=1)
    hidden_r, hidden_z, hidden_n = torch.addmm(b_hh, h, w_hh.T).chunk(3, dim=1)
    reset = torch.sigmoid(input_r + hidden_r)
    update = torch.sigmoid(input_z + hidden_z)
    candidate = torch.tanh(input_n + reset * hidden_n)
    return candidate + update * (h - candidate), None


def _cells(core: nn.LSTM | nn.GRU) -> list[Cell]:
    """One bound cell step per layer of ``core`` (no dropout between layers: rollouts run
    the core in evaluation, and the policy builds its cores without it)."""
    cells: list[Cell] = []
    for layer in range(core.num_layers):
        w_ih, w_hh, b_ih, b_hh = (
            getattr(core, f"{name}_l{layer}")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        if isinstance(core, nn.LSTM):
            # Summed once per rollout: the weights change only between rollouts.
            cells.append(partial(_lstm_cell, w_ih=w_ih, w_hh=w_hh, bias=b_ih + b_hh))
        else:
            cells.append(partial(_gru_cell, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh))
    return cells


def _step_core(
    cells: list[Cell], x: torch.Tensor, state: PolicyState, first: int
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Run ``cells`` on ``x`` [N, F] from the state's layers ``first``.. -> (output, h's, c's)."""
    hs, cs = [], []
    for index, cell in enumerate(cells):
        c = None if state.c is None else state.c[first + index]
        x, c = cell(x, state.h[first + index], c)
        hs.append(x)
        if c is not None:
            cs.append(c)
    return x, hs, cs


class RecurrentActingPass:
    """One step of the cores followed by sampling (the mode when ``deterministic``), as
    plain tensor ops: the rollout's and evaluation's step. Like ``networks.ActingPass`` it
    binds the parameters once per rollout, which the runner builds anew each time (updates
    change the weights between rollouts)."""

    @torch.no_grad()
    def __init__(self, policy: RecurrentActorCritic, deterministic: bool = False) -> None:
        self._policy = policy
        encoder = policy.observation_encoder
        self._encode = None if encoder.is_identity else encoder
        self._actor_encoder = [unwrap_layer(m) for m in policy.actor_encoder]
        self._critic_encoder = (
            None if policy.shared_encoder else [unwrap_layer(m) for m in policy.critic_encoder]
        )
        self._actor_cells = _cells(policy.actor_core)
        self._critic_cells = None if policy.shared_core else _cells(policy.critic_core)
        self._sample = ActionSampler(policy.action_head, deterministic)
        self._value = unwrap_layer(policy.value_head)

    @torch.no_grad()
    def __call__(
        self,
        obs: torch.Tensor,
        state: PolicyState,
        episode_start: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, PolicyState]:
        """``obs`` [N, D], ``state`` [K, N, H], ``episode_start`` [N] bool (reset to the
        initial state first), ``mask`` [N, A] -> action, its log-probability and the value,
        each [N], and the state after this step."""
        state = self._policy.reset_state(state, episode_start)
        if self._encode is not None:
            obs = self._encode(obs)
        actor_x = apply_layers(self._actor_encoder, obs)
        actor, hs, cs = _step_core(self._actor_cells, actor_x, state, 0)
        critic = actor
        if self._critic_cells is not None:
            critic_x = (
                actor_x if self._critic_encoder is None else apply_layers(self._critic_encoder, obs)
            )
            critic, critic_hs, critic_cs = _step_core(
                self._critic_cells, critic_x, state, len(self._actor_cells)
            )
            hs, cs = hs + critic_hs, cs + critic_cs
        action, logp = self._sample(actor, mask)
        next_state = PolicyState(torch.stack(hs), torch.stack(cs) if cs else None)
        return action, logp, self._value(critic).squeeze(-1), next_state
