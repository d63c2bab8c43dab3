"""The observation vector, laid out like Esper's Obs V3 (``tamiyo/policy/features.py`` L738-879).

``[base (23) | slot 0 (20 + B) | ... | slot K-1 (20 + B)]``, float32, every entry in [-1, 1].
-1 marks "not yet known" where Esper uses its UNKNOWN sentinel (histories before they
exist, gradient health before it is measured, counterfactual before it is measured). An
empty slot is all zeros, as in Esper.

Base: epoch / T, symlog(loss) / 7, accuracy / 100, the 5 previous losses and accuracies
(oldest first), the fraction of slots in TRAINING, BLENDING and HOLDING or FOSSILIZED, the
last action's success, the last op one-hot (6).

Per slot: occupied flag, stage one-hot over :data:`OBSERVED_STAGES` (7), alpha,
contribution and its velocity (pp, clamped to +-10, over 10), counterfactual known (1) or
not (-1), tempo epochs / 3, alpha target, alpha mode / 2, gradient health, previous
gradient health, exploding flag, epochs in stage / T, age / T, blueprint one-hot (B).
Esper's alpha-schedule details, gradient norm and interaction features are dropped (a
ramp is fully described by target, mode and tempo; there are no interactions here); its
learned blueprint embedding becomes a one-hot.
"""

import math
from typing import Final

import numpy as np
from numpy.typing import NDArray

from esper.simic.envs.seed_lifecycle.constants import (
    NUM_OPS,
    TEMPO_EPOCHS,
    AlphaMode,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.lifecycle import Seed

HISTORY_LENGTH: Final = 5
UNKNOWN: Final = -1.0
# PRUNED is left out: it turns into EMBARGOED within the step, so no observation shows it.
OBSERVED_STAGES: Final = (
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
    SeedStage.EMBARGOED,
    SeedStage.RESETTING,
)
_STAGE_OFFSET: Final = {stage: i for i, stage in enumerate(OBSERVED_STAGES)}
_SYMLOG_NORM: Final = 7.0  # features.py: symlog(loss) / 7
_CONTRIBUTION_CLAMP_PP: Final = 10.0  # features.py L623
_MAX_TEMPO: Final = float(max(TEMPO_EPOCHS))
_ALPHA_MODE_MAX: Final = float(max(AlphaMode))

# Base feature offsets.
EPOCH, LOSS, ACCURACY = 0, 1, 2
LOSS_HISTORY, ACCURACY_HISTORY = 3, 3 + HISTORY_LENGTH
STAGE_FRACTIONS = ACCURACY_HISTORY + HISTORY_LENGTH  # TRAINING, BLENDING, HOLDING+FOSSILIZED
LAST_SUCCESS = STAGE_FRACTIONS + 3
LAST_OP = LAST_SUCCESS + 1
BASE_SIZE: Final = LAST_OP + NUM_OPS
# Per-slot feature offsets, relative to the slot's start.
SLOT_OCCUPIED = 0
SLOT_STAGE = 1
SLOT_ALPHA = SLOT_STAGE + len(OBSERVED_STAGES)
SLOT_CONTRIBUTION = SLOT_ALPHA + 1
SLOT_CONTRIBUTION_VELOCITY = SLOT_CONTRIBUTION + 1
SLOT_COUNTERFACTUAL_KNOWN = SLOT_CONTRIBUTION_VELOCITY + 1
SLOT_TEMPO = SLOT_COUNTERFACTUAL_KNOWN + 1
SLOT_ALPHA_TARGET = SLOT_TEMPO + 1
SLOT_ALPHA_MODE = SLOT_ALPHA_TARGET + 1
SLOT_HEALTH = SLOT_ALPHA_MODE + 1
SLOT_PREVIOUS_HEALTH = SLOT_HEALTH + 1
SLOT_EXPLODING = SLOT_PREVIOUS_HEALTH + 1
SLOT_EPOCHS_IN_STAGE = SLOT_EXPLODING + 1
SLOT_AGE = SLOT_EPOCHS_IN_STAGE + 1
SLOT_BLUEPRINT = SLOT_AGE + 1


def slot_size(num_blueprints: int) -> int:
    """Features per slot."""
    return SLOT_BLUEPRINT + num_blueprints


def observation_size(num_slots: int, num_blueprints: int) -> int:
    """Length of the observation vector."""
    return BASE_SIZE + num_slots * slot_size(num_blueprints)


def loss_feature(loss: float) -> float:
    """symlog(loss) / 7, Esper's loss squashing (losses are non-negative)."""
    return math.log1p(loss) / _SYMLOG_NORM


def accuracy_feature(accuracy: float) -> float:
    """Accuracy in percentage points, over 100."""
    return accuracy / 100.0


def _pp(value: float) -> float:
    """Percentage points clamped to +-10 and scaled to +-1."""
    return max(-1.0, min(value / _CONTRIBUTION_CLAMP_PP, 1.0))


def build_observation(
    *,
    epoch: int,
    max_epochs: int,
    loss: float,
    accuracy: float,
    loss_features: list[float],
    accuracy_features: list[float],
    seeds: list[Seed | None],
    last_op: int,
    last_success: bool,
    num_blueprints: int,
) -> NDArray[np.float32]:
    """A fresh observation vector for the current epoch.

    ``loss_features``/``accuracy_features`` hold up to 5 previous epochs' features, oldest
    first (kept by the caller so each value is squashed once).
    """
    num_slots = len(seeds)
    stride = slot_size(num_blueprints)
    obs = [0.0] * (BASE_SIZE + num_slots * stride)
    obs[EPOCH] = epoch / max_epochs
    obs[LOSS] = loss_feature(loss)
    obs[ACCURACY] = accuracy_feature(accuracy)
    pad = HISTORY_LENGTH - len(loss_features)
    for i in range(HISTORY_LENGTH):
        known = i >= pad
        obs[LOSS_HISTORY + i] = loss_features[i - pad] if known else UNKNOWN
        obs[ACCURACY_HISTORY + i] = accuracy_features[i - pad] if known else UNKNOWN
    obs[LAST_SUCCESS] = 1.0 if last_success else 0.0
    obs[LAST_OP + last_op] = 1.0
    for slot, seed in enumerate(seeds):
        if seed is None:
            continue
        stage = seed.stage
        if stage == SeedStage.TRAINING:
            obs[STAGE_FRACTIONS] += 1.0 / num_slots
        elif stage == SeedStage.BLENDING:
            obs[STAGE_FRACTIONS + 1] += 1.0 / num_slots
        elif stage in (SeedStage.HOLDING, SeedStage.FOSSILIZED):
            obs[STAGE_FRACTIONS + 2] += 1.0 / num_slots
        base = BASE_SIZE + slot * stride
        controller = seed.controller
        obs[base + SLOT_OCCUPIED] = 1.0
        obs[base + SLOT_STAGE + _STAGE_OFFSET[stage]] = 1.0
        obs[base + SLOT_ALPHA] = controller.alpha
        if seed.contribution is None:
            obs[base + SLOT_COUNTERFACTUAL_KNOWN] = UNKNOWN
        else:
            obs[base + SLOT_CONTRIBUTION] = _pp(seed.contribution)
            obs[base + SLOT_CONTRIBUTION_VELOCITY] = _pp(seed.contribution_velocity)
            obs[base + SLOT_COUNTERFACTUAL_KNOWN] = 1.0
        obs[base + SLOT_TEMPO] = TEMPO_EPOCHS[seed.tempo] / _MAX_TEMPO
        obs[base + SLOT_ALPHA_TARGET] = controller.target
        obs[base + SLOT_ALPHA_MODE] = controller.mode / _ALPHA_MODE_MAX
        health, previous = seed.gradient_health, seed.previous_gradient_health
        obs[base + SLOT_HEALTH] = UNKNOWN if health is None else health
        obs[base + SLOT_PREVIOUS_HEALTH] = UNKNOWN if previous is None else previous
        obs[base + SLOT_EXPLODING] = 1.0 if seed.exploding else 0.0
        obs[base + SLOT_EPOCHS_IN_STAGE] = min(seed.epochs_in_stage / max_epochs, 1.0)
        obs[base + SLOT_AGE] = min(seed.epochs_total / max_epochs, 1.0)
        obs[base + SLOT_BLUEPRINT + seed.blueprint] = 1.0
    return np.array(obs, dtype=np.float32)
