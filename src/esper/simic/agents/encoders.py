"""The policy's first stage: a flat observation vector, cut into parts, each encoded.

Envs with structured observations (``Discrete``, ``Dict``, ``Tuple``, images) are
flattened at the env boundary (gymnasium's ``flatten``), so the rollout stores one float
vector per step whatever the space. The env adapter (``assembly.py``) describes that
vector as a layout of ``ObservationPart``s, in flattening order; this module turns the
layout back into features: vector parts (one-hots, binary flags, flattened boxes) pass
through as they are, and images go through the Nature CNN (Mnih et al. 2015, "Human-level
control through deep reinforcement learning"), scaled from [0, 255] to [0, 1]. A layout
with no image is the identity and costs nothing (``is_identity``).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from esper.simic.agents.layers import HIDDEN_GAIN


class PartKind(Enum):
    """How a part of the flat observation is encoded (and whether it is normalised)."""

    box = "box"
    """Real values (a ``Box`` of any shape, flattened): passed through; normalisable."""
    one_hot = "one_hot"
    """``Discrete`` / ``MultiDiscrete`` as one-hots: passed through, never normalised."""
    binary = "binary"
    """``MultiBinary`` flags as 0/1 floats: passed through, never normalised."""
    image = "image"
    """A ``Box`` of uint8 pixels: through the CNN, scaled to [0, 1], never normalised."""


@dataclass(frozen=True)
class ObservationPart:
    """``size`` consecutive entries of the flat observation; an image also has its shape
    as the env gives it (``image_shape``, HxWxC or CxHxW) and where its channels are."""

    kind: PartKind
    size: int
    image_shape: tuple[int, int, int] | None = None
    channels_last: bool = False


NATURE_CNN_FEATURES = 512


class NatureCNN(nn.Module):
    """Three convolutions and a 512-unit layer, ReLU throughout (the DQN/PPO Atari encoder);
    orthogonal init with gain sqrt(2), as in CleanRL's ``ppo_atari.py``."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        convs = nn.Sequential(
            nn.Conv2d(channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = convs(torch.zeros(1, channels, height, width)).shape[1]
        self.net = nn.Sequential(*convs, nn.Linear(flat, NATURE_CNN_FEATURES), nn.ReLU())
        for layer in self.net:
            if isinstance(layer, nn.Conv2d | nn.Linear):
                nn.init.orthogonal_(layer.weight, HIDDEN_GAIN)
                nn.init.zeros_(layer.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [B, C, H, W] in [0, 255] -> features [B, 512]."""
        return self.net(pixels / 255.0)


def nature_cnn_fits(height: int, width: int) -> bool:
    """Whether an image is large enough for the Nature CNN's kernels (36x36 at least)."""
    return min(height, width) >= 36


class _ImageEncoder(nn.Module):
    """One image part: flat pixels -> CxHxW -> Nature CNN."""

    def __init__(self, part: ObservationPart) -> None:
        super().__init__()
        assert part.image_shape is not None
        self.shape = part.image_shape
        self.channels_last = part.channels_last
        c, h, w = (self.shape[2], *self.shape[:2]) if self.channels_last else self.shape
        self.cnn = NatureCNN(c, h, w)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        pixels = flat.reshape(-1, *self.shape)
        if self.channels_last:
            pixels = pixels.permute(0, 3, 1, 2)
        return self.cnn(pixels)


class ObservationEncoder(nn.Module):
    """The flat observation ``[..., D]`` -> features ``[..., out_dim]`` for the trunks.

    Parts are read in layout order; vector parts are kept as they are (consecutive ones as
    one slice), image parts replaced by their CNN features, and the results concatenated.
    """

    def __init__(self, layout: Sequence[ObservationPart]) -> None:
        super().__init__()
        if not layout:
            raise ValueError("an observation layout needs at least one part")
        self.in_dim = sum(part.size for part in layout)
        self.is_identity = all(part.kind is not PartKind.image for part in layout)
        self.images = nn.ModuleList()
        # (start, stop, index of the image encoder or -1 for a pass-through slice)
        self._segments: list[tuple[int, int, int]] = []
        start = 0
        for part in layout:
            stop = start + part.size
            if part.kind is PartKind.image:
                self._segments.append((start, stop, len(self.images)))
                self.images.append(_ImageEncoder(part))
            elif self._segments and self._segments[-1][2] == -1:
                self._segments[-1] = (self._segments[-1][0], stop, -1)
            else:
                self._segments.append((start, stop, -1))
            start = stop
        self.out_dim = sum(
            NATURE_CNN_FEATURES if index >= 0 else stop - begin
            for begin, stop, index in self._segments
        )

    @classmethod
    def flat(cls, size: int) -> "ObservationEncoder":
        """The identity over a flat vector of ``size`` real values (a 1-D ``Box``)."""
        return cls([ObservationPart(PartKind.box, size)])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.is_identity:
            return obs
        lead = obs.shape[:-1]
        flat = obs.reshape(math.prod(lead), self.in_dim)
        features = [
            flat[:, begin:stop] if index < 0 else self.images[index](flat[:, begin:stop])
            for begin, stop, index in self._segments
        ]
        return torch.cat(features, dim=-1).reshape(*lead, self.out_dim)


ObservationInput = ObservationEncoder | int
"""What an actor-critic takes for its observations: an encoder, or the size of a flat
vector of real values (``ObservationEncoder.flat``)."""


def as_encoder(observations: ObservationInput) -> ObservationEncoder:
    return (
        observations
        if isinstance(observations, ObservationEncoder)
        else ObservationEncoder.flat(observations)
    )
