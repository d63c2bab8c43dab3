"""``esper/SeedLifecycle-v0``: Esper's seed-lifecycle control task as a gymnasium env.

See the package docstring for the public contract (spaces, info keys, mask layout).
"""

from collections import deque
from collections.abc import Sequence
from typing import Any, Final, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from esper.simic.envs.seed_lifecycle.constants import (
    ALPHA_TARGETS,
    BLUEPRINTS,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_NUM_SLOTS,
    DIFFICULTIES,
    EXPLODING_HEALTH,
    HEAD_NAMES,
    LIVE_STAGES,
    MLP_TASK_NAMES,
    NUM_BLUEPRINTS,
    NUM_OPS,
    RENTED_STAGES,
    TEMPO_EPOCHS,
    Op,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.host import Evaluation, Host, SurrogateHost, TwinHost
from esper.simic.envs.seed_lifecycle.lifecycle import (
    Seed,
    Transition,
    advance,
    fossilize,
    prune,
    set_alpha_target,
    tick,
)
from esper.simic.envs.seed_lifecycle.masks import HEAD_RELEVANCE, compute_action_mask, is_legal
from esper.simic.envs.seed_lifecycle.observation import (
    HISTORY_LENGTH,
    accuracy_feature,
    build_observation,
    loss_feature,
    observation_size,
)
from esper.simic.envs.seed_lifecycle.reward import (
    BASE_SLOT_RENT_RATIO,
    ESCROW_STABLE_WINDOW,
    RENT_HOST_PARAMS_FLOOR,
    escrow_attribution,
    germination_clawback,
    paired_reward,
    shaped_reward,
    sparse_reward,
)

REWARD_MODES: Final = ("shaped", "escrow", "sparse", "paired")
HOSTS: Final = ("surrogate", "mlp")

Action = tuple[int, int, int, int, int]


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class SeedLifecycleEnv(gym.Env[NDArray[np.float32], NDArray[np.int64]]):
    """Grow, blend, keep or remove seeds in a training host's slots, one epoch per step.

    Episodes last exactly ``max_epochs`` steps and end with ``terminated=True``: the end
    of host training is part of the task (the terminal accuracy bonus is paid then), not
    a time limit, so there is nothing to bootstrap past it.
    """

    # "action_heads": how the MultiDiscrete heads depend on the op (the format is in
    # esper.simic.assembly): agents build factored, op-conditioned heads from it.
    metadata: dict[str, Any] = {  # noqa: RUF012 (gymnasium's API)
        "render_modes": [],
        "action_heads": {
            "names": HEAD_NAMES,
            "relevance": HEAD_RELEVANCE.tolist(),
            "conditional": "slot",
        },
    }

    def __init__(
        self,
        difficulty: str = "medium",
        num_slots: int = DEFAULT_NUM_SLOTS,
        max_epochs: int = DEFAULT_MAX_EPOCHS,
        reward: str = "shaped",
        host: str | Host = "surrogate",
        mlp_task: str = "baseline",
    ) -> None:
        _check_choice("difficulty", difficulty, tuple(DIFFICULTIES))
        _check_positive_int("num_slots", num_slots)
        _check_positive_int("max_epochs", max_epochs)
        _check_choice("reward", reward, REWARD_MODES)
        if isinstance(host, str):
            _check_choice("host", host, HOSTS)
        _check_choice("mlp_task", mlp_task, MLP_TASK_NAMES)
        if host == "surrogate" and mlp_task != "baseline":
            raise ValueError(f"mlp_task={mlp_task!r} is the real host's task: set host='mlp'")
        if host == "surrogate" and reward == "paired":
            raise ValueError(
                "reward='paired' pays against a twin host trained without seeds, which only "
                "the real host trains: set host='mlp'"
            )
        self.difficulty = difficulty
        self.num_slots = num_slots
        self.max_epochs = max_epochs
        self.reward_mode = reward
        self.host: Host
        if not isinstance(host, str):
            self.host = host  # one row of a batched host (:mod:`.vector`)
        elif host == "mlp":
            from esper.simic.envs.seed_lifecycle.mlp_host import (  # noqa: PLC0415
                MLP_TASKS,
                MlpHost,
            )

            self.host = MlpHost(num_slots, MLP_TASKS[mlp_task], twin=reward == "paired")
        else:
            self.host = SurrogateHost(DIFFICULTIES[difficulty], num_slots)
        self.action_space = spaces.MultiDiscrete(
            [NUM_OPS, num_slots, NUM_BLUEPRINTS, len(TEMPO_EPOCHS), len(ALPHA_TARGETS)]
        )
        self.observation_space = spaces.Box(
            -1.0, 1.0, (observation_size(num_slots, NUM_BLUEPRINTS),), np.float32
        )
        self.val_accuracy = 0.0
        self.val_loss = 0.0
        self.all_off_accuracy = 0.0
        self.committed_accuracy = 0.0
        self._start_episode()

    def _start_episode(self) -> None:
        """Empty slots, no history: the state before the first epoch."""
        self._seeds: list[Seed | None] = [None] * self.num_slots
        self._mask = compute_action_mask(self._seeds, NUM_BLUEPRINTS)
        self.epoch = 0
        # Observation features of up to HISTORY_LENGTH previous epochs, oldest first.
        self._loss_history: list[float] = []
        self._accuracy_history: list[float] = []
        # Each slot's alpha and seed size at the previous step, for the alpha shock.
        self._prev_alpha = [0.0] * self.num_slots
        self._prev_params = [0] * self.num_slots
        self._last_op = Op.WAIT
        self._last_success = True
        self._counts = {"germinated": 0, "pruned": 0}
        # ESCROW: each slot's unrealised credit, and the accuracies its progress is read on.
        self._escrow_credit = [0.0] * self.num_slots
        self._recent_accuracy: deque[float] = deque(maxlen=ESCROW_STABLE_WINDOW)

    @property
    def seeds(self) -> tuple[Seed | None, ...]:
        """The slots' seeds (None = empty); read-only views for reference policies."""
        return tuple(self._seeds)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start host training; the first observation is taken after epoch 1."""
        self.begin_episode(seed=seed, options=options)
        self._run_epoch()
        obs, mask = self.observe()
        return obs, {"action_mask": mask}

    def step(
        self, action: NDArray[np.int64] | list[int] | tuple[int, ...]
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        """Score the action on this epoch's measurements, run it, tick clocks, train on."""
        reward, terminated, info = self.act(action)
        if not terminated:
            self._run_epoch()
        obs, info["action_mask"] = self.observe()
        return obs, reward, terminated, False, info

    # The phases of reset and step, public so that the batched vector env
    # (:mod:`.vector`) can run every env's host epoch as one computation between them.

    def begin_episode(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> None:
        """Fresh host and empty slots, before the first epoch."""
        super().reset(seed=seed, options=options)
        self.host.reset(self.np_random, self.max_epochs)
        self._start_episode()

    def act(
        self, action: NDArray[np.int64] | list[int] | tuple[int, ...]
    ) -> tuple[float, bool, dict[str, Any]]:
        """Score and run ``action`` and tick the clocks: (reward, terminated, info)."""
        values = action.tolist() if isinstance(action, np.ndarray) else action
        if len(values) != len(HEAD_NAMES):
            raise ValueError(f"action needs {len(HEAD_NAMES)} heads, got {values}")
        op_id, slot_id, blueprint, tempo, alpha_target = map(int, values)
        act: Action = (op_id, slot_id, blueprint, tempo, alpha_target)
        legal = is_legal(act, self._mask, self.num_slots)
        # Masked-out actions run exactly as WAIT; WAIT's slot is the first one.
        op = Op(act[0]) if legal else Op.WAIT
        slot = act[1] if op != Op.WAIT else 0
        components = self._reward_components(op, slot)
        reward = sum(components.values())
        transitions: list[Transition] = []
        success = self._execute(op, slot, act, transitions)
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._seeds[i] = tick(seed, i, transitions)
            if self._seeds[i] is None or self._seeds[i].stage not in LIVE_STAGES:
                self._escrow_credit[i] = 0.0  # L1473: a slot without a seed holds no credit
        self._last_op, self._last_success = op, success
        info: dict[str, Any] = {
            "illegal_action": not legal,
            "action_success": success,
            "reward_components": components,
            "transitions": transitions,
            "epoch": self.epoch,
            "accuracy": self.val_accuracy,
        }
        terminated = self.epoch >= self.max_epochs
        if terminated:
            info.update(self._episode_summary())
        return reward, terminated, info

    def observe(self) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """The observation and the action mask of the current state."""
        self._mask = compute_action_mask(self._seeds, NUM_BLUEPRINTS)
        return self._observe(), np.array(self._mask, dtype=bool)

    def _execute(self, op: Op, slot: int, act: Action, log: list[Transition]) -> bool:
        """Run a legal op on ``slot``; returns whether it took effect (gates may refuse)."""
        if op == Op.WAIT:
            return True
        if op == Op.GERMINATE:
            self._seeds[slot] = Seed(
                blueprint=act[2],
                tempo=act[3],
                blend_target=ALPHA_TARGETS[act[4]],
                acc_at_germination=self.val_accuracy,
            )
            self.host.germinate(slot, act[2])
            log.append((slot, SeedStage.DORMANT, SeedStage.GERMINATED))
            self._counts["germinated"] += 1
            return True
        seed = self._seeds[slot]
        if seed is None:
            raise RuntimeError(f"{op.name} passed the mask on empty slot {slot}")
        if op == Op.ADVANCE:
            return advance(seed, slot, log)
        if op == Op.FOSSILIZE:
            return fossilize(seed, slot, log)
        if op == Op.PRUNE:
            prune(seed, slot, log)
            self.host.remove(slot)
            self._counts["pruned"] += 1
            return True
        set_alpha_target(seed, slot, act[4], log)
        return True

    def _run_epoch(self) -> None:
        """Train and validate one host epoch; record it on every live seed."""
        health = self.host.train_epoch(self._seeds)
        self.record_epoch(health, self.host.evaluate(self._seeds))

    def record_epoch(self, health: Sequence[float | None], evaluation: Evaluation) -> None:
        """Count one host epoch and store its measurements on the env and its seeds."""
        self.epoch += 1
        for seed, value in zip(self._seeds, health, strict=True):
            if seed is not None and value is not None:
                seed.previous_gradient_health = seed.gradient_health
                seed.gradient_health = value
                seed.exploding = value < EXPLODING_HEALTH
        if self.epoch > 1:
            for history, value in (
                (self._loss_history, loss_feature(self.val_loss)),
                (self._accuracy_history, accuracy_feature(self.val_accuracy)),
            ):
                history.append(value)
                if len(history) > HISTORY_LENGTH:
                    del history[0]
        self.val_accuracy = evaluation.accuracy
        self._recent_accuracy.append(evaluation.accuracy)
        self.val_loss = evaluation.loss
        self.all_off_accuracy = evaluation.all_off_accuracy
        self.committed_accuracy = evaluation.committed_accuracy
        for seed, off in zip(self._seeds, evaluation.slot_off_accuracy, strict=True):
            if seed is not None and seed.stage in LIVE_STAGES:
                seed.record_epoch(evaluation.accuracy)
                if off is not None:
                    seed.record_contribution(evaluation.accuracy - off)

    def _reward_components(self, op: Op, slot: int) -> dict[str, float]:
        """The step's reward terms, from this epoch's measurements (before the action)."""
        last = self.epoch == self.max_epochs
        if self.reward_mode == "sparse":
            return sparse_reward(
                self.committed_accuracy, self._fossilized_params(), self.epoch, self.max_epochs
            )
        if self.reward_mode == "paired":
            # __init__ refuses PAIRED on the surrogate; the twin is validated at the end only.
            twin = cast(TwinHost, self.host).twin_accuracy() if last else 0.0
            return paired_reward(
                self.committed_accuracy,
                twin,
                self._fossilized_params(),
                self.epoch,
                self.max_epochs,
            )
        effective_params, shock, occupied, fossilized = self._capacity_inputs()
        target = self._seeds[slot]
        live = target if target is not None and target.stage in LIVE_STAGES else None
        cf = self.val_accuracy - self.all_off_accuracy
        escrow = None
        if self.reward_mode == "escrow" and live is not None:
            stable_acc = min(self._recent_accuracy)
            credit = self._escrow_credit[slot]
            escrow = escrow_attribution(op, live, live.contribution, cf, stable_acc, credit)
            self._escrow_credit[slot] = escrow.credit
        components = shaped_reward(
            op,
            live,
            None if live is None else live.contribution,
            cf,
            self.val_accuracy,
            self.epoch,
            self.max_epochs,
            effective_params,
            shock,
            self.host.host_params,
            occupied,
            fossilized,
            germination_clawback(self._seeds) if last else 0.0,
            escrow=escrow,
        )
        if self.reward_mode == "escrow":
            components["escrow_forfeit"] = -self._held_credit() if last else 0.0
        return components

    def _held_credit(self) -> float:
        """ESCROW credit of seeds still in play at the end, which the run forfeits (L989-1009)."""
        return sum(
            credit
            for credit, seed in zip(self._escrow_credit, self._seeds, strict=True)
            if seed is not None and seed.stage in LIVE_STAGES - {SeedStage.FOSSILIZED}
        )

    def _capacity_inputs(self) -> tuple[float, float, int, int]:
        """(rented params, alpha-shock sum, occupied slots, fossilized seeds).

        ``simic/training/helpers.py`` L107-166 and ``action_execution.py`` L866-892: slots
        from BLENDING on pay a base rent of 0.39% of the host plus alpha * seed params; the
        shock sums squared alpha changes since the last step, weighted by seed / host
        params; every slot holding a seed except a PRUNED one counts as occupied.
        """
        host_params = self.host.host_params
        denom = max(host_params, RENT_HOST_PARAMS_FLOOR)
        effective = shock = 0.0
        occupied = fossilized = 0
        for slot, seed in enumerate(self._seeds):
            alpha, params = 0.0, 0
            if seed is not None:
                if seed.stage in LIVE_STAGES:
                    alpha, params = seed.alpha, self.host.seed_params(slot)
                    if seed.stage in RENTED_STAGES:
                        effective += BASE_SLOT_RENT_RATIO * host_params + alpha * params
                if seed.stage == SeedStage.FOSSILIZED:
                    fossilized += 1
                occupied += seed.stage != SeedStage.PRUNED
            prev_params = self._prev_params[slot]
            if prev_params > 0:
                shock += (alpha - self._prev_alpha[slot]) ** 2 * prev_params / denom
            self._prev_alpha[slot], self._prev_params[slot] = alpha, params
        return effective, shock, occupied, fossilized

    def _observe(self) -> NDArray[np.float32]:
        return build_observation(
            epoch=self.epoch,
            max_epochs=self.max_epochs,
            loss=self.val_loss,
            accuracy=self.val_accuracy,
            loss_features=self._loss_history,
            accuracy_features=self._accuracy_history,
            seeds=self._seeds,
            last_op=self._last_op,
            last_success=self._last_success,
            num_blueprints=NUM_BLUEPRINTS,
        )

    def _fossilized_params(self) -> int:
        return sum(
            self.host.seed_params(i)
            for i, seed in enumerate(self._seeds)
            if seed is not None and seed.stage == SeedStage.FOSSILIZED
        )

    def _episode_summary(self) -> dict[str, Any]:
        """What reports need at the end of an episode."""
        fossilized_blueprints = [
            BLUEPRINTS[seed.blueprint].name
            for seed in self._seeds
            if seed is not None and seed.stage == SeedStage.FOSSILIZED
        ]
        return {
            "final_accuracy": self.val_accuracy,
            "final_host_accuracy": self.all_off_accuracy,
            "final_committed_accuracy": self.committed_accuracy,
            "fossilized_blueprints": fossilized_blueprints,
            "fossilized_params": self._fossilized_params(),
            "germinated_seeds": self._counts["germinated"],
            "pruned_seeds": self._counts["pruned"],
        }
