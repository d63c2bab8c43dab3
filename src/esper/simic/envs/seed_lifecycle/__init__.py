"""``esper/SeedLifecycle-v0``: Esper's seed-lifecycle control task, small and fast.

While a host network trains, the controller decides when and where to grow seeds (small
modules) in the host's K slots and moves each through Esper's lifecycle:
GERMINATED -> TRAINING -> BLENDING -> HOLDING -> FOSSILIZED, or PRUNED -> EMBARGOED ->
RESETTING -> empty. One step is one host epoch; everything follows tachyon-beep/esper-lite
@ 2016337e, with durations scaled to a 40-epoch run (see ``docs/seed_lifecycle.md``).

Constructor (also through ``gym.make("esper/SeedLifecycle-v0", **kwargs)``):
``difficulty`` "easy" | "medium" (default) | "hard"; ``num_slots`` K (3); ``max_epochs``
T (40); ``reward`` "shaped" (Esper's contribution reward, default) | "escrow" (its
anti-thrash mode: a seed's attribution is paid once, as credit) | "sparse" | "paired"
(SPARSE minus the accuracy of a twin host trained without seeds; ``host="mlp"`` only);
``host`` "surrogate" (closed-form, default) | "mlp" (a real network trained each
step); ``mlp_task`` "baseline" (default) | "impaired", the real host's synthetic task
(seeds pay only on the impaired one). A bad value raises ValueError naming the argument
and the allowed values.

Episodes last exactly T steps and end with ``terminated=True``, never ``truncated``:
the run ends because host training ends, which is part of the task (the terminal
accuracy bonus is paid on that step), so a critic must not bootstrap past it.

Action space: ``MultiDiscrete([6, K, B, 3, 3])``, heads in the order (op, slot,
blueprint, tempo, alpha_target) with B = 5 blueprints. Op ids (:class:`Op`): WAIT=0,
GERMINATE=1, SET_ALPHA_TARGET=2, PRUNE=3, FOSSILIZE=4, ADVANCE=5. Esper's style,
alpha_speed and alpha_curve heads are dropped: blending uses Esper's default sigmoid
ramp, every alpha ramp lasts the seed's tempo, and PRUNE is instant.

``info["action_mask"]`` (on reset and every step): one flat bool array of length
``12 + 6K + B`` (35 for K=3), the concatenation

    op [6] | slot_by_op [6*K], row-major (row = op, column = slot) | blueprint [B] |
    tempo [3] | alpha_target [3]

:func:`split_action_mask` turns it (or a batch [N, D] of them) into an
:class:`ActionMask` of views. WAIT is always legal and its row allows slot 0 only
(Esper fixes WAIT's slot to the first); a row is empty exactly when its op is illegal.
An action is legal when every head that its op uses (:data:`HEAD_RELEVANCE`, Esper's
causal masks: WAIT uses op; GERMINATE all heads; SET_ALPHA_TARGET op, slot,
alpha_target; PRUNE, FOSSILIZE, ADVANCE op, slot) takes an allowed value; other heads
are ignored. A masked-out action runs exactly as WAIT and sets
``info["illegal_action"]``; it never raises. A legal ADVANCE or FOSSILIZE can still be
refused by a gate at run time (``info["action_success"]`` is then False), as in Esper.

Observation: float32 Box in [-1, 1] of length ``23 + K * (20 + B)`` (98 for K=3), laid
out like Esper's Obs V3 (:mod:`.observation`), -1 marking "not yet known".

Other info keys on every step: ``reward_components`` (dict of floats whose sum is the
reward; :data:`SHAPED_COMPONENTS`, :data:`ESCROW_COMPONENTS`, :data:`SPARSE_COMPONENTS`
or :data:`PAIRED_COMPONENTS`),
``illegal_action``, ``action_success``, ``transitions`` (list of (slot, from_stage,
to_stage)), ``epoch`` (the epoch the action was taken in), ``accuracy`` (that epoch's
validation accuracy, %). On the last step also ``final_accuracy``,
``final_host_accuracy`` (all seeds off), ``final_committed_accuracy`` (only fossilized
seeds on, what SPARSE pays), ``fossilized_blueprints``,
``fossilized_params``, ``germinated_seeds``, ``pruned_seeds``.

Reference policies (:mod:`.policies`) and their mean returns over 1,000 seeds
(:data:`REFERENCE_RETURNS`) give the normalised score
``(R - R_random) / (R_heuristic - R_random)`` (:func:`normalized_score`).
"""

from esper.simic.envs.seed_lifecycle.constants import (
    BLUEPRINTS,
    DIFFICULTIES,
    HEAD_NAMES,
    NUM_BLUEPRINTS,
    Op,
    SeedStage,
)
from esper.simic.envs.seed_lifecycle.env import SeedLifecycleEnv
from esper.simic.envs.seed_lifecycle.lifecycle import VALID_TRANSITIONS
from esper.simic.envs.seed_lifecycle.masks import (
    HEAD_RELEVANCE,
    ActionMask,
    mask_size,
    split_action_mask,
)
from esper.simic.envs.seed_lifecycle.policies import POLICIES, evaluate_policy, run_episode
from esper.simic.envs.seed_lifecycle.reference import (
    REAL_HOST_REFERENCE_RETURNS,
    REAL_HOST_REFERENCE_RETURNS_BY_REWARD,
    REFERENCE_RETURNS,
    REFERENCE_RETURNS_BY_REWARD,
    normalized_score,
    real_host_normalized_score,
)
from esper.simic.envs.seed_lifecycle.reward import (
    ESCROW_COMPONENTS,
    PAIRED_COMPONENTS,
    SHAPED_COMPONENTS,
    SPARSE_COMPONENTS,
)

__all__ = [
    "BLUEPRINTS",
    "DIFFICULTIES",
    "ESCROW_COMPONENTS",
    "HEAD_NAMES",
    "HEAD_RELEVANCE",
    "NUM_BLUEPRINTS",
    "PAIRED_COMPONENTS",
    "POLICIES",
    "REAL_HOST_REFERENCE_RETURNS",
    "REAL_HOST_REFERENCE_RETURNS_BY_REWARD",
    "REFERENCE_RETURNS",
    "REFERENCE_RETURNS_BY_REWARD",
    "SHAPED_COMPONENTS",
    "SPARSE_COMPONENTS",
    "VALID_TRANSITIONS",
    "ActionMask",
    "Op",
    "SeedLifecycleEnv",
    "SeedStage",
    "evaluate_policy",
    "mask_size",
    "normalized_score",
    "real_host_normalized_score",
    "run_episode",
    "split_action_mask",
]
