from pathlib import Path

import pytest

from esper.simic.testing import compose_settings

HERE = Path(__file__).parent


# Per integration test, against hangs. The slowest took 494 s beside the unit tests'
# worker on a 2-core Xeon, and such machines vary 2.5x; 900 s is the unit tests' limit.
TIMEOUT_S = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every integration test in one xdist group, so one worker runs them in turn: the
    learning tests already train their seeds in parallel processes, and two at once on a
    two-core machine would only slow both."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.xdist_group("integration"))
            item.add_marker(pytest.mark.timeout(TIMEOUT_S))


@pytest.fixture
def quiet() -> list[str]:
    """Integration runs log locally only and print no progress."""
    return ["logger=none", "trainer.progress=off"]


__all__ = ["compose_settings"]
