"""Normalised scores for envs that publish reference returns.

``esper/SeedLifecycle-v0`` scores a return as ``(R - R_random) / (R_heuristic -
R_random)``: 0 is random play, 1 is Esper's heuristic controller. The reference
table was measured at the default slots, episode length and host, so other
settings get no score rather than a misleading one; so does the ESCROW reward,
under which the heuristic scores below random play. The real host (``host="mlp"``) has
its own tables for SPARSE and PAIRED on its impaired task; on its baseline task waiting
beats the heuristic, and the score would divide by a negative gap.
"""

from collections.abc import Callable

from esper.simic.settings import EnvConfig

SEED_LIFECYCLE_ID = "esper/SeedLifecycle-v0"
# Constructor arguments the reference table was measured with (docs/seed_lifecycle.md).
_REFERENCE_SETTINGS = {"num_slots": 3, "max_epochs": 40}


def reference_score(env: EnvConfig) -> Callable[[float], float] | None:
    """The function that normalises an episode return of ``env``, or None if it has none."""
    if env.id != SEED_LIFECYCLE_ID:
        return None
    kwargs = dict(env.kwargs)
    if any(kwargs.get(key, value) != value for key, value in _REFERENCE_SETTINGS.items()):
        return None
    # Imported here: only runs on this env pay for loading its package.
    from esper.simic.envs.seed_lifecycle import (  # noqa: PLC0415
        REAL_HOST_REFERENCE_RETURNS_BY_REWARD,
        REFERENCE_RETURNS_BY_REWARD,
        normalized_score,
        real_host_normalized_score,
    )

    difficulty = kwargs.get("difficulty", "medium")
    reward = kwargs.get("reward", "shaped")
    if kwargs.get("host", "surrogate") == "mlp":
        impaired = kwargs.get("mlp_task", "baseline") == "impaired"
        if not impaired or reward not in REAL_HOST_REFERENCE_RETURNS_BY_REWARD:
            return None
        return lambda episode_return: real_host_normalized_score(episode_return, reward)
    if reward not in REFERENCE_RETURNS_BY_REWARD:
        return None
    return lambda episode_return: normalized_score(episode_return, difficulty, reward)
