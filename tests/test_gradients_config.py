"""Config schema, Hydra config group and registry of the gradient collectors."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from esper.simic.config import ConfigError
from esper.simic.gradients import (
    COLLECTORS,
    CollectorConfig,
    CollectorName,
    ForeachCollector,
    FusedCollector,
    LoopCollector,
    NoneCollector,
    build_collector,
)
from esper.simic.testing import compose_settings

CONFIG_GROUP = Path(__file__).resolve().parents[1] / "conf" / "collector"


def test_enum_values_are_the_config_names():
    assert [n.value for n in CollectorName] == ["loop", "foreach", "fused", "none"]


def test_registry_covers_every_name():
    assert set(COLLECTORS) == set(CollectorName)
    expected = {
        CollectorName.loop: LoopCollector,
        CollectorName.foreach: ForeachCollector,
        CollectorName.fused: FusedCollector,
        CollectorName.none: NoneCollector,
    }
    for name, cls in expected.items():
        assert type(build_collector(CollectorConfig(name=name))) is cls


def test_build_accepts_the_string_value():
    config = CollectorConfig(name="loop")  # type: ignore[arg-type]  # an untyped DictConfig
    assert isinstance(build_collector(config), LoopCollector)


@pytest.mark.parametrize(
    ("vanishing", "exploding"), [(1.0, 1.0), (10.0, 1.0), (-1.0, 1.0)], ids=str
)
def test_inconsistent_thresholds_are_rejected(vanishing, exploding):
    overrides = [
        f"collector.vanishing_threshold={vanishing}",
        f"collector.exploding_threshold={exploding}",
    ]
    with pytest.raises(ConfigError, match=r"collector.vanishing_threshold=.* must be >= 0"):
        compose_settings(overrides)


@pytest.mark.parametrize("name", list(CollectorName))
def test_config_group_file_validates_against_the_schema(name):
    path = CONFIG_GROUP / f"{name.value}.yaml"
    merged = OmegaConf.merge(OmegaConf.structured(CollectorConfig), OmegaConf.load(path))
    config = OmegaConf.to_object(merged)
    assert config == CollectorConfig(name=name)  # thresholds stay at the schema defaults
    assert isinstance(build_collector(config), COLLECTORS[name])


def test_thresholds_are_applied_at_materialize():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])  # norm 5
    strict = build_collector(CollectorConfig(vanishing_threshold=6.0, exploding_threshold=7.0))
    lenient = build_collector(CollectorConfig(vanishing_threshold=1.0, exploding_threshold=4.0))
    step = strict.collect_async({"actor": [p]})
    assert strict.materialize([step]).tensors.vanishing_count == 1
    assert lenient.materialize([step]).tensors.exploding_count == 1


def test_detail_is_opt_in():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([0.0, 1.0])
    for detail, measured in ((False, False), (True, True)):
        collector = build_collector(CollectorConfig(detail=detail))
        stats = collector.materialize([collector.collect_async({"actor": [p]})])
        assert (stats.elements is not None) is measured
        assert ("grad/zero_fraction" in stats.as_metrics()) is measured
