"""Building blocks shared by every actor-critic: initialised layers, MLPs, masked logits,
and layers unwrapped into plain functions for the rollout's per-step passes."""

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from esper.simic.settings import Activation

_ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.tanh: nn.Tanh,
    Activation.relu: nn.ReLU,
    Activation.gelu: nn.GELU,
    Activation.silu: nn.SiLU,
}

# Gains of the orthogonal init used by the PPO implementations of OpenAI baselines and
# CleanRL ("The 37 Implementation Details of PPO", Huang et al. 2022, detail 2): hidden
# layers sqrt(2), the policy output 0.01 (near-uniform initial policy), the value output 1.
HIDDEN_GAIN = math.sqrt(2)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0


def init_layer(layer: nn.Linear, gain: float, ortho: bool) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias; PyTorch's default init if not ``ortho``."""
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(in_dim: int, hidden: list[int], activation: Activation, ortho: bool) -> nn.Sequential:
    """Hidden layers only; the caller adds the output layer with its own gain."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [
            init_layer(nn.Linear(in_dim, width), HIDDEN_GAIN, ortho),
            _ACTIVATIONS[activation](),
        ]
        in_dim = width
    return nn.Sequential(*layers)


def masked_logits(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Push illegal actions' logits to the most negative finite float.

    Finite rather than -inf so that Categorical's entropy (p * log p) stays 0 for
    masked actions instead of NaN (Huang & Ontañón 2020, arXiv:2006.14171).
    """
    if mask is None:
        return logits
    return logits.masked_fill(~mask, torch.finfo(logits.dtype).min)


def sample_categorical(probs: torch.Tensor) -> torch.Tensor:
    """One action per row of ``probs`` [..., A]: ``argmax(probs / E)`` with E ~ Exp(1).

    This is the algorithm ``torch.multinomial`` itself runs for one sample (the exponential
    race, equivalent to the Gumbel-max trick: the smallest of independent ``E_i / p_i``, which
    are exponential with rate ``p_i``, is ``i`` with probability ``p_i``), on the same random
    numbers, so it draws the very same actions. It leaves out multinomial's input checks,
    three reductions read back to the host, which cost more than the sampling at a rollout
    step's size; ``RolloutRunner`` checks the log-probabilities once per rollout instead.
    """
    race = torch.empty_like(probs).exponential_()
    return (probs / race).argmax(-1)


Layer = Callable[[torch.Tensor], torch.Tensor]

# Activation modules whose forward is exactly this function of the input.
_FUNCTIONAL_ACTIVATIONS: dict[type[nn.Module], Layer] = {
    nn.Tanh: torch.tanh,
    nn.ReLU: torch.relu,
    nn.SiLU: nn.functional.silu,
}


def unwrap_layer(module: nn.Module) -> Layer:
    """``module`` as a plain function of its input, with its parameters bound now."""
    if isinstance(module, nn.Linear):
        return partial(nn.functional.linear, weight=module.weight, bias=module.bias)
    return _FUNCTIONAL_ACTIVATIONS.get(type(module), module)


def apply_layers(layers: list[Layer], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x
