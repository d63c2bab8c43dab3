import pytest
import torch

from esper.simic.testing import TINY_OVERRIDES


@pytest.fixture
def tiny() -> list[str]:
    """Overrides that shrink any run to a smoke test."""
    return list(TINY_OVERRIDES)


@pytest.fixture
def one_thread():
    """Tiny ops: idle-spinning intra-op threads only slow them on shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
