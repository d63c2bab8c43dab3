"""Running observation normalisation, applied by the rollout rather than an env wrapper.

gymnasium's vector ``NormalizeObservation`` refuses same-step autoreset, because it
cannot transform ``info["final_obs"]``; bootstrapping truncated episodes needs that
final observation normalised exactly like the others. One normaliser object, owned
by the run, serves the rollout, the bootstrap and evaluation (frozen there), and is
saved with checkpoints. The statistics are gymnasium's own ``RunningMeanStd``.
"""

from typing import Any

import numpy as np
from gymnasium.wrappers.utils import RunningMeanStd


class ObservationNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics."""

    def __init__(self, shape: tuple[int, ...], clip: float, epsilon: float = 1e-8) -> None:
        self.rms = RunningMeanStd(shape=shape)
        self.clip = clip
        self.epsilon = epsilon

    def __call__(self, obs: np.ndarray, *, update: bool) -> np.ndarray:
        """Normalise a batch ``[N, *shape]``, first folding it into the statistics if ``update``."""
        if update:
            self.rms.update(obs)
        normalized = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        return np.clip(normalized, -self.clip, self.clip).astype(np.float32)

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


def make_normalizer(enabled: bool, shape: tuple[int, ...], clip: float) -> Normalizer:
    return ObservationNormalizer(shape, clip) if enabled else IdentityNormalizer()
