import pytest

from esper.simic.testing import compose_settings


@pytest.fixture
def quiet() -> list[str]:
    """Integration runs log locally only and print no progress."""
    return ["logger=none", "trainer.progress=off"]


__all__ = ["compose_settings"]
