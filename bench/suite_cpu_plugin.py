"""pytest plugin of bench/suite_cpu.py: each pytest-xdist worker joins a cgroup (v2) of
its own, so that the CPU time of everything it starts (ansible-playbook, the CLI, local
servers) is counted there, and each test's share is written as one JSON line.

Loaded with ``-p bench.suite_cpu_plugin``, ``CLUSTERAI_SUITE_CPU=DIR`` (the run's cgroup
directory) and ``CLUSTERAI_SUITE_CPU_LOG=FILE`` (where the lines go: a cgroup directory
takes no file of ours). Without them it does nothing. Sandbox hosts leave the worker's
cgroup for their own (clusterai-sandbox/...); suite_cpu.py counts those.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

_state: dict[str, Any] = {}


def _usage_s(cgroup: Path) -> float:
    with (cgroup / "cpu.stat").open() as stat:
        return int(stat.readline().split()[1]) / 1e6  # usage_usec


def pytest_configure(config: Any) -> None:
    run = os.environ.get("CLUSTERAI_SUITE_CPU")
    log = os.environ.get("CLUSTERAI_SUITE_CPU_LOG")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not run or not log or not worker or "cgroup" in _state:
        return
    cgroup = Path(run) / worker
    cgroup.mkdir(exist_ok=True)
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    _state.update(cgroup=cgroup, log=Path(log), worker=worker)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    if "cgroup" in _state:
        _state[nodeid] = (time.time(), _usage_s(_state["cgroup"]))


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    if "cgroup" not in _state or nodeid not in _state:
        return
    started, used = _state.pop(nodeid)
    line = {
        "test": nodeid,
        "worker": _state["worker"],
        "start": started,
        "wall_s": round(time.time() - started, 2),
        "cpu_s": round(_usage_s(_state["cgroup"]) - used, 2),
    }
    with _state["log"].open("a") as log:
        log.write(json.dumps(line) + "\n")
