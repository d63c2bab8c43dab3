"""Esper's SHAPED contribution reward, its SPARSE alternative and PAIRED, term by term.

As in Esper, the reward of a step is computed from the epoch's measurements *before* the
action runs, and it concerns the action's target slot (the first slot for WAIT)
(``simic/training/action_execution.py`` L812-952). Constants and formulas are those of
``simic/rewards/contribution.py`` (``compute_contribution_reward`` L377-876, helpers
L1194-1410, config L115-330). Accuracies are in percentage points.

What is left out, and why: the synergy bonus and scaffold hindsight credit need pairwise
interaction counterfactuals this task does not measure; the governor rollback penalty
needs a governor, and the surrogate never diverges; the proxy attribution path (L546-589)
and the germinate-on-occupied-slot, prune-too-young and early-prune penalties are
unreachable here (a BLENDING seed always has a counterfactual, the masks forbid the rest).
"""

import math
from typing import Final, NamedTuple

from esper.simic.envs.seed_lifecycle.constants import (
    GERMINATION_DISCOUNT_FLOOR,
    GERMINATION_WARMUP_EPOCHS,
    MIN_FOSSILIZE_CONTRIBUTION,
    MIN_HOLDING_EPOCHS,
    Op,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.lifecycle import STAGE_POTENTIALS, Seed, stage_potential

# PBRS discount; must equal PPO's gamma for policy invariance (leyline/__init__.py L67).
GAMMA: Final = 0.995
PBRS_WEIGHT: Final = 0.3  # contribution.py L153
# Anti-gaming (L212-214): regressions discount attribution by sigmoid(3 * cf).
ATTRIBUTION_SIGMOID_STEEPNESS: Final = 3.0
IMPROVEMENT_SAFE_THRESHOLD: Final = 0.1
HACKING_RATIO_THRESHOLD: Final = 5.0
# Rent (L160-169) and alpha shock (L172-176).
RENT_WEIGHT: Final = 0.5
MAX_RENT: Final = 1.5
RENT_HOST_PARAMS_FLOOR: Final = 200
BASE_SLOT_RENT_RATIO: Final = 0.0039
ALPHA_SHOCK_COEF: Final = 0.1958
ALPHA_SHOCK_CAP: Final = 1.0
# Capacity economics (L288-290).
SEED_OCCUPANCY_COST: Final = 0.01
FREE_SLOTS: Final = 1
FOSSILIZED_MAINTENANCE_COST: Final = 0.002
# Per-op costs and shaping (L179-202, L270).
GERMINATE_COST: Final = -0.15
FOSSILIZE_COST: Final = -0.01
PRUNE_COST: Final = -0.005
SET_ALPHA_TARGET_COST: Final = -0.005
ADVANCE_FROM_TRAINING_PENALTY: Final = -0.1
FOSSILIZE_BASE_BONUS: Final = 0.5
FOSSILIZE_CONTRIBUTION_SCALE: Final = 0.1
FOSSILIZE_NONCONTRIBUTING_PENALTY: Final = -0.2
FOSSILIZE_TERMINAL_SCALE: Final = 3.0  # leyline/__init__.py L403
FOSSILIZE_QUALITY_CEILING: Final = 3.0
PRUNE_HURTING_BONUS: Final = 0.15
PRUNE_ACCEPTABLE_BONUS: Final = 0.1
PRUNE_GOOD_SEED_PENALTY: Final = -0.3
PRUNE_HURTING_THRESHOLD: Final = -0.5
TERMINAL_ACC_WEIGHT: Final = 0.05  # L217
# SPARSE (compute_sparse_reward, L879-898): accuracy / 100 - 0.1 * fossilized / 500K.
SPARSE_PARAM_BUDGET: Final = 500_000
SPARSE_PARAM_PENALTY_WEIGHT: Final = 0.1

SHAPED_COMPONENTS: Final = (
    "attribution",
    "ratio_penalty",
    "blending_warning",
    "holding_warning",
    "pbrs",
    "rent",
    "alpha_shock",
    "occupancy_rent",
    "fossilized_rent",
    "action_shaping",
    "germination_clawback",
    "terminal_bonus",
)
# ESCROW adds the terminal forfeit of credit still held by live, unfossilized seeds.
ESCROW_COMPONENTS: Final = (*SHAPED_COMPONENTS, "escrow_forfeit")
SPARSE_COMPONENTS: Final = ("accuracy", "param_cost")
# PAIRED adds minus the twin host's accuracy (:func:`paired_reward`).
PAIRED_COMPONENTS: Final = (*SPARSE_COMPONENTS, "twin_accuracy")
# ESCROW (RewardMode.ESCROW, contribution.py L143-150, L498-537): progress is measured on
# the minimum accuracy of the last 3 epochs, and a slot's credit moves at most 2 a step.
ESCROW_STABLE_WINDOW: Final = 3
ESCROW_DELTA_CLIP: Final = 2.0


def timing_discount(germination_epoch: int) -> float:
    """Early germinations earn less: 0.4 at epoch 0 rising to 1 at the warm-up (L1335-1362)."""
    if germination_epoch >= GERMINATION_WARMUP_EPOCHS:
        return 1.0
    progress = germination_epoch / GERMINATION_WARMUP_EPOCHS
    return GERMINATION_DISCOUNT_FLOOR + (1.0 - GERMINATION_DISCOUNT_FLOOR) * progress


def hacking_ratio_penalty(contribution: float, cf: float) -> float:
    """Anti-gaming (L438-474): a seed claiming far more than all seeds together add.

    For c > 1: c/cf > 5 costs min(0.3, 0.1 (c/cf - 5)/5); cf <= 0.1 costs 0.3 min(1, c/10).
    """
    if contribution <= 1.0:
        return 0.0
    if cf <= IMPROVEMENT_SAFE_THRESHOLD:
        return PRUNE_GOOD_SEED_PENALTY * min(1.0, contribution / 10.0)
    ratio = contribution / cf
    if ratio <= HACKING_RATIO_THRESHOLD:
        return 0.0
    excess = (ratio - HACKING_RATIO_THRESHOLD) / HACKING_RATIO_THRESHOLD
    return -min(-PRUNE_GOOD_SEED_PENALTY, 0.1 * excess)


def attribution(
    op: Op, seed: Seed, contribution: float, cf: float, val_acc: float, epoch: int
) -> tuple[float, float]:
    """(bounded attribution, ratio penalty) of a live, non-fossilized seed (L438-639).

    c = contribution, p = progress since germination, cf = accuracy minus all-seeds-off.
    A negative c is paid as is; otherwise the harmonic mean 2pc/(p+c) when c >= p > 0, c
    when c < p, 0 when p <= 0; discounted by sigmoid(3 cf) if cf < 0 and by the timing
    discount. FOSSILIZE with cf < 0 earns none; PRUNE flips the sign.
    """
    discount = 1.0
    if cf < 0:
        discount = 1.0 / (1.0 + math.exp(min(-ATTRIBUTION_SIGMOID_STEEPNESS * cf, 700.0)))
    ratio_penalty = hacking_ratio_penalty(contribution, cf) if discount >= 0.5 else 0.0
    if contribution < 0:
        value = contribution
    else:
        progress = val_acc - seed.acc_at_germination
        if progress <= 0:
            value = 0.0
        elif contribution >= progress:
            value = 2 * progress * contribution / max(progress + contribution, 1e-8)
        else:
            value = contribution
        value *= discount * timing_discount(epoch - seed.epochs_total)
    if op == Op.FOSSILIZE and cf < 0:
        value = 0.0
    if op == Op.PRUNE:
        value = -value
    return value, ratio_penalty


class EscrowStep(NamedTuple):
    """One scoring of a slot under ESCROW: what the step pays and the slot's new credit."""

    paid: float
    credit: float


def escrow_attribution(
    op: Op, seed: Seed, contribution: float | None, cf: float, stable_acc: float, credit: float
) -> EscrowStep:
    """Esper's ESCROW attribution: pay the change in the slot's unrealised credit.

    SHAPED pays a scored seed's attribution again on every step that targets it, so a
    policy can collect c per epoch by re-targeting a blended seed ("turntabling"). ESCROW
    (Esper's anti-thrash mode, L498-537) keeps a credit target per slot, max(0, attributed
    + ratio penalty) with attributed = sqrt(p c) if c >= p > 0, c if c < p, 0 if p <= 0,
    and pays only its change, clipped to +-2 a step; a negative c pays c and zeroes the
    credit, PRUNE claws the credit back, FOSSILIZE banks it (with cf < 0 it pays nothing).
    What a seed earns over its life telescopes to its credit when fossilized; the env
    forfeits the credit of seeds still live at the end (``action_execution.py`` L989-1009).
    """
    if op == Op.PRUNE:
        return EscrowStep(-credit, 0.0)
    if contribution is None or seed.stage == SeedStage.FOSSILIZED:
        return EscrowStep(0.0, credit)
    if contribution < 0:
        paid, new_credit = contribution - credit, 0.0
    else:
        progress = stable_acc - seed.acc_at_germination
        if progress <= 0:
            attributed = 0.0
        elif contribution >= progress:
            attributed = math.sqrt(progress * contribution)
        else:
            attributed = contribution
        target = max(0.0, attributed + hacking_ratio_penalty(contribution, cf))
        paid = max(-ESCROW_DELTA_CLIP, min(ESCROW_DELTA_CLIP, target - credit))
        new_credit = credit + paid
    return EscrowStep(0.0 if op == Op.FOSSILIZE and cf < 0 else paid, new_credit)


def fossilize_shaping(seed: Seed, contribution: float, cf: float) -> float:
    """FOSSILIZE of a HOLDING seed: bonus if it helps, escalating penalty if it hurts.

    ``_contribution_fossilize_shaping`` (L1252-1293) + FOSSILIZE cost + the immediate
    fossilize bonus 3 tanh(1/3) (L794-834); both bonuses scale with min(1, epochs/2).
    """
    shaping = FOSSILIZE_COST
    if cf < 0:
        ransomware = contribution > 0.1 and cf < -0.2
        return shaping - 0.5 - min(abs(cf) * 0.2, 1.0) - (0.3 if ransomware else 0.0)
    legitimacy = min(1.0, seed.epochs_in_stage / MIN_HOLDING_EPOCHS)
    if contribution < MIN_FOSSILIZE_CONTRIBUTION:
        return shaping + FOSSILIZE_NONCONTRIBUTING_PENALTY
    bonus = FOSSILIZE_BASE_BONUS + FOSSILIZE_CONTRIBUTION_SCALE * contribution
    immediate = FOSSILIZE_TERMINAL_SCALE * math.tanh(1.0 / FOSSILIZE_QUALITY_CEILING)
    return shaping + (bonus + immediate) * legitimacy


def prune_shaping(seed: Seed, contribution: float | None) -> float:
    """PRUNE forfeits the seed's potential, and is paid by what the seed was doing.

    -0.3 Phi (L835-843), then +0.15 if c < -0.5, +0.1 if c < 0, else -0.3 - 0.05 c floored
    at -0.9 (``_contribution_prune_shaping`` L1298-1333), plus the prune cost.
    """
    shaping = -PBRS_WEIGHT * stage_potential(seed.stage, seed.epochs_in_stage) + PRUNE_COST
    if contribution is None:
        return shaping
    if contribution < PRUNE_HURTING_THRESHOLD:
        return shaping + PRUNE_HURTING_BONUS
    if contribution < 0:
        return shaping + PRUNE_ACCEPTABLE_BONUS
    return shaping + max(
        PRUNE_GOOD_SEED_PENALTY - 0.05 * contribution, 3.0 * PRUNE_GOOD_SEED_PENALTY
    )


def germinate_shaping(epoch: int, max_epochs: int) -> float:
    """GERMINATE: the PBRS step 0 -> gamma Phi(GERMINATED), timing-discounted, minus 0.15.

    No bonus on the last epoch, where the seed could never be scored (L771-792).
    """
    bonus = 0.0
    if epoch < max_epochs:
        phi = GAMMA * STAGE_POTENTIALS[SeedStage.GERMINATED]
        bonus = PBRS_WEIGHT * phi * timing_discount(epoch)
    return bonus + GERMINATE_COST


def action_shaping(
    op: Op, seed: Seed | None, contribution: float | None, cf: float, epoch: int, max_epochs: int
) -> float:
    """Per-op shaping (L768-856); ``seed`` is the target slot's live seed, if any."""
    if op == Op.GERMINATE:
        return germinate_shaping(epoch, max_epochs)
    if seed is None:
        return 0.0
    if op == Op.FOSSILIZE:
        if contribution is None:
            raise RuntimeError("a HOLDING seed always has a counterfactual")
        return fossilize_shaping(seed, contribution, cf)
    if op == Op.PRUNE:
        return prune_shaping(seed, contribution)
    if op == Op.ADVANCE:
        return ADVANCE_FROM_TRAINING_PENALTY if seed.stage == SeedStage.TRAINING else 0.0
    return SET_ALPHA_TARGET_COST if op == Op.SET_ALPHA_TARGET else 0.0


def rent(effective_params: float, host_params: int) -> float:
    """-min(0.5 ln(1 + P / max(host, 200)), 1.5) (L707-727)."""
    if effective_params <= 0:
        return 0.0
    growth = effective_params / max(host_params, RENT_HOST_PARAMS_FLOOR)
    return -min(RENT_WEIGHT * math.log1p(growth), MAX_RENT)


def shaped_reward(
    op: Op,
    seed: Seed | None,
    contribution: float | None,
    cf: float,
    val_acc: float,
    epoch: int,
    max_epochs: int,
    effective_params: float,
    alpha_shock_sum: float,
    host_params: int,
    num_occupied: int,
    num_fossilized: int,
    clawback: float,
    *,
    escrow: EscrowStep | None = None,
) -> dict[str, float]:
    """Every term of Esper's SHAPED reward for one step; the reward is their sum.

    ``seed`` is the target slot's live seed (None if empty or cooling down), and
    ``contribution`` its counterfactual (None before its alpha leaves 0). ``clawback``
    is the terminal germination refund computed by :func:`germination_clawback`.
    ``escrow``: under ESCROW, the target slot's :func:`escrow_attribution`, which
    replaces the attribution (its ratio penalty is inside the credit).
    """
    attributed = ratio_penalty = blending_warning = holding_warning = pbrs = 0.0
    if seed is not None:
        if escrow is not None:
            attributed = escrow.paid
        elif contribution is not None and seed.stage != SeedStage.FOSSILIZED:
            attributed, ratio_penalty = attribution(op, seed, contribution, cf, val_acc, epoch)
        if seed.stage == SeedStage.BLENDING and cf < 0:  # L655-666
            blending_warning = -0.1 - min(seed.epochs_in_stage * 0.05, 0.3)
        # Esper tests the attribution after its ratio penalty is added (L668-688).
        holding_stalls = op not in (Op.FOSSILIZE, Op.PRUNE) and attributed + ratio_penalty > 0
        if seed.stage == SeedStage.HOLDING and holding_stalls and seed.epochs_in_stage >= 2:
            holding_warning = -min(0.1 + max(0, seed.epochs_in_stage - 2) * 0.05, 0.3)  # L677
        # PBRS on the seed's potential now vs at the previous epoch (L1194-1224); see docs.
        pbrs = PBRS_WEIGHT * (GAMMA * seed.phi_last - seed.phi_prev)
    return {
        "attribution": attributed,
        "ratio_penalty": ratio_penalty,
        "blending_warning": blending_warning,
        "holding_warning": holding_warning,
        "pbrs": pbrs,
        "rent": rent(effective_params, host_params),
        "alpha_shock": max(-ALPHA_SHOCK_COEF * alpha_shock_sum, -ALPHA_SHOCK_CAP),
        "occupancy_rent": -SEED_OCCUPANCY_COST * max(0, num_occupied - FREE_SLOTS),
        "fossilized_rent": -FOSSILIZED_MAINTENANCE_COST * num_fossilized,
        "action_shaping": action_shaping(op, seed, contribution, cf, epoch, max_epochs),
        "germination_clawback": clawback,
        "terminal_bonus": TERMINAL_ACC_WEIGHT * val_acc if epoch == max_epochs else 0.0,
    }


def germination_clawback(seeds: list[Seed | None]) -> float:
    """At the last epoch, seeds still GERMINATED or TRAINING refund their germination bonus.

    Discount-corrected so it cancels the bonus in discounted return
    (``simic/training/action_execution.py`` L1011-1053).
    """
    bonus = PBRS_WEIGHT * GAMMA * STAGE_POTENTIALS[SeedStage.GERMINATED]
    return -sum(
        bonus / GAMMA**seed.epochs_total
        for seed in seeds
        if seed is not None and seed.stage in (SeedStage.GERMINATED, SeedStage.TRAINING)
    )


def sparse_reward(
    committed_acc: float, fossilized_params: int, epoch: int, max_epochs: int
) -> dict[str, float]:
    """Esper's SPARSE reward: at the last epoch, the committed accuracy / 100 minus the
    fossilized params' cost (``compute_sparse_reward``, L879-898).

    Committed accuracy counts only FOSSILIZED seeds (``vectorized_trainer.py`` L1023-1025,
    "the ground-truth metric for permanent value"), so a seed left blended earns nothing
    and cannot dodge the param cost. Esper clamps the sum to [-1, 1]; it can leave that
    range only past 67 fossilized conv_heavy seeds, so the clamp is omitted.
    """
    if epoch != max_epochs:
        return {"accuracy": 0.0, "param_cost": 0.0}
    cost = SPARSE_PARAM_PENALTY_WEIGHT * fossilized_params / SPARSE_PARAM_BUDGET
    return {"accuracy": committed_acc / 100.0, "param_cost": -cost}


def paired_reward(
    committed_acc: float,
    twin_acc: float,
    fossilized_params: int,
    epoch: int,
    max_epochs: int,
) -> dict[str, float]:
    """SPARSE minus the twin host's accuracy / 100, at the last epoch (``twin_acc`` is read
    only then).

    The twin is the same host (initial weights, batches, schedule) trained with no seeds:
    what WAIT would end with. Its accuracy does not depend on the policy, so the optimal
    policy is SPARSE's, while the spread that host init and data put on the terminal
    accuracy (~5 pp on the real host, more than good seed decisions are worth) cancels:
    WAIT earns 0, seeds that help earn their gain, harmful ones lose.
    """
    components = sparse_reward(committed_acc, fossilized_params, epoch, max_epochs)
    components["twin_accuracy"] = -twin_acc / 100.0 if epoch == max_epochs else 0.0
    return components
