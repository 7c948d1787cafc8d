"""The Molecule scenarios, as tests of the suite: each one creates its sandbox hosts,
converges, checks idempotence, verifies with testinfra and destroys them
(`molecule test -s NAME`, what `make molecule` runs for all of them, here without the
first destroy: tests/molecule_suite.yml). The default scenario's checks run on
test_site.py's cluster instead (see IN_TEST_SITE).

Each scenario's sandbox takes a free address range, so under pytest-xdist each scenario
runs on its own, beside the other modules and scenarios (see tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, venv_path

pytestmark = pytest.mark.sandbox

SCENARIOS = sorted(p.name for p in (REPO / "molecule").iterdir() if (p / "molecule.yml").is_file())
# The default scenario converges site.yml, as test_site.py does (on three hosts, twice, 0
# changed asserted): the suite converges it there once and runs the scenario's testinfra
# checks on that cluster. `make molecule` runs it as a scenario of its own.
IN_TEST_SITE = "default"


def test_every_scenario_is_run() -> None:
    assert IN_TEST_SITE in SCENARIOS and len(SCENARIOS) >= 7
    site = (REPO / "tests/integration/test_site.py").read_text()
    assert f'"molecule/{IN_TEST_SITE}/tests"' in site


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != IN_TEST_SITE])
def test_molecule_scenario(scenario: str, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": venv_path(),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
        "MOLECULE_NO_LOG": "false",
    }
    configs = ["-c", ".config/molecule/config.yml", "-c", "tests/molecule_suite.yml"]
    done = subprocess.run(
        [str(bin_dir / "molecule"), *configs, "test", "-s", scenario],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
