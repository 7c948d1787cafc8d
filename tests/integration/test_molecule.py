"""The Molecule scenarios, as tests of the suite: each one creates its two sandbox hosts,
converges, checks idempotence, verifies with testinfra and destroys them
(`molecule test -s NAME`, what `make molecule` runs for all of them).

Each scenario's sandbox takes a free address range, so under pytest-xdist each scenario
runs on its own, beside the other modules and scenarios (see tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.sandbox

SCENARIOS = sorted(p.name for p in (REPO / "molecule").iterdir() if (p / "molecule.yml").is_file())


def test_every_scenario_is_run() -> None:
    assert "default" in SCENARIOS and len(SCENARIOS) >= 7


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
        "MOLECULE_NO_LOG": "false",
    }
    done = subprocess.run(
        [str(bin_dir / "molecule"), "test", "-s", scenario],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
