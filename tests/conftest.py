"""How pytest-xdist shares the suite out (`make integration` runs ``pytest -n N --dist
loadscope`` over tests/integration and tests/gateway): every module's tests stay together
on one worker, so its module-scoped fixtures (a converged sandbox above all) are made
once; the modules in ``APART`` give each test to whichever worker is free (each Molecule
scenario has a sandbox of its own), and those in ``TOGETHER`` run as one unit.

Units start longest first (``FIRST``, measured in CI), so that no long one starts last
while the other worker sits idle; the gateway's tests, a minute of small modules, go
last and fill the end of the run.

This is a scheduler of our own because ``--dist loadgroup`` groups nothing with pytest
9.2: pytest-xdist 3.8 marks a test's group in ``item._nodeid``, which pytest no longer
reads, so every test was scheduled alone and a module's sandbox was made on each worker.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

APART = ("tests/integration/test_molecule.py",)
# Modules whose path starts with a key run as one unit, in collection order, with the
# modules of the same value: cloud workers join test_cli_up.py's cluster, and the
# browser's walk goes through its web app, once its tests are done
# (tests/integration/cli_cluster.py); the gateway's modules share its session's
# llama.cpp servers.
TOGETHER = {
    "tests/integration/test_cloud_join.py": "tests/integration/test_cli_up.py",
    "tests/integration/test_web_browser.py": "tests/integration/test_cli_up.py",
    "tests/gateway/": "tests/gateway",
}
# Longest first (in CI on three workers, test_site.py about 600 s, test_cli_up.py with
# the browser's walk 520 s, the Molecule scenarios 440 s); the rest in collection
# order, the gateway's last.
FIRST = (
    "tests/integration/test_site.py",
    "tests/integration/test_cli_up.py",
    "tests/integration/test_molecule.py",
)
LAST = ("tests/gateway",)


def work_unit(nodeid: str) -> str:
    """The unit a test is scheduled in: its module, a module it runs with, or itself."""
    module = nodeid.split("::", 1)[0]
    if module in APART:
        return nodeid
    return next((unit for start, unit in TOGETHER.items() if module.startswith(start)), module)


def start_rank(nodeid: str) -> int:
    unit = work_unit(nodeid).split("::", 1)[0]
    if unit in FIRST:
        return FIRST.index(unit)
    return len(FIRST) + 1 if unit in LAST else len(FIRST)


class ModuleScheduling(LoadScopeScheduling):
    """xdist's loadscope (a work unit per scope), with a module as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    if config.getvalue("dist") == "loadscope":
        # The order pytest_collection_modifyitems gives, not xdist's largest-unit-first.
        config.option.loadscopereorder = False
        return ModuleScheduling(config, log)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # xdist's workers collect (the controller does not, and a worker's dist option reads
    # "no"); the scheduler hands units out in the order they collected. A stable sort:
    # each module's tests keep their order (test_site.py's matter).
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: start_rank(item.nodeid))
