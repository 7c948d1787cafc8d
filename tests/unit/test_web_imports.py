"""The control host's web app runs in a venv of its own (roles/web/files/requirements.txt):
what its entry point imports must not need a package only the gateway, the CLI or the
autoscaler installs. Imported here with those packages made unimportable."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO

# Installed for the CLI, the gateway or the autoscaler, not in the web app's venv.
ABSENT = ("aiohttp", "redis", "ansible_runner", "ansible", "asyncssh", "boto3", "openai")

PROGRAM = f"""
import importlib.abc, sys

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


def test_the_web_apps_entry_point_imports_without_the_gateways_packages() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
