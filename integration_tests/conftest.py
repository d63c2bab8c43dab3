from pathlib import Path

import pytest

from esper.simic.testing import compose_settings

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every integration test in one xdist group, so one worker runs them in turn: the
    learning tests already train their seeds in parallel processes, and two at once on a
    two-core machine would only slow both (and near their timeouts on a slow one)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.xdist_group("integration"))


@pytest.fixture
def quiet() -> list[str]:
    """Integration runs log locally only and print no progress."""
    return ["logger=none", "trainer.progress=off"]


__all__ = ["compose_settings"]
