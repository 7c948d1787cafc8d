"""scripts/ollama_checksums.py reads a release's sha256sum.txt into the role's map."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO

SCRIPT = REPO / "scripts" / "ollama_checksums.py"
AMD = "e9f8789105e7fce5b9d95fffa8ba8f7c44d92c133f9a486e75d77e5236ee4eb1"
ARM = "448084347c40085cb1384877f0d00b2989403bff2590ec1dee3aa4b5002c028c"


def test_prints_the_linux_archives_entry_that_the_role_pins(tmp_path: Path) -> None:
    sums = tmp_path / "sha256sum.txt"
    sums.write_text(
        f"{'1' * 64}  ./ollama-darwin.tgz\n{AMD}  ./ollama-linux-amd64.tgz\n"
        f"{'2' * 64}  ./ollama-linux-amd64-rocm.tgz\n{ARM}  ./ollama-linux-arm64.tgz\n"
    )
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "0.7.0", "--from", str(sums)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    printed = yaml.safe_load(out)
    assert printed == {"0.7.0": {"amd64": AMD, "arm64": ARM}}
    pinned = yaml.safe_load((REPO / "roles/ollama/vars/main.yml").read_text())
    assert pinned["_ollama_checksums"]["0.7.0"] == printed["0.7.0"]


def test_a_file_without_linux_archives_is_an_error(tmp_path: Path) -> None:
    sums = tmp_path / "sha256sum.txt"
    sums.write_text(f"{'1' * 64}  ./ollama-darwin.tgz\n")
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "0.7.0", "--from", str(sums)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == "error: no ollama-linux-*.tgz line in the sha256sum.txt of 0.7.0"
