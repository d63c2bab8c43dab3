"""The host network the seeds grow in: its interface and the fast surrogate.

One env step is one host epoch (``simic/training/vectorized_trainer.py`` L2338-2460): the
host and its trainable seeds train, then validation measures accuracy, each slot's
counterfactual (that slot's seed switched off) and the all-seeds-off accuracy.

The surrogate replaces training by closed forms with Esper's shape: a saturating learning
curve with a plateau, seeds whose quality ramps while they train and whose output enters
the host's in proportion to alpha, and one validation noise draw per epoch shared by every
counterfactual (they run on the same validation batch in Esper's fused pass). ``host=mlp``
(:mod:`esper.simic.envs.seed_lifecycle.mlp_host`) trains a real network instead.
"""

import math
from collections.abc import Sequence
from typing import Final, NamedTuple, Protocol

import numpy as np

from esper.simic.envs.seed_lifecycle.constants import (
    BLUEPRINTS,
    SURROGATE_HOST_PARAMS,
    TRAINED_STAGES,
    Difficulty,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.lifecycle import Seed


class Evaluation(NamedTuple):
    """One validation pass, accuracies in percentage points."""

    accuracy: float
    loss: float
    all_off_accuracy: float  # every seed switched off
    slot_off_accuracy: list[float | None]  # per slot; None where the slot's alpha is 0
    # Only FOSSILIZED seeds on: what the run keeps for good (Esper's committed accuracy).
    committed_accuracy: float


class Host(Protocol):
    """What the env needs from a host; seeds' lifecycle state stays with the env."""

    host_params: int

    def reset(self, rng: np.random.Generator, max_epochs: int) -> None:
        """Start a fresh host run; all randomness comes from ``rng``."""
        ...

    def germinate(self, slot: int, blueprint: int) -> None:
        """Create a new seed module of ``blueprint`` in ``slot``."""
        ...

    def remove(self, slot: int) -> None:
        """Delete the seed module in ``slot`` (prune)."""
        ...

    def seed_params(self, slot: int) -> int:
        """Trainable parameters of the seed module in ``slot``."""
        ...

    def train_epoch(self, seeds: Sequence[Seed | None]) -> list[float | None]:
        """Train one epoch; return each slot's seed gradient health, None if not trained."""
        ...

    def evaluate(self, seeds: Sequence[Seed | None]) -> Evaluation:
        """Validate with all seeds as they are, each slot off, and all seeds off."""
        ...


class TwinHost(Host, Protocol):
    """A host that also trains its twin, which the PAIRED reward pays against."""

    def twin_accuracy(self) -> float:
        """Validation accuracy (%) of the twin: the same host (initial weights, batches,
        schedule) trained alongside with no seeds, i.e. this host under WAIT."""
        ...


# Accuracy of an untrained 10-class host, and the surrogate host's final accuracy: Esper's
# cifar_baseline reaches about 45-50% alone (``runtime/tasks.py``; ESPER_TASK.md section 4).
CHANCE_ACCURACY: Final = 10.0
HOST_FINAL_ACCURACY_MEAN: Final = 48.0
HOST_FINAL_ACCURACY_STD: Final = 1.5
# Learning-curve time constant as a fraction of the run: 95% of the way by 45% of it.
HOST_TAU_FRACTION: Final = 0.15
# Hidden instability decays by this factor per trained epoch; health noise std.
INSTABILITY_DECAY: Final = 0.75
HEALTH_NOISE_STD: Final = 0.05
# Harmful seeds' gain is -(0.5 + Exp(1)) pp and they start 0.3 more unstable.
HARMFUL_GAIN_OFFSET: Final = 0.5
HARMFUL_INSTABILITY_SHIFT: Final = 0.3
INSTABILITY_STD: Final = 0.15


def loss_from_accuracy(accuracy: float) -> float:
    """Cross-entropy of a calibrated 10-class classifier with this accuracy (ln 10 at chance)."""
    return -math.log(min(max(accuracy, 1.0), 99.9) / 100.0)


class SurrogateHost:
    """Closed-form host: learning curve, seed gains, shared validation noise.

    Each seed's hidden gain (accuracy in pp it adds when fully trained, at alpha 1) and
    hidden instability are drawn when it germinates. The draws for the *next* seed of each
    blueprint are made in advance so an oracle can read them (:meth:`next_gains`) without
    changing the random stream.
    """

    host_params = SURROGATE_HOST_PARAMS

    def __init__(self, difficulty: Difficulty, num_slots: int) -> None:
        self._difficulty = difficulty
        self._rng = np.random.default_rng(0)
        self._num_slots = num_slots
        self._epoch = 0
        self._final_acc = HOST_FINAL_ACCURACY_MEAN
        self._tau = 1.0
        self._next: list[tuple[float, float]] = []
        self.gain: list[float] = [0.0] * num_slots
        self._instability = [0.0] * num_slots
        self._trained = [0] * num_slots
        self._blueprint = [0] * num_slots

    def reset(self, rng: np.random.Generator, max_epochs: int) -> None:
        """Draw this run's learning curve and the first seed of each blueprint."""
        self._rng = rng
        self._epoch = 0
        self._final_acc = rng.normal(HOST_FINAL_ACCURACY_MEAN, HOST_FINAL_ACCURACY_STD)
        self._tau = HOST_TAU_FRACTION * max_epochs * rng.uniform(0.8, 1.2)
        self._next = [self._draw_seed(b) for b in range(len(BLUEPRINTS))]
        self.gain = [0.0] * self._num_slots
        self._instability = [0.0] * self._num_slots
        self._trained = [0] * self._num_slots

    def _draw_seed(self, blueprint: int) -> tuple[float, float]:
        """(gain, initial instability) of one seed of ``blueprint``."""
        rng, diff, bp = self._rng, self._difficulty, BLUEPRINTS[blueprint]
        harmful = rng.random() < diff.harmful_prob
        if harmful:
            gain = -(HARMFUL_GAIN_OFFSET + rng.exponential(1.0))
        else:
            gain = rng.normal(bp.gain_mean * diff.gain_scale, bp.gain_std)
        shift = HARMFUL_INSTABILITY_SHIFT if harmful else 0.0
        instability = rng.normal(diff.instability_mean + shift, INSTABILITY_STD)
        return float(gain), min(max(float(instability), 0.0), 1.0)

    def next_gains(self) -> list[float]:
        """Hidden gain the next seed of each blueprint would get (oracle only)."""
        return [gain for gain, _ in self._next]

    def germinate(self, slot: int, blueprint: int) -> None:
        """Give ``slot`` the pre-drawn seed of ``blueprint`` and draw that blueprint's next."""
        self.gain[slot], self._instability[slot] = self._next[blueprint]
        self._next[blueprint] = self._draw_seed(blueprint)
        self._trained[slot] = 0
        self._blueprint[slot] = blueprint

    def remove(self, slot: int) -> None:
        """Forget the pruned seed."""
        self.gain[slot] = 0.0
        self._trained[slot] = 0

    def seed_params(self, slot: int) -> int:
        """The blueprint's parameter count (Esper's CNN blueprint sizes)."""
        return BLUEPRINTS[self._blueprint[slot]].params

    def quality(self, slot: int) -> float:
        """How much of its gain the seed in ``slot`` has learned so far."""
        epochs = BLUEPRINTS[self._blueprint[slot]].learning_epochs
        return 1.0 - math.exp(-self._trained[slot] / epochs)

    def train_epoch(self, seeds: Sequence[Seed | None]) -> list[float | None]:
        """Advance the host curve; trained seeds learn and report noisy gradient health."""
        self._epoch += 1
        health: list[float | None] = [None] * self._num_slots
        for slot, seed in enumerate(seeds):
            if seed is None or seed.stage not in TRAINED_STAGES:
                continue
            self._trained[slot] += 1
            self._instability[slot] *= INSTABILITY_DECAY
            noisy = 1.0 - self._instability[slot] + self._rng.normal(0.0, HEALTH_NOISE_STD)
            health[slot] = min(max(noisy, 0.0), 1.0)
        return health

    def evaluate(self, seeds: Sequence[Seed | None]) -> Evaluation:
        """Accuracy = host curve + sum(alpha * quality * gain) + one shared noise draw."""
        progress = 1.0 - math.exp(-self._epoch / self._tau)
        host_acc = CHANCE_ACCURACY + (self._final_acc - CHANCE_ACCURACY) * progress
        noise = self._rng.normal(0.0, self._difficulty.eval_noise_pp)
        effects: list[float | None] = [None] * self._num_slots
        total = committed = 0.0
        for slot, seed in enumerate(seeds):
            if seed is not None and seed.controller.alpha > 0.0:
                effect = seed.controller.alpha * self.quality(slot) * self.gain[slot]
                effects[slot] = effect
                total += effect
                committed += effect if seed.stage == SeedStage.FOSSILIZED else 0.0
        accuracy = host_acc + total + noise
        slot_off = [None if e is None else accuracy - e for e in effects]
        all_off, loss = host_acc + noise, loss_from_accuracy(accuracy)
        return Evaluation(accuracy, loss, all_off, slot_off, host_acc + committed + noise)
