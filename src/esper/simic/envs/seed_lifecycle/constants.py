"""Stages, ops, heads, blueprints, difficulties and Esper's lifecycle constants, scaled in time.

Esper runs 150 host epochs per episode (``leyline/__init__.py`` L90); this task runs 40, so
every lifecycle *duration* is scaled by about 0.4 (10 -> 4, 5 -> 2, tempo 3/5/8 -> 1/2/3) and
an episode holds three to four lifecycles instead of Esper's seven or eight. Thresholds
(accuracy in percentage points, gradient health) and reward constants keep Esper's values.
File references are to tachyon-beep/esper-lite @ 2016337e, under ``src/esper/``.
"""

from dataclasses import dataclass
from enum import IntEnum
from typing import Final


class SeedStage(IntEnum):
    """Lifecycle stages with Esper's numbering (``leyline/stages.py`` L42-55).

    An empty slot is DORMANT. PRUNED lasts no observable time: the epoch's stage clock moves it
    to EMBARGOED in the same step (``kasmina/slot.py`` L2483), so it appears in transition
    records but never in an observation.
    """

    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10

    # Hash as the int it equals (Enum hashes its name, in Python): stage-set membership
    # tests run several times per step.
    __hash__ = int.__hash__


class Op(IntEnum):
    """Lifecycle operations, Esper's ids (``leyline/factored_actions.py`` L108-115)."""

    WAIT = 0
    GERMINATE = 1
    SET_ALPHA_TARGET = 2
    PRUNE = 3
    FOSSILIZE = 4
    ADVANCE = 5


class AlphaMode(IntEnum):
    """Direction of the alpha ramp (``leyline/alpha.py``); retargeting is HOLD-only."""

    HOLD = 0
    UP = 1
    DOWN = 2


NUM_OPS: Final = len(Op)

# Action heads, in the order of the MultiDiscrete action. Esper's style, alpha_speed and
# alpha_curve heads are dropped: blending always uses the default SIGMOID_ADD style, a ramp
# (blend-in or SET_ALPHA_TARGET) lasts the seed's tempo, and PRUNE is instant (speed INSTANT).
HEAD_NAMES: Final = ("op", "slot", "blueprint", "tempo", "alpha_target")
HEAD_OP, HEAD_SLOT, HEAD_BLUEPRINT, HEAD_TEMPO, HEAD_ALPHA_TARGET = range(len(HEAD_NAMES))

# Blend-in ramp length per tempo choice (FAST, STANDARD, SLOW); Esper's 3/5/8 epochs
# (``leyline/factored_actions.py`` L98-102) scaled to this task's clock.
TEMPO_EPOCHS: Final = (1, 2, 3)
TEMPO_STANDARD: Final = 1
# Alpha targets (HALF, SEVENTY, FULL), Esper's values (``leyline/factored_actions.py`` L163).
ALPHA_TARGETS: Final = (0.5, 0.7, 1.0)
ALPHA_TARGET_FULL: Final = 2

# Stages whose seed module exists (Esper's ``has_active_seed_in_slot``).
LIVE_STAGES: Final = frozenset(
    {
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.HOLDING,
        SeedStage.FOSSILIZED,
    }
)
# Stages in which the seed is trained by the host's optimiser (``slot.py`` L2060-2150).
TRAINED_STAGES: Final = frozenset(
    {SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED}
)
# Stages that block GERMINATE anywhere (``tamiyo/policy/action_masks.py`` L81-97).
BLOCKS_GERMINATION: Final = frozenset(
    {
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.PRUNED,
        SeedStage.EMBARGOED,
        SeedStage.RESETTING,
    }
)
PRUNABLE_STAGES: Final = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING}
)
ADVANCEABLE_STAGES: Final = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING}
)
RETARGETABLE_STAGES: Final = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})
# Stages that pay parameter rent (``simic/training/helpers.py`` L145-148).
RENTED_STAGES: Final = frozenset({SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})

# --- Lifecycle durations (Esper value -> this task) ---
# PRUNE needs seed age >= this (MIN_PRUNE_AGE = 5, ``leyline/__init__.py`` L37).
MIN_PRUNE_AGE: Final = 2
# G2 needs this many epochs in TRAINING (DEFAULT_MIN_BLENDING_EPOCHS = 10, L677).
MIN_TRAINING_EPOCHS: Final = 4
# Epochs in HOLDING for the full fossilize bonus (MIN_HOLDING_EPOCHS = 5, L43).
MIN_HOLDING_EPOCHS: Final = 2
# EMBARGOED dwell after a prune (DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE = 5, L566).
EMBARGO_EPOCHS: Final = 2
# Attribution/germination timing discount warm-up (germination_warmup_epochs = 10,
# ``simic/rewards/contribution.py`` L296); the floor 0.4 is Esper's.
GERMINATION_WARMUP_EPOCHS: Final = 4
GERMINATION_DISCOUNT_FLOOR: Final = 0.4

# --- Gate thresholds (Esper's values) ---
# G2 (permissive): gradient health >= 0.7 (DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING, L682).
MIN_GRADIENT_HEALTH_FOR_BLENDING: Final = 0.7
# A seed's gradients "explode" below this health; G2 and G5 refuse exploding seeds.
EXPLODING_HEALTH: Final = 0.3
# The FOSSILIZE bonus needs contribution >= 1 pp (DEFAULT_MIN_FOSSILIZE_CONTRIBUTION, L421).
MIN_FOSSILIZE_CONTRIBUTION: Final = 1.0

DEFAULT_MAX_EPOCHS: Final = 40
DEFAULT_NUM_SLOTS: Final = 3
# Hosts that ``env.vectorization=batched`` (:mod:`.vector`) runs as one batched computation.
BATCHED_HOSTS: Final = ("mlp",)
# ``host="mlp"``'s synthetic tasks (``mlp_host.MLP_TASKS``): seeds do not pay on the
# baseline (data-limited), they do on the impaired one (capacity-limited).
MLP_TASK_NAMES: Final = ("baseline", "impaired")
# Parameters of the host: Esper's cifar_baseline CNN is ~6K (``runtime/tasks.py``).
SURROGATE_HOST_PARAMS: Final = 6000


@dataclass(frozen=True, slots=True)
class Blueprint:
    """A seed architecture: its size and the distribution of its hidden gain.

    ``gain_mean``/``gain_std`` are the accuracy gain in percentage points of a fully trained
    seed at alpha 1 on the surrogate host. Sizes are Esper's CNN blueprints
    (``kasmina/blueprints/cnn.py``); benefit is not monotone in size, and conv_heavy's mean
    gain barely exceeds its rent (1.33 per epoch), so it is the trap the issue asks for.
    """

    name: str
    params: int
    gain_mean: float
    gain_std: float
    learning_epochs: float  # quality = 1 - exp(-trained epochs / learning_epochs)


BLUEPRINTS: Final = (
    Blueprint("norm", 130, 0.5, 0.4, 3.0),
    Blueprint("attention", 2_000, 2.5, 1.2, 3.0),
    Blueprint("conv_small", 4_200, 3.5, 1.5, 3.0),
    Blueprint("conv_light", 37_000, 8.0, 2.5, 3.0),
    Blueprint("conv_heavy", 74_000, 7.0, 4.0, 5.0),
)
BLUEPRINT_INDEX: Final = {bp.name: i for i, bp in enumerate(BLUEPRINTS)}
NUM_BLUEPRINTS: Final = len(BLUEPRINTS)


@dataclass(frozen=True, slots=True)
class Difficulty:
    """How hard the surrogate makes the controller's judgement.

    Harder means more harmful seeds, smaller gains, noisier evaluation and more unstable
    gradients (which delay the G2 gate and make gradient health less clean a signal).
    """

    harmful_prob: float  # chance a germinated seed hurts, whatever its blueprint
    gain_scale: float  # multiplies every blueprint's mean gain
    eval_noise_pp: float  # std of the validation accuracy noise, percentage points
    instability_mean: float  # mean initial hidden instability of a seed, in [0, 1]


DIFFICULTIES: Final = {
    "easy": Difficulty(harmful_prob=0.05, gain_scale=1.2, eval_noise_pp=0.15, instability_mean=0.1),
    "medium": Difficulty(
        harmful_prob=0.15, gain_scale=1.0, eval_noise_pp=0.3, instability_mean=0.25
    ),
    "hard": Difficulty(harmful_prob=0.25, gain_scale=0.85, eval_noise_pp=0.5, instability_mean=0.4),
}
