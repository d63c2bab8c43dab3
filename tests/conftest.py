import pytest
import torch

from esper.simic.config import compile_unsupported
from esper.simic.testing import TINY_OVERRIDES

needs_compile = pytest.mark.skipif(
    compile_unsupported("cpu") is not None,
    reason=f"agent.compile {compile_unsupported('cpu')}",
)
"""For tests that build the compiled whole step (``agent.compile=true``)."""


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
