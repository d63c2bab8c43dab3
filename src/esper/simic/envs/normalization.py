"""Running observation normalisation, applied by the rollout rather than an env wrapper.

gymnasium's vector ``NormalizeObservation`` refuses same-step autoreset, because it
cannot transform ``info["final_obs"]``; bootstrapping truncated episodes needs that
final observation normalised exactly like the others. One normaliser object, owned
by the run, serves the rollout, the bootstrap and evaluation (frozen there), and is
saved with checkpoints. The statistics are gymnasium's own ``RunningMeanStd``.

Only real-valued entries are normalised: one-hots, binary flags and pixels of a flattened
structured observation pass unchanged (``assembly.normalizable_entries``).
"""

from typing import Any

import numpy as np
from gymnasium.wrappers.utils import RunningMeanStd


class ObservationNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics, over
    the entries ``index`` of a flat observation (all of it when ``None``)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        clip: float,
        epsilon: float = 1e-8,
        index: np.ndarray | None = None,
    ) -> None:
        self.rms = RunningMeanStd(shape=shape if index is None else (len(index),))
        self.clip = clip
        self.epsilon = epsilon
        self.index = index

    def __call__(self, obs: np.ndarray, *, update: bool) -> np.ndarray:
        """Normalise a batch ``[N, *shape]``, first folding it into the statistics if ``update``."""
        part = obs if self.index is None else obs[:, self.index]
        if update:
            self.rms.update(part)
        normalized = (part - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        normalized = np.clip(normalized, -self.clip, self.clip).astype(np.float32)
        if self.index is None:
            return normalized
        out = obs.astype(np.float32)
        out[:, self.index] = normalized
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.rms.mean.copy(), "var": self.rms.var.copy(), "count": self.rms.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rms.mean = np.array(state["mean"])
        self.rms.var = np.array(state["var"])
        self.rms.count = state["count"]


class IdentityNormalizer:
    """Stands in when ``env.normalize_obs`` is off, so callers need no branches."""

    def __call__(self, obs: np.ndarray, *, update: bool) -> np.ndarray:
        return obs

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""


Normalizer = ObservationNormalizer | IdentityNormalizer


def make_normalizer(
    enabled: bool, shape: tuple[int, ...], clip: float, mask: np.ndarray | None = None
) -> Normalizer:
    """A normaliser of observations of ``shape``, over the flat entries where ``mask`` holds
    (all when ``None``); the identity when disabled or nothing is to be normalised."""
    if not enabled or (mask is not None and not mask.any()):
        return IdentityNormalizer()
    index = None if mask is None or mask.all() else np.flatnonzero(mask)
    return ObservationNormalizer(shape, clip, index=index)
