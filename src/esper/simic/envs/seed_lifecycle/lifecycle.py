"""Esper's seed state machine: legal transitions, quality gates, the alpha ramp, stage clocks.

Gates are Esper's *permissive* ones (the RL default, ``runtime/tasks.py`` L56): they check
only structure and safety, so a legal ADVANCE or FOSSILIZE can still fail at run time and
the controller must learn when to try. References are to esper-lite @ 2016337e.
"""

import math
from dataclasses import dataclass, field
from typing import Final

from esper.simic.envs.seed_lifecycle.constants import (
    ALPHA_TARGETS,
    EMBARGO_EPOCHS,
    MIN_GRADIENT_HEALTH_FOR_BLENDING,
    MIN_TRAINING_EPOCHS,
    TEMPO_EPOCHS,
    AlphaMode,
    SeedStage,
)

# Esper's VALID_TRANSITIONS (``leyline/stages.py`` L57-71) plus the two ends of a slot's
# life that Esper handles outside it: germination of an empty slot and the return of a
# RESETTING slot to empty (``kasmina/slot.py`` L2595-2616).
VALID_TRANSITIONS: Final[dict[SeedStage, frozenset[SeedStage]]] = {
    SeedStage.DORMANT: frozenset({SeedStage.GERMINATED}),
    SeedStage.GERMINATED: frozenset({SeedStage.TRAINING, SeedStage.PRUNED}),
    SeedStage.TRAINING: frozenset({SeedStage.BLENDING, SeedStage.PRUNED}),
    SeedStage.BLENDING: frozenset({SeedStage.HOLDING, SeedStage.PRUNED}),
    SeedStage.HOLDING: frozenset({SeedStage.FOSSILIZED, SeedStage.BLENDING, SeedStage.PRUNED}),
    SeedStage.FOSSILIZED: frozenset(),
    SeedStage.PRUNED: frozenset({SeedStage.EMBARGOED}),
    SeedStage.EMBARGOED: frozenset({SeedStage.RESETTING}),
    SeedStage.RESETTING: frozenset({SeedStage.DORMANT}),
}

# Stage potentials for PBRS (``simic/rewards/shaping.py`` L55-68); cooldown stages are 0.
STAGE_POTENTIALS: Final[dict[SeedStage, float]] = {
    SeedStage.DORMANT: 0.0,
    SeedStage.GERMINATED: 1.0,
    SeedStage.TRAINING: 2.0,
    SeedStage.BLENDING: 3.5,
    SeedStage.HOLDING: 5.5,
    SeedStage.FOSSILIZED: 6.0,
    SeedStage.PRUNED: 0.0,
    SeedStage.EMBARGOED: 0.0,
    SeedStage.RESETTING: 0.0,
}
# Potential grows 0.3 per epoch in a stage, capped at 2 (``contribution.py`` L154-155).
EPOCH_PROGRESS_BONUS: Final = 0.3
MAX_PROGRESS_BONUS: Final = 2.0

# Blend-in ramps follow the SIGMOID curve of Esper's default SIGMOID_ADD style, steepness 12
# (``kasmina/slot.py`` L2238-2263, ``kasmina/alpha_controller.py`` L36-64).
_SIGMOID_STEEPNESS: Final = 12.0
_SIGMOID_LOW: Final = 1.0 / (1.0 + math.exp(0.5 * _SIGMOID_STEEPNESS))
_SIGMOID_HIGH: Final = 1.0 / (1.0 + math.exp(-0.5 * _SIGMOID_STEEPNESS))
_ALPHA_EPS: Final = 1e-6

# One recorded stage change: (slot, from_stage, to_stage).
Transition = tuple[int, SeedStage, SeedStage]


def stage_potential(stage: SeedStage, epochs_in_stage: int) -> float:
    """Phi(stage, epochs) of Esper's PBRS (``contribution.py`` L1194-1203)."""
    return STAGE_POTENTIALS[stage] + min(epochs_in_stage * EPOCH_PROGRESS_BONUS, MAX_PROGRESS_BONUS)


def _sigmoid_progress(t: float) -> float:
    """Esper's normalised logistic easing of linear progress t in [0, 1]."""
    raw = 1.0 / (1.0 + math.exp(-_SIGMOID_STEEPNESS * (t - 0.5)))
    return (raw - _SIGMOID_LOW) / (_SIGMOID_HIGH - _SIGMOID_LOW)


@dataclass(slots=True)
class AlphaController:
    """Ramps alpha from its start to a target over N epochs, then snaps and holds.

    Esper's ``AlphaController`` (``kasmina/alpha_controller.py`` L69-168): retargeting is
    allowed only from HOLD, and the last tick lands exactly on the target.
    """

    alpha: float = 0.0
    start: float = 0.0
    target: float = 0.0
    mode: AlphaMode = AlphaMode.HOLD
    steps_total: int = 0
    steps_done: int = 0

    def retarget(self, target: float, steps: int) -> None:
        """Start a ramp from the current alpha to ``target`` over ``steps`` epochs."""
        if self.mode != AlphaMode.HOLD:
            raise ValueError("AlphaController.retarget() is only allowed from HOLD")
        self.start = self.alpha
        self.target = target
        self.steps_total = steps
        self.steps_done = 0
        if target > self.alpha:
            self.mode = AlphaMode.UP
        elif target < self.alpha:
            self.mode = AlphaMode.DOWN
        else:
            self.mode = AlphaMode.HOLD
        if steps == 0:
            self.alpha = target
            self.mode = AlphaMode.HOLD

    def step(self) -> None:
        """Advance the ramp one epoch."""
        if self.mode == AlphaMode.HOLD:
            return
        self.steps_done += 1
        if self.steps_done >= self.steps_total:
            self.alpha = self.target
            self.mode = AlphaMode.HOLD
            return
        progress = _sigmoid_progress(self.steps_done / self.steps_total)
        value = self.start + (self.target - self.start) * progress
        low, high = sorted((self.start, self.target))
        self.alpha = min(max(value, low), high)


@dataclass(slots=True)
class Seed:
    """One slot's seed: its lifecycle state and what Esper measures of it.

    Accuracies are in percentage points. ``None`` marks a quantity not yet measured.
    """

    blueprint: int
    tempo: int  # index into TEMPO_EPOCHS, chosen at germination
    blend_target: float  # alpha the blend-in ramp aims for, chosen at germination
    acc_at_germination: float
    stage: SeedStage = SeedStage.GERMINATED
    epochs_total: int = 0  # seed age, counted at each validation while the seed lives
    epochs_in_stage: int = 0
    controller: AlphaController = field(default_factory=AlphaController)
    initial_acc: float | None = None  # validation accuracy at the seed's first epoch
    current_acc: float = 0.0
    acc_at_stage_start: float = 0.0
    contribution: float | None = None  # accuracy minus accuracy with this slot off
    contribution_velocity: float = 0.0
    gradient_health: float | None = None
    previous_gradient_health: float | None = None
    exploding: bool = False
    # PBRS bookkeeping: the potential at the last validation and at the one before.
    phi_last: float = STAGE_POTENTIALS[SeedStage.GERMINATED]
    phi_prev: float = STAGE_POTENTIALS[SeedStage.GERMINATED]

    @property
    def alpha(self) -> float:
        """Blend weight of the seed's output in the host's output."""
        return self.controller.alpha

    @property
    def total_improvement(self) -> float:
        """Validation accuracy change since the seed's first epoch (host drift included)."""
        return 0.0 if self.initial_acc is None else self.current_acc - self.initial_acc

    @property
    def improvement_since_stage_start(self) -> float:
        """Validation accuracy change since the current stage began (host drift included)."""
        return self.current_acc - self.acc_at_stage_start

    def record_epoch(self, val_acc: float) -> None:
        """Count one validated epoch of a live seed (``kasmina/slot.py`` L199-214)."""
        if self.initial_acc is None:
            self.initial_acc = val_acc
            self.acc_at_stage_start = val_acc
        self.current_acc = val_acc
        self.epochs_total += 1
        self.epochs_in_stage += 1
        self.phi_prev = self.phi_last
        self.phi_last = stage_potential(self.stage, self.epochs_in_stage)

    def record_contribution(self, contribution: float) -> None:
        """Store a fresh counterfactual; velocity is an EMA(0.7) of its changes.

        ``simic/training/vectorized_trainer.py`` L1370-1384.
        """
        if self.contribution is not None:
            delta = contribution - self.contribution
            self.contribution_velocity = 0.7 * self.contribution_velocity + 0.3 * delta
        self.contribution = contribution


def transition(seed: Seed, slot: int, new_stage: SeedStage, log: list[Transition]) -> None:
    """Move a seed to ``new_stage``, resetting its stage clock; illegal moves are bugs."""
    if new_stage not in VALID_TRANSITIONS[seed.stage]:
        raise RuntimeError(f"illegal lifecycle transition {seed.stage.name} -> {new_stage.name}")
    log.append((slot, seed.stage, new_stage))
    seed.stage = new_stage
    seed.epochs_in_stage = 0
    seed.acc_at_stage_start = seed.current_acc


def g2_passes(seed: Seed) -> bool:
    """TRAINING -> BLENDING, permissive G2: enough epochs, measured and healthy gradients.

    ``kasmina/slot.py`` L783-856.
    """
    return (
        seed.epochs_in_stage >= MIN_TRAINING_EPOCHS
        and seed.gradient_health is not None
        and not seed.exploding
        and seed.gradient_health >= MIN_GRADIENT_HEALTH_FOR_BLENDING
    )


def g3_passes(seed: Seed) -> bool:
    """BLENDING -> HOLDING, G3: the ramp has reached a full-amplitude target and holds.

    ``kasmina/slot.py`` L905-940.
    """
    controller = seed.controller
    return (
        controller.target >= 1.0 - _ALPHA_EPS
        and controller.mode == AlphaMode.HOLD
        and abs(controller.alpha - controller.target) <= _ALPHA_EPS
    )


def g5_passes(seed: Seed) -> bool:
    """HOLDING -> FOSSILIZED, permissive G5: a counterfactual exists and the seed is healthy.

    ``kasmina/slot.py`` L962-1010.
    """
    return seed.contribution is not None and not seed.exploding


def advance(seed: Seed, slot: int, log: list[Transition]) -> bool:
    """ADVANCE: try the gate to the next stage; returns whether the seed moved.

    Entering BLENDING starts the blend-in ramp to the germination-time target over the
    seed's tempo; entering HOLDING pins alpha at 1 (``kasmina/slot.py`` L2278-2331).
    """
    stage = seed.stage
    if stage == SeedStage.GERMINATED:  # G1 only checks the seed is germinated
        transition(seed, slot, SeedStage.TRAINING, log)
        return True
    if stage == SeedStage.TRAINING:
        if not g2_passes(seed):
            return False
        transition(seed, slot, SeedStage.BLENDING, log)
        seed.controller = AlphaController()
        seed.controller.retarget(seed.blend_target, TEMPO_EPOCHS[seed.tempo])
        return True
    if stage == SeedStage.BLENDING and g3_passes(seed):
        transition(seed, slot, SeedStage.HOLDING, log)
        seed.controller = AlphaController(alpha=1.0, start=1.0, target=1.0)
        return True
    return False


def fossilize(seed: Seed, slot: int, log: list[Transition]) -> bool:
    """FOSSILIZE a HOLDING seed if G5 passes; returns whether it fossilized."""
    if not g5_passes(seed):
        return False
    transition(seed, slot, SeedStage.FOSSILIZED, log)
    return True


def prune(seed: Seed, slot: int, log: list[Transition]) -> None:
    """PRUNE instantly: alpha drops to 0 and the seed's module is gone.

    Esper's PRUNE with speed INSTANT (``kasmina/slot.py`` L1600-1732); measurements of the
    removed module are cleared so the slot reads as "not yet known".
    """
    transition(seed, slot, SeedStage.PRUNED, log)
    seed.controller = AlphaController()
    seed.contribution = None
    seed.contribution_velocity = 0.0
    seed.gradient_health = None
    seed.previous_gradient_health = None
    seed.exploding = False


def set_alpha_target(seed: Seed, slot: int, target_index: int, log: list[Transition]) -> None:
    """SET_ALPHA_TARGET: ramp to a new target over the seed's tempo.

    A partial target from HOLDING re-enters BLENDING, as HOLDING is full-amplitude only
    (``kasmina/slot.py`` L1806-1906).
    """
    target = ALPHA_TARGETS[target_index]
    if seed.stage == SeedStage.HOLDING and target < 1.0 - _ALPHA_EPS:
        transition(seed, slot, SeedStage.BLENDING, log)
    seed.controller.retarget(target, TEMPO_EPOCHS[seed.tempo])


def tick(seed: Seed, slot: int, log: list[Transition]) -> Seed | None:
    """The epoch's stage clock (``kasmina/slot.py`` L2400-2616); returns None once empty.

    BLENDING advances the alpha ramp; PRUNED -> EMBARGOED at once; EMBARGOED dwells
    EMBARGO_EPOCHS ticks; RESETTING dwells one tick, then the slot is empty again.
    """
    stage = seed.stage
    if stage == SeedStage.BLENDING:
        seed.controller.step()
    elif stage == SeedStage.PRUNED:
        transition(seed, slot, SeedStage.EMBARGOED, log)
    elif stage == SeedStage.EMBARGOED:
        seed.epochs_total += 1
        seed.epochs_in_stage += 1
        if seed.epochs_in_stage >= EMBARGO_EPOCHS:
            transition(seed, slot, SeedStage.RESETTING, log)
    elif stage == SeedStage.RESETTING:
        transition(seed, slot, SeedStage.DORMANT, log)
        return None
    return seed
