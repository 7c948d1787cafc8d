"""scripts/wheel_hashes.py: the roles' pinned requirements carry the SHA-256 of their files
(pip runs with --require-hashes on the controller and the hosts), and the script rewrites
a file with them, keeping its comments and order. The download itself needs an index and
is exercised by every converge (tests/controller_cache.yml builds with the hashes)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO

HASHED = [
    REPO / "roles/gateway/files/requirements.txt",
    REPO / "roles/web/files/requirements.txt",
    *sorted((REPO / "roles/llamacpp_server/files").glob("requirements-*.txt")),
]


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheel_hashes", REPO / "scripts/wheel_hashes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", HASHED, ids=lambda p: p.name)
def test_every_pin_of_the_roles_carries_its_hashes(path: Path) -> None:
    entries = script().parse(path.read_text())
    pins = [requirement for _, requirement in entries if requirement]
    assert pins
    logical = re.sub(r"\\\n", " ", path.read_text())
    for pin in pins:
        line = next(x for x in logical.splitlines() if x.strip().startswith(pin + " "))
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})\b", line)
        assert hashes, f"{path.name}: {pin} has no hash (run scripts/wheel_hashes.py)"


def test_a_file_is_rewritten_with_its_hashes_and_keeps_its_comments() -> None:
    module = script()
    text = (
        "# header\n"
        "# second line ending in a backslash \\\n"
        "aiohttp==3.14.5 \\\n    --hash=sha256:" + "0" * 64 + "\n"
        "# why this one\n"
        "Typing_Extensions==4.16.0\n"
        "# trailer\n"
    )
    entries = module.parse(text)
    assert [requirement for _, requirement in entries] == [
        "aiohttp==3.14.5",
        "Typing_Extensions==4.16.0",
        "",
    ]
    hashes = {"aiohttp": ["b" * 64, "a" * 64], "typing-extensions": ["c" * 64]}
    assert module.render(entries, hashes) == (
        "# header\n"
        "# second line ending in a backslash \\\n"
        "aiohttp==3.14.5 \\\n"
        f"    --hash=sha256:{'a' * 64} \\\n"
        f"    --hash=sha256:{'b' * 64}\n"
        "# why this one\n"
        "Typing_Extensions==4.16.0 \\\n"
        f"    --hash=sha256:{'c' * 64}\n"
        "# trailer\n"
    )


def test_a_pin_without_its_files_or_an_unpinned_line_is_an_error() -> None:
    module = script()
    with pytest.raises(SystemExit, match=r"pip fetched no file for redis==8\.1\.0"):
        module.render(module.parse("redis==8.1.0\n"), {})
    with pytest.raises(SystemExit, match="'redis>=8' is not pinned with =="):
        module.parse("redis>=8\n")


@pytest.mark.parametrize(
    ("file", "name"),
    [
        ("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", "numpy"),
        ("typing_extensions-4.16.0-py3-none-any.whl", "typing-extensions"),
        ("llama_cpp_python-0.3.36.tar.gz", "llama-cpp-python"),
    ],
)
def test_a_files_name_gives_its_distribution(file: str, name: str) -> None:
    assert script().file_name(Path(file)) == name
