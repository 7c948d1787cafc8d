"""pytest-xdist's groups: every module's tests stay together on one worker (its
module-scoped fixtures, a converged sandbox above all, are made once), as with
``--dist loadfile``; a test may name a group of its own to run apart from its module
(each Molecule scenario, which has a sandbox of its own). `make integration` runs
``pytest -n N --dist loadgroup``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
