"""Reference policies for ``esper/SeedLifecycle-v0`` and the loop that scores them.

* ``random``: uniform over legal ops, then over the op's legal slots, then uniform over
  each other head's legal values.
* ``wait``: WAIT only (Esper's off_switch cohort, ``simic/training/proof_baselines.py``).
* ``fixed_schedule``: germinates conv_small at fixed epochs, advances on a fixed dwell,
  fossilizes every seed and never prunes (Esper's fixed_schedule cohort, generalised).
* ``heuristic``: Esper's ``HeuristicTamiyo`` (``tamiyo/heuristic.py`` L140-316) with its
  durations scaled like the env's: germinate on a plateau of a stabilised host, advance
  whenever possible, prune what hurts, fossilize what helps.
* ``oracle``: the heuristic's lifecycle played with the surrogate's hidden gains: it
  germinates only the best-valued seed, never tries a gate that will fail and fossilizes
  at full legitimacy. It reads hidden state, so it needs ``host="surrogate"``.

Only the oracle reads hidden state; the others read what Esper's controller measures
(accuracies, stages, alphas, contributions, gradient health) from the env's attributes
rather than decode the observation vector. Policies are per-env and stateful: call
:meth:`ReferencePolicy.reset` at every episode start.
"""

import math
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple, Protocol

import gymnasium as gym
import numpy as np
from numpy.typing import NDArray

from esper.simic.envs.seed_lifecycle.constants import (
    ALPHA_TARGET_FULL,
    BLUEPRINT_INDEX,
    BLUEPRINTS,
    EMBARGO_EPOCHS,
    GERMINATION_WARMUP_EPOCHS,
    MIN_FOSSILIZE_CONTRIBUTION,
    MIN_HOLDING_EPOCHS,
    MIN_TRAINING_EPOCHS,
    NUM_BLUEPRINTS,
    SURROGATE_HOST_PARAMS,
    TEMPO_EPOCHS,
    TEMPO_STANDARD,
    Op,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.env import SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.host import SurrogateHost
from esper.simic.envs.seed_lifecycle.lifecycle import Seed, g2_passes, g3_passes, stage_potential
from esper.simic.envs.seed_lifecycle.masks import split_action_mask
from esper.simic.envs.seed_lifecycle.reward import (
    ALPHA_SHOCK_CAP,
    ALPHA_SHOCK_COEF,
    BASE_SLOT_RENT_RATIO,
    ESCROW_DELTA_CLIP,
    FOSSILIZE_BASE_BONUS,
    FOSSILIZE_CONTRIBUTION_SCALE,
    FOSSILIZE_NONCONTRIBUTING_PENALTY,
    FOSSILIZE_QUALITY_CEILING,
    FOSSILIZE_TERMINAL_SCALE,
    PBRS_WEIGHT,
    SPARSE_PARAM_BUDGET,
    SPARSE_PARAM_PENALTY_WEIGHT,
    TERMINAL_ACC_WEIGHT,
    rent,
)

POLICY_NAMES: Final = ("random", "wait", "fixed_schedule", "heuristic", "oracle")
_TEMPO_FAST: Final = 0


def make_action(
    op: Op, slot: int = 0, blueprint: int = 0, tempo: int = TEMPO_STANDARD
) -> NDArray[np.int64]:
    """A full action; heads the op does not use get harmless defaults (alpha FULL)."""
    return np.array([op, slot, blueprint, tempo, ALPHA_TARGET_FULL], dtype=np.int64)


WAIT_ACTION: Final = make_action(Op.WAIT)
WAIT_ACTION.flags.writeable = False


class ReferencePolicy(Protocol):
    """A policy that may read the env it acts in; reset it at every episode start."""

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        """Prepare for a new episode of ``env`` (already reset); ``seed`` drives randomness."""
        ...

    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        """The action for the current epoch."""
        ...


class RandomPolicy:
    """Uniform over legal ops, then legal slots, then each other head's legal values."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)
        self._num_slots = 1

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        """Reseed; the policy's stream is independent of the env's."""
        self._rng = np.random.default_rng(seed)
        self._num_slots = env.num_slots

    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        """Sample one legal action from ``info["action_mask"]``."""
        mask = split_action_mask(info["action_mask"], self._num_slots, NUM_BLUEPRINTS)
        rng = self._rng
        op = int(rng.choice(np.flatnonzero(mask.op)))
        picks = [
            int(rng.choice(np.flatnonzero(allowed)))
            for allowed in (mask.slot_by_op[op], mask.blueprint, mask.tempo, mask.alpha_target)
        ]
        return np.array([op, *picks], dtype=np.int64)


class WaitPolicy:
    """Never intervenes: the host trains alone."""

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        """Nothing to reset."""

    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        """WAIT."""
        return WAIT_ACTION


def _first_empty_slot(env: SeedLifecycleEnv) -> int | None:
    return next((i for i, seed in enumerate(env.seeds) if seed is None), None)


def _can_germinate(info: dict[str, Any]) -> bool:
    return bool(info["action_mask"][Op.GERMINATE])


def _developing(env: SeedLifecycleEnv) -> tuple[int, Seed] | None:
    """The first seed still going through its lifecycle (not fossilized, not cooling down)."""
    live = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)
    return next(
        ((i, seed) for i, seed in enumerate(env.seeds) if seed is not None and seed.stage in live),
        None,
    )


class FixedSchedulePolicy:
    """Germinates one blueprint at the scheduled epochs and walks every seed to FOSSILIZED.

    It advances TRAINING seeds after the minimum dwell whatever their gradients (retrying
    if the gate refuses), blended seeds once alpha holds, and fossilizes after the
    legitimacy dwell; it never prunes. A germination waits while another seed develops.
    """

    GERMINATE_EPOCHS: Final = (4, 16, 28)

    def __init__(self, blueprint: str = "conv_small") -> None:
        self._blueprint = BLUEPRINT_INDEX[blueprint]
        self._env: SeedLifecycleEnv | None = None
        self._germinated = 0

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        """Restart the schedule."""
        self._env = env
        self._germinated = 0

    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        """Follow the schedule."""
        env = self._env
        assert env is not None, "call reset() first"
        current = _developing(env)
        if current is not None:
            slot, seed = current
            stage = seed.stage
            if stage == SeedStage.GERMINATED or (
                stage == SeedStage.TRAINING and seed.epochs_in_stage >= MIN_TRAINING_EPOCHS
            ):
                return make_action(Op.ADVANCE, slot)
            if stage == SeedStage.BLENDING and g3_passes(seed):
                return make_action(Op.ADVANCE, slot)
            if stage == SeedStage.HOLDING and seed.epochs_in_stage >= MIN_HOLDING_EPOCHS:
                return make_action(Op.FOSSILIZE, slot)
        due = self._germinated < len(self.GERMINATE_EPOCHS) and (
            env.epoch >= self.GERMINATE_EPOCHS[self._germinated]
        )
        slot = _first_empty_slot(env)
        if due and slot is not None and _can_germinate(info):
            self._germinated += 1
            return make_action(Op.GERMINATE, slot, self._blueprint)
        return WAIT_ACTION


class HeuristicPolicy:
    """Esper's ``HeuristicTamiyo`` on this env's clock.

    Germinates (blueprints in Esper's rotation order, skipping recently pruned ones) when
    no seed is live, the host has stabilised, the epoch is past the minimum and accuracy
    has plateaued; advances every seed as soon as it can (paying for refused TRAINING
    gates, as Esper's does); prunes seeds whose accuracy fell 2 pp in their stage after a
    dwell, or whose contribution in HOLDING is at most 0.5 pp; fossilizes the others.
    Esper's counts of 3 and 5 epochs become 2 here (``leyline/__init__.py`` L548-571).
    """

    PLATEAU_THRESHOLD_PP: Final = 0.5  # tamiyo/tracker.py L56
    PLATEAU_EPOCHS: Final = 2
    STABILIZATION_THRESHOLD: Final = 0.03  # leyline/__init__.py L443
    REGRESSION_THRESHOLD: Final = 0.05  # tamiyo/tracker.py L65
    STABILIZATION_EPOCHS: Final = 2
    MIN_EPOCHS_BEFORE_GERMINATE: Final = 2
    PRUNE_AFTER_EPOCHS: Final = 2
    PRUNE_IF_ACCURACY_DROPS_BY: Final = 2.0
    MIN_IMPROVEMENT_TO_FOSSILIZE: Final = 0.5
    # Esper's rotation (tamiyo/heuristic.py L75-77) without depthwise, which is not here.
    BLUEPRINT_ROTATION: Final = ("conv_light", "conv_heavy", "attention", "norm")
    PENALTY_ON_PRUNE: Final = 2.0
    PENALTY_DECAY: Final = 0.5
    PENALTY_THRESHOLD: Final = 3.0

    def __init__(self) -> None:
        self._env: SeedLifecycleEnv | None = None
        self._forget()

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        """Forget the previous episode."""
        self._env = env
        self._forget()

    def _forget(self) -> None:
        self._prev_accuracy, self._prev_loss = 0.0, math.inf
        self._plateau = self._stable = self._rotation = 0
        self._stabilized = False
        self._last_prune_epoch = -100
        self._penalties: dict[str, float] = {}

    def _track(self, accuracy: float, loss: float) -> None:
        """Esper's SignalTracker: plateau count, stabilisation latch (tracker.py L126-160)."""
        self._plateau = (
            self._plateau + 1 if accuracy - self._prev_accuracy < self.PLATEAU_THRESHOLD_PP else 0
        )
        if not self._stabilized and math.isfinite(self._prev_loss):
            relative = (self._prev_loss - loss) / self._prev_loss
            stable = -self.REGRESSION_THRESHOLD < relative < self.STABILIZATION_THRESHOLD
            self._stable = self._stable + 1 if stable else 0
            self._stabilized = self._stable >= self.STABILIZATION_EPOCHS
        self._prev_accuracy, self._prev_loss = accuracy, loss
        for name in list(self._penalties):
            self._penalties[name] *= self.PENALTY_DECAY
            if self._penalties[name] < 0.1:
                del self._penalties[name]

    def _next_blueprint(self) -> int:
        """Round-robin, skipping blueprints penalised past the threshold (heuristic.py L347-383)."""
        n = len(self.BLUEPRINT_ROTATION)
        start = self._rotation
        for _ in range(n):
            name = self.BLUEPRINT_ROTATION[self._rotation % n]
            self._rotation += 1
            if self._penalties.get(name, 0.0) < self.PENALTY_THRESHOLD:
                return BLUEPRINT_INDEX[name]
        ranked = sorted(self.BLUEPRINT_ROTATION, key=lambda b: (self._penalties.get(b, 0.0), b))
        self._rotation = start + 1
        return BLUEPRINT_INDEX[ranked[start % n]]

    def _prune(self, slot: int, seed: Seed, epoch: int) -> NDArray[np.int64]:
        self._last_prune_epoch = epoch
        name = BLUEPRINTS[seed.blueprint].name
        self._penalties[name] = self._penalties.get(name, 0.0) + self.PENALTY_ON_PRUNE
        return make_action(Op.PRUNE, slot)

    def _failing(self, seed: Seed) -> bool:
        return (
            seed.epochs_in_stage >= self.PRUNE_AFTER_EPOCHS
            and seed.improvement_since_stage_start < -self.PRUNE_IF_ACCURACY_DROPS_BY
        )

    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        """Esper's decision rules, first live seed first."""
        env = self._env
        assert env is not None, "call reset() first"
        self._track(env.val_accuracy, env.val_loss)
        current = _developing(env)
        if current is None:
            return self._germinate_or_wait(env, info)
        slot, seed = current
        mask = split_action_mask(info["action_mask"], env.num_slots, NUM_BLUEPRINTS)
        prunable = bool(mask.slot_by_op[Op.PRUNE, slot])
        stage = seed.stage
        if stage in (SeedStage.TRAINING, SeedStage.BLENDING) and self._failing(seed) and prunable:
            return self._prune(slot, seed, env.epoch)
        if stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
            return make_action(Op.ADVANCE, slot)
        if stage == SeedStage.BLENDING:
            return make_action(Op.ADVANCE, slot) if g3_passes(seed) else WAIT_ACTION
        # HOLDING, where a counterfactual always exists: fossilize unless it looks useless
        # or like ransomware (high contribution, no improvement).
        contribution = seed.contribution or 0.0
        ransomware = contribution > 0.1 and seed.total_improvement < 0.0
        if (ransomware or contribution <= self.MIN_IMPROVEMENT_TO_FOSSILIZE) and prunable:
            return self._prune(slot, seed, env.epoch)
        return make_action(Op.FOSSILIZE, slot)

    def _germinate_or_wait(self, env: SeedLifecycleEnv, info: dict[str, Any]) -> NDArray[np.int64]:
        """No live seed: germinate after the embargo, once the host is stable and flat."""
        slot = _first_empty_slot(env)
        ready = (
            env.epoch - self._last_prune_epoch >= EMBARGO_EPOCHS
            and self._stabilized
            and env.epoch >= self.MIN_EPOCHS_BEFORE_GERMINATE
            and self._plateau >= self.PLATEAU_EPOCHS
        )
        if ready and slot is not None and _can_germinate(info):
            return make_action(Op.GERMINATE, slot, self._next_blueprint())
        return WAIT_ACTION


class OraclePolicy:
    """The heuristic's lifecycle with the surrogate's hidden gains in hand.

    From the timing warm-up on, it germinates (FAST tempo) the blueprint whose next seed
    has the best estimated return, if positive and if the lifecycle can finish; it
    advances TRAINING seeds only when G2 will pass, and fossilizes at full legitimacy.
    The estimate adds the main SHAPED terms a lifecycle earns (PBRS, attribution while
    the seed is scored, fossilize bonus, terminal bonus) and subtracts rent to the end and
    the blend-in alpha shock; under SPARSE it is the accuracy gained minus the param cost.
    """

    # Epochs in TRAINING, BLENDING (FAST) and HOLDING before a full-legitimacy FOSSILIZE.
    TRAINED_EPOCHS: Final = MIN_TRAINING_EPOCHS + TEMPO_EPOCHS[_TEMPO_FAST] + 1 + MIN_HOLDING_EPOCHS
    # GERMINATE -> ADVANCE -> TRAINING dwell -> ... -> FOSSILIZE.
    LIFECYCLE_EPOCHS: Final = 2 + TRAINED_EPOCHS
    # Blended epochs before FOSSILIZE: scored each step if in slot 0 (WAIT's target), else
    # only on the ADVANCE to HOLDING and the FOSSILIZE.
    SCORED_EPOCHS_SLOT0: Final = TEMPO_EPOCHS[_TEMPO_FAST] + 1 + MIN_HOLDING_EPOCHS
    SCORED_EPOCHS_OTHER: Final = 2
    # PBRS telescopes from GERMINATED (paid by GERMINATE itself) to a seasoned FOSSILIZED.
    PBRS_GAIN: Final = PBRS_WEIGHT * (stage_potential(SeedStage.FOSSILIZED, 7) - 1.0)

    def __init__(self) -> None:
        self._env: SeedLifecycleEnv | None = None
        self._host: SurrogateHost | None = None

    def reset(self, env: SeedLifecycleEnv, seed: int) -> None:
        """Bind to the env's surrogate host (the oracle's window on hidden gains)."""
        if not isinstance(env.host, SurrogateHost):
            raise ValueError("the oracle reads hidden gains: it needs host='surrogate'")
        self._env, self._host = env, env.host

    def _value(self, blueprint: int, slot: int, remaining: int, sparse: bool) -> float:
        """Estimated return of germinating ``blueprint`` in ``slot`` now."""
        assert self._host is not None
        bp = BLUEPRINTS[blueprint]
        quality = 1.0 - math.exp(-self.TRAINED_EPOCHS / bp.learning_epochs)
        contribution = self._host.next_gains()[blueprint] * quality
        if sparse:
            cost = SPARSE_PARAM_PENALTY_WEIGHT * bp.params / SPARSE_PARAM_BUDGET
            return contribution / 100.0 - cost
        host_params = SURROGATE_HOST_PARAMS
        bonus = FOSSILIZE_NONCONTRIBUTING_PENALTY
        if contribution >= MIN_FOSSILIZE_CONTRIBUTION:
            immediate = FOSSILIZE_TERMINAL_SCALE * math.tanh(1.0 / FOSSILIZE_QUALITY_CEILING)
            bonus = FOSSILIZE_BASE_BONUS + FOSSILIZE_CONTRIBUTION_SCALE * contribution + immediate
        scored = self.SCORED_EPOCHS_SLOT0 if slot == 0 else self.SCORED_EPOCHS_OTHER
        pbrs = self.PBRS_GAIN if slot == 0 else 0.0
        # SHAPED pays the attribution on every scored step; ESCROW pays the credit once,
        # and it grows by at most ESCROW_DELTA_CLIP per scored step.
        attributed = contribution * scored
        if self._env is not None and self._env.reward_mode == "escrow":
            attributed = min(contribution, ESCROW_DELTA_CLIP * scored)
        rent_per_epoch = -rent(BASE_SLOT_RENT_RATIO * host_params + bp.params, host_params)
        rented_epochs = remaining - 2 - MIN_TRAINING_EPOCHS
        shock = min(ALPHA_SHOCK_COEF * bp.params / host_params, ALPHA_SHOCK_CAP)
        return (
            pbrs
            + attributed
            + contribution * TERMINAL_ACC_WEIGHT
            + bonus
            - rent_per_epoch * rented_epochs
            - shock
        )

    def act(self, obs: NDArray[np.float32], info: dict[str, Any]) -> NDArray[np.int64]:
        """Perfect-information lifecycle management."""
        env, host = self._env, self._host
        assert env is not None and host is not None, "call reset() first"
        current = _developing(env)
        if current is None:
            remaining = env.max_epochs - env.epoch
            slot = _first_empty_slot(env)
            if (
                slot is None
                or not _can_germinate(info)
                or env.epoch < GERMINATION_WARMUP_EPOCHS
                or remaining < self.LIFECYCLE_EPOCHS
            ):
                return WAIT_ACTION
            sparse = env.reward_mode == "sparse"
            values = [self._value(b, slot, remaining, sparse) for b in range(NUM_BLUEPRINTS)]
            best = int(np.argmax(values))
            if values[best] <= 0.0:
                return WAIT_ACTION
            return make_action(Op.GERMINATE, slot, best, _TEMPO_FAST)
        slot, seed = current
        stage = seed.stage
        if (
            stage == SeedStage.GERMINATED
            or (stage == SeedStage.TRAINING and g2_passes(seed))
            or (stage == SeedStage.BLENDING and g3_passes(seed))
        ):
            return make_action(Op.ADVANCE, slot)
        if stage == SeedStage.HOLDING and seed.epochs_in_stage >= MIN_HOLDING_EPOCHS:
            return make_action(Op.FOSSILIZE, slot)
        return WAIT_ACTION


POLICIES: Final[dict[str, Callable[[], ReferencePolicy]]] = {
    "random": RandomPolicy,
    "wait": WaitPolicy,
    "fixed_schedule": FixedSchedulePolicy,
    "heuristic": HeuristicPolicy,
    "oracle": OraclePolicy,
}


class EpisodeResult(NamedTuple):
    """What one scored episode produced."""

    episode_return: float
    final_accuracy: float
    illegal_actions: int
    fossilized_seeds: int


def run_episode(env: gym.Env[Any, Any], policy: ReferencePolicy, seed: int) -> EpisodeResult:
    """Play one episode of ``env`` (reset with ``seed``) with ``policy``."""
    obs, info = env.reset(seed=seed)
    base = env.unwrapped
    assert isinstance(base, SeedLifecycleEnv)
    policy.reset(base, seed)
    total, illegal = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += float(reward)
        illegal += bool(info["illegal_action"])
        if terminated or truncated:
            return EpisodeResult(
                total, info["final_accuracy"], illegal, len(info["fossilized_blueprints"])
            )


def evaluate_policy(
    policy_name: str, seeds: Iterable[int], **env_kwargs: Any
) -> list[EpisodeResult]:
    """Score a reference policy on ``SeedLifecycleEnv(**env_kwargs)``, one episode per seed."""
    if policy_name not in POLICIES:
        raise ValueError(f"policy_name must be one of {list(POLICIES)}, got {policy_name!r}")
    env = SeedLifecycleEnv(**env_kwargs)
    policy = POLICIES[policy_name]()
    return [run_episode(env, policy, seed) for seed in seeds]
