"""How pytest-xdist shares the suite out (`make integration` runs ``pytest -n N --dist
loadscope``): every module's tests stay together on one worker, so its module-scoped
fixtures (a converged sandbox above all) are made once; the modules in ``APART`` give
each test to whichever worker is free (each Molecule scenario has a sandbox of its own),
and those in ``TOGETHER`` run with another. Units with the most tests start first.

This is a scheduler of our own because ``--dist loadgroup`` groups nothing with pytest
9.2: pytest-xdist 3.8 marks a test's group in ``item._nodeid``, which pytest no longer
reads, so every test was scheduled alone and a module's sandbox was made on each worker.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

APART = ("tests/integration/test_molecule.py",)
# Modules that share a session fixture one of them changes run as one unit, in collection
# order: test_sandbox.py reads the session's `cluster`, which test_site.py then scales
# out and resets (and the cluster is booted once, not on each worker).
TOGETHER = {"tests/integration/test_sandbox.py": "tests/integration/test_site.py"}


class ModuleScheduling(LoadScopeScheduling):
    """xdist's loadscope (a work unit per scope), with a module as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return nodeid if module in APART else TOGETHER.get(module, module)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    if config.getvalue("dist") == "loadscope":
        return ModuleScheduling(config, log)
    return None
