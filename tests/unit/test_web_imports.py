"""The control host's web app runs in a venv of its own (roles/web/files/requirements.txt)
over the parts of the package its role copies (roles/web/vars/main.yml): what its entry
point imports must not need a package only the gateway, the CLI or the autoscaler
installs, nor a file the role does not copy. Imported here with those packages made
unimportable, from a copy of just those parts; the autoscaler's service likewise from
the parts its role copies."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

# Installed for the CLI, the gateway or the autoscaler, not in the web app's venv.
ABSENT = ("aiohttp", "redis", "ansible_runner", "ansible", "asyncssh", "boto3", "openai",
          "ruamel")  # fmt: skip

# The copy, not the repository: the editable install's finder is taken out first.
PRELUDE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path
                    if not str(getattr(f, "__module__", "")).startswith("__editable__")]
sys.path.insert(0, ".")
import clusterai_runner
assert clusterai_runner.__file__.startswith(sys.argv[1]), clusterai_runner.__file__
"""

PROGRAM = (
    PRELUDE
    + f"""
import importlib.abc

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the web venv)")
        return None

sys.meta_path.insert(0, Absent())
from clusterai_runner.gateway.config import parse_listen
from clusterai_runner.web import create_app, credential_path
from clusterai_runner.web.server import serve
import clusterai_runner.web.__main__
"""
)


def copied(role: str, tmp_path: Path) -> Path:
    """The package as the role's python_app step lays it out on the host: its source
    directories and top-level files, nothing else."""
    names = yaml.safe_load((REPO / "roles" / role / "vars" / "main.yml").read_text())
    package = tmp_path / "lib" / "clusterai_runner"
    package.mkdir(parents=True)
    for folder in names[f"_{role}_source_dirs"]:
        shutil.copytree(REPO / "clusterai_runner" / folder, package / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for file in names[f"_{role}_source_files"]:
        shutil.copy(REPO / "clusterai_runner" / file, package / file)
    return package.parent


def test_the_web_apps_entry_point_imports_without_the_gateways_packages(tmp_path: Path) -> None:
    lib = copied("web", tmp_path)
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(lib)], cwd=lib,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("role", ["autoscaler"])
def test_a_services_entry_point_imports_from_the_files_its_role_copies(
    tmp_path: Path, role: str
) -> None:
    lib = copied(role, tmp_path)
    program = PRELUDE + "import clusterai_runner.cli, clusterai_runner.cli.autoscale\n"
    done = subprocess.run([sys.executable, "-c", program, str(lib)], cwd=lib,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
