import pytest

from esper.simic.testing import TINY_OVERRIDES


@pytest.fixture
def tiny() -> list[str]:
    """Overrides that shrink any run to a smoke test."""
    return list(TINY_OVERRIDES)
