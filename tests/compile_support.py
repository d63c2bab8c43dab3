"""The skip marker of tests that build the compiled whole step (``agent.compile=true``).

A module of its own, not ``conftest``: with ``tests/`` and ``integration_tests/`` collected
together, ``import conftest`` finds whichever of their two conftests was imported first.
"""

import pytest

from esper.simic.config import compile_unsupported

needs_compile = pytest.mark.skipif(
    compile_unsupported("cpu") is not None,
    reason=f"agent.compile {compile_unsupported('cpu')}",
)
