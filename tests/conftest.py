"""How pytest-xdist shares the suite out (`make test` runs ``pytest -n N --dist loadscope``
over every test directory, beside lint): every module's tests stay together on one worker,
so its module-scoped fixtures (a converged sandbox above all) are made once; the modules in
``APART`` give each test to whichever worker is free (each Molecule scenario has a sandbox
of its own), and those in ``TOGETHER`` run as one unit.

Units start longest first (``FIRST``, measured in CI), so that no long one starts last
while the other workers sit idle; then the gateway's tests (a minute on one worker), the
rest of the integration modules, and last the unit, store, playbook and cloud tests: some
450 tests of a second or so each, which fill the end of the run while the long units
finish (the machine's CPUs are busy to the end instead of waiting on the last sandbox).
They run at a lower priority (``FILLER_NICENESS``, and so do the processes they start):
on a machine whose CPUs the sandboxes keep busy, they take the CPU time the long units
leave, rather than slowing the longest chains of the run (test_cli_up.py's cluster with
the cloud join and the browser's walk, test_site.py's cluster).

This is a scheduler of our own because ``--dist loadgroup`` groups nothing with pytest
9.2: pytest-xdist 3.8 marks a test's group in ``item._nodeid``, which pytest no longer
reads, so every test was scheduled alone and a module's sandbox was made on each worker.
"""

from __future__ import annotations

import json
import os
import time
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
# Longest first (in CI on three workers: test_cli_up.py with the cloud join and the
# browser's walk about 880 s, test_site.py 790 s, test_autoscaler_service.py 510 s, the
# Molecule scenarios 440 s in all; the first three start together, the scenarios on
# whichever worker is free); then the units starting with each of ``THEN``, in that
# order (the longer modules first); anything else last.
# `CLUSTERAI_TEST_TIMELINE=FILE make test` and scripts/timeline.py show a run's units.
FIRST = (
    "tests/integration/test_site.py",
    "tests/integration/test_cli_up.py",
    "tests/integration/test_autoscaler_service.py",
    "tests/integration/test_molecule.py",
)
THEN = (
    "tests/gateway",
    "tests/integration/",
    "tests/cloud/",
    "tests/playbooks/",
    "tests/store/",
    "tests/unit/",
)

# The units of these directories are the filler; 10 gives them about a tenth of a CPU
# where a process of niceness 0 wants it too.
FILLER = ("tests/cloud/", "tests/playbooks/", "tests/store/", "tests/unit/")
FILLER_NICENESS = 10


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
    later = (i for i, start in enumerate(THEN) if unit.startswith(start))
    return len(FIRST) + next(later, len(THEN))


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    # On an xdist worker as root (who may lower a niceness again): the filler's tests at
    # FILLER_NICENESS, every other test at 0.
    if hasattr(item.config, "workerinput") and os.geteuid() == 0:
        niceness = FILLER_NICENESS if item.nodeid.startswith(FILLER) else 0
        if os.getpriority(os.PRIO_PROCESS, 0) != niceness:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)


# CLUSTERAI_TEST_TIMELINE=FILE: each test's worker, start and end (wall clock, setup and
# teardown included) as a JSON line appended to FILE, for scripts/timeline.py, which
# shows each worker's modules in time: where the run's longest chain lies.
TIMELINE = os.environ.get("CLUSTERAI_TEST_TIMELINE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    started = time.time()
    yield
    if TIMELINE:
        worker = getattr(item.config, "workerinput", {}).get("workerid", "main")
        line = {"worker": worker, "test": item.nodeid, "start": started, "end": time.time()}
        with open(TIMELINE, "a", encoding="utf-8") as timeline:
            timeline.write(json.dumps(line) + "\n")
