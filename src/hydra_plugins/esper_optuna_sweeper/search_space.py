"""Hydra's sweep syntax (``choice``, ``range``, ``interval``, ``tag(log, ...)``) as Optuna
distributions."""

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


def distribution(override: Override) -> BaseDistribution:
    """The distribution of one sweep override, e.g. ``lr=tag(log, interval(1e-4, 1e-2))``."""
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if any(isinstance(x, float) for x in (start, stop, step)):
            return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
        # Hydra's range excludes its stop, Optuna's high is its last value.
        last = int(start) + int(step) * ((int(stop) - int(start) - 1) // int(step))
        return IntDistribution(int(start), last, step=int(step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(f"{override.input_line}: not a sweep Optuna can sample")


def split_overrides(lines: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
    """(search space, fixed values) of override lines: a sweep override is searched, a plain
    one fixed, and a later line for the same key replaces an earlier one (so a value given
    on the command line takes a key out of the preset's search space)."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
            fixed.pop(key, None)
        else:
            fixed[key] = override.get_value_element_as_str()
            space.pop(key, None)
    return space, fixed
