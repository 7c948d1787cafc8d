"""The import contracts of pyproject.toml hold, and each one breaks on a violating import.

Each case copies the package beside the project's configuration into a temporary
directory, adds one import that the contract forbids, and runs ``lint-imports`` there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "clusterai_runner"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# contract name -> (module to change, the violating line)
VIOLATIONS = {
    "The store imports nothing of ours but errors": (
        "store/hosts.py",
        "import clusterai_runner.usecases.runs",
    ),
    "The gateway never imports Ansible, click, the use cases or the adapters": (
        "gateway/pool.py",
        "import click",
    ),
    "The web app acts through the use cases: no Ansible, adapters, CLI or sandbox": (
        "web/runs.py",
        "import clusterai_runner.adapters.ansible",
    ),
    "The autoscaler's policy and configuration are pure: nothing of ours but errors": (
        "autoscaler/policy.py",
        "import clusterai_runner.store",
    ),
    "Only the ansible-runner adapter imports ansible_runner": (
        "usecases/converge.py",
        "import ansible_runner",
    ),
    "Only the AWS adapter imports boto3": ("usecases/scale.py", "import boto3"),
    "The model store imports the standard library alone": (
        "model_store.py",
        "import yaml",
    ),
}


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        PACKAGE, tmp_path / "clusterai_runner", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_every_contract_has_a_violation_case() -> None:
    assert sorted(str(c["name"]) for c in _contracts()) == sorted(VIOLATIONS)


def test_the_store_contract_forbids_every_other_part_of_the_package() -> None:
    (store,) = [c for c in _contracts() if c["name"] == next(iter(VIOLATIONS))]
    parts = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    allowed = {"__init__", "__main__", "errors", "store"}
    forbidden = {str(m).removeprefix("clusterai_runner.") for m in store["forbidden_modules"]}  # type: ignore[attr-defined]
    assert parts - allowed == forbidden - {"__main__"}


def test_the_package_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(VIOLATIONS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize("contract", sorted(VIOLATIONS))
def test_a_violating_import_breaks_the_contract(tmp_path: Path, contract: str) -> None:
    root = _copy(tmp_path)
    module, line = VIOLATIONS[contract]
    path = root / "clusterai_runner" / module
    text = path.read_text()
    marker = "from __future__ import annotations\n"
    path.write_text(text.replace(marker, f"{marker}\n{line}  # noqa\n", 1))
    result = _lint(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
