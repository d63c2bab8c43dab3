"""Action masks, their flat layout, causal head relevance and the legality of an action.

Masks block only impossible actions, as Esper's do (``tamiyo/policy/action_masks.py``
L1-22, L148-359): a legal ADVANCE may still fail its gate at run time.

Flat layout of ``info["action_mask"]`` (dtype bool, length ``mask_size(K, B)``)::

    [ op (6) | slot_by_op (6 * K, row = op, col = slot) | blueprint (B) | tempo (3) |
      alpha_target (3) ]

The WAIT row of ``slot_by_op`` allows slot 0 only, since Esper fixes WAIT's slot to the
first slot (``tamiyo/networks/factored_lstm.py`` L1085-1190). A row is all False exactly
when its op is illegal.
"""

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray

from esper.simic.envs.seed_lifecycle.constants import (
    ADVANCEABLE_STAGES,
    ALPHA_TARGETS,
    BLOCKS_GERMINATION,
    HEAD_NAMES,
    MIN_PRUNE_AGE,
    NUM_OPS,
    PRUNABLE_STAGES,
    RETARGETABLE_STAGES,
    TEMPO_EPOCHS,
    AlphaMode,
    Op,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.lifecycle import Seed

NUM_TEMPO: Final = len(TEMPO_EPOCHS)
NUM_ALPHA_TARGETS: Final = len(ALPHA_TARGETS)
# Offsets of the flat mask's parts that do not depend on K or B.
OP_MASK_OFFSET: Final = 0
SLOT_BY_OP_OFFSET: Final = NUM_OPS


def _relevance_table() -> NDArray[np.bool_]:
    """HEAD_RELEVANCE[op, head]: whether ``head`` affects what ``op`` does.

    Esper's ``leyline/causal_masks.py`` L28-63 without the dropped style/speed/curve heads:
    WAIT uses op only; GERMINATE every head; SET_ALPHA_TARGET op, slot, alpha_target;
    PRUNE, FOSSILIZE and ADVANCE op and slot. A factored PPO should zero the log-prob and
    entropy of irrelevant heads; legality is judged on relevant heads only.
    """
    used = {
        Op.WAIT: ("op",),
        Op.GERMINATE: HEAD_NAMES,
        Op.SET_ALPHA_TARGET: ("op", "slot", "alpha_target"),
        Op.PRUNE: ("op", "slot"),
        Op.FOSSILIZE: ("op", "slot"),
        Op.ADVANCE: ("op", "slot"),
    }
    table = np.array([[head in used[op] for head in HEAD_NAMES] for op in Op], dtype=bool)
    table.flags.writeable = False
    return table


HEAD_RELEVANCE: Final = _relevance_table()


class ActionMask(NamedTuple):
    """The flat mask split into views, one per head (no copies)."""

    op: NDArray[np.bool_]  # [6]
    slot_by_op: NDArray[np.bool_]  # [6, K]
    blueprint: NDArray[np.bool_]  # [B]
    tempo: NDArray[np.bool_]  # [3]
    alpha_target: NDArray[np.bool_]  # [3]


def mask_size(num_slots: int, num_blueprints: int) -> int:
    """Length of the flat mask for K slots and B blueprints."""
    return NUM_OPS + NUM_OPS * num_slots + num_blueprints + NUM_TEMPO + NUM_ALPHA_TARGETS


def split_action_mask(flat: NDArray[np.bool_], num_slots: int, num_blueprints: int) -> ActionMask:
    """Split a flat mask of shape [..., D] (one env or a stacked batch) into per-head views."""
    bp_start = SLOT_BY_OP_OFFSET + NUM_OPS * num_slots
    tempo_start = bp_start + num_blueprints
    alpha_start = tempo_start + NUM_TEMPO
    if flat.shape[-1] != alpha_start + NUM_ALPHA_TARGETS:
        raise ValueError(
            f"mask has {flat.shape[-1]} entries, expected {alpha_start + NUM_ALPHA_TARGETS} "
            f"for num_slots={num_slots}, num_blueprints={num_blueprints}"
        )
    return ActionMask(
        op=flat[..., OP_MASK_OFFSET:NUM_OPS],
        slot_by_op=flat[..., SLOT_BY_OP_OFFSET:bp_start].reshape(
            (*flat.shape[:-1], NUM_OPS, num_slots)
        ),
        blueprint=flat[..., bp_start:tempo_start],
        tempo=flat[..., tempo_start:alpha_start],
        alpha_target=flat[..., alpha_start:],
    )


def compute_action_mask(seeds: Sequence[Seed | None], num_blueprints: int) -> list[bool]:
    """The flat mask for the slots' current states (a list: cheap to index and to copy)."""
    num_slots = len(seeds)
    rows = [[False] * num_slots for _ in range(NUM_OPS)]
    rows[Op.WAIT][0] = True
    blocks_germination = False
    retargetable = False
    for slot, seed in enumerate(seeds):
        if seed is None:
            rows[Op.GERMINATE][slot] = True
            continue
        stage = seed.stage
        blocks_germination = blocks_germination or stage in BLOCKS_GERMINATION
        holds = seed.controller.mode == AlphaMode.HOLD
        if stage in ADVANCEABLE_STAGES:
            rows[Op.ADVANCE][slot] = True
        if stage == SeedStage.HOLDING:
            rows[Op.FOSSILIZE][slot] = True
        if stage in PRUNABLE_STAGES and seed.epochs_total >= MIN_PRUNE_AGE and holds:
            rows[Op.PRUNE][slot] = True
        if stage in RETARGETABLE_STAGES and holds:
            rows[Op.SET_ALPHA_TARGET][slot] = True
            retargetable = True
    if blocks_germination:  # seeds develop one at a time (Esper's D3 rule)
        rows[Op.GERMINATE] = [False] * num_slots
    flat = [any(row) for row in rows]
    for row in rows:
        flat += row
    flat += [True] * (num_blueprints + NUM_TEMPO)
    # alpha_target matters only to GERMINATE and SET_ALPHA_TARGET; otherwise Esper pins it
    # to FULL so the head stays well defined (action_masks.py L340-344).
    alpha_open = flat[Op.GERMINATE] or retargetable
    flat += [alpha_open] * (NUM_ALPHA_TARGETS - 1)
    flat.append(True)
    return flat


# HEAD_RELEVANCE as nested tuples, for fast per-step legality checks.
_RELEVANT: Final = tuple(tuple(bool(v) for v in row) for row in HEAD_RELEVANCE)


def is_legal(action: tuple[int, int, int, int, int], flat: Sequence[bool], num_slots: int) -> bool:
    """Whether every head that ``action``'s op uses takes a value the flat mask allows."""
    op = action[0]
    if not 0 <= op < NUM_OPS or not flat[op]:
        return False
    bp_start = SLOT_BY_OP_OFFSET + NUM_OPS * num_slots
    tempo_start = len(flat) - NUM_TEMPO - NUM_ALPHA_TARGETS
    # (index into the action, head size, offset of the head's mask in ``flat``)
    heads = (
        (1, num_slots, SLOT_BY_OP_OFFSET + op * num_slots),
        (2, tempo_start - bp_start, bp_start),
        (3, NUM_TEMPO, tempo_start),
        (4, NUM_ALPHA_TARGETS, tempo_start + NUM_TEMPO),
    )
    for head, size, offset in heads:
        value = action[head]
        if _RELEVANT[op][head] and not (0 <= value < size and flat[offset + value]):
            return False
    return True
