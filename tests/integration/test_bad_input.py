"""Each bad input gets one line, exit 2, and leaves nothing behind."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CLUSTERAI, mounts_below, nspawn_command_lines, run_cli, tree

pytestmark = pytest.mark.sandbox


@pytest.fixture
def unchanged(state_dir: Path) -> Iterator[None]:
    """Assert that the test changed no state file and started no host."""

    # Only this session's hosts: other modules boot theirs at the same time (pytest-xdist).
    def ours() -> set[str]:
        return {line for line in nspawn_command_lines() if str(state_dir) in line}

    files, processes, mounts = tree(state_dir), ours(), mounts_below(state_dir)
    yield
    assert tree(state_dir) == files
    assert ours() == processes
    assert mounts_below(state_dir) == mounts


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def path_without(tmp_path: Path, tool: str) -> str:
    """A PATH holding every sandbox tool but one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemd-nspawn", "debootstrap", "ssh", "ssh-keygen", "nft", "cp"):
        found = shutil.which(name)
        if name != tool and found:
            (bin_dir / name).symlink_to(found)
    return str(bin_dir)


def test_not_root(unchanged: None) -> None:
    # A user namespace gives the CLI a real non-zero euid.
    completed = subprocess.run(
        [
            "unshare",
            "--user",
            "--map-user=1000",
            "--map-group=1000",
            str(CLUSTERAI),
            "sandbox",
            "up",
            "--hosts",
            "1",
            "--name",
            "nonroot",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert one_error_line(completed.stderr) == (
        "error: sandbox: must run as root: systemd-nspawn boots the hosts and needs it "
        "(run it with sudo, e.g. sudo .venv/bin/clusterai sandbox up)"
    )


@pytest.mark.parametrize(
    ("tool", "package"),
    [("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"), ("nft", "nftables")],
)
def test_missing_tool_prints_the_apt_line(
    tool: str, package: str, tmp_path: Path, unchanged: None
) -> None:
    result = run_cli(
        "sandbox",
        "up",
        "--hosts",
        "1",
        "--name",
        "notools",
        env={"PATH": path_without(tmp_path, tool)},
    )
    assert result.code == 2
    assert one_error_line(result.stderr) == (
        f"error: sandbox: {tool} not found on PATH (install with: apt-get install -y {package})"
    )


def test_address_already_in_use(unchanged: None) -> None:
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.77.2", 22))
        squatter.listen()
        result = run_cli(
            "sandbox", "up", "--hosts", "3", "--name", "busy", "--first-address", "127.0.77.1"
        )
    assert result.code == 2
    assert one_error_line(result.stderr) == (
        "error: sandbox host worker1: address 127.0.77.2:22 is already in use on this machine "
        "(stop what listens there, or pick another range with --first-address)"
    )


def test_more_hosts_than_memory_allows(unchanged: None) -> None:
    result = run_cli(
        "sandbox",
        "up",
        "--hosts",
        "3",
        "--name",
        "huge",
        env={"CLUSTERAI_SANDBOX_HOST_MEMORY_MIB": "100000000"},
    )
    assert result.code == 2
    line = one_error_line(result.stderr)
    assert line.startswith(
        "error: sandbox: 3 hosts need about 300000000 MiB of memory (100000000 MiB each) but "
    )
    assert line.endswith(
        "(ask for fewer --hosts, or set CLUSTERAI_SANDBOX_HOST_MEMORY_MIB lower "
        "if your hosts need less)"
    )


def test_unknown_sandbox_name(unchanged: None) -> None:
    result = run_cli("sandbox", "status", "--name", "nosuch")
    assert result.code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: sandbox 'nosuch': no such sandbox (existing: ")
    assert line.endswith("(create it with `clusterai sandbox up --name nosuch`)")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--name", "../etc"], "error: --name: '../etc' is not a valid sandbox name"),
        (["--first-address", "10.1.2.3"], "error: --first-address: 10.1.2.3 is not in 127.0.0.0/8"),
        (["--hosts", "251"], "error: clusterai sandbox up: Invalid value for '--hosts'"),
    ],
)
def test_bad_arguments(args: list[str], expected: str, unchanged: None) -> None:
    result = run_cli("sandbox", "up", *args)
    assert result.code == 2
    assert one_error_line(result.stderr).startswith(expected)
