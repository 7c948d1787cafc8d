"""One sandbox host: its directory, its systemd-nspawn process and its readiness.

A host is an overlay mount: the cached root file system read-only below, and the host's
own ``upper`` directory above, which holds everything the host writes. It is booted with
``systemd-nspawn --boot`` in the background, sharing this machine's network; its sshd
listens only on the host's own loopback address. A host's processes are found by what
they were started with (see ``host_processes``), never by remembered PIDs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clusterai_runner.adapters.openssh import openssh_argv
from clusterai_runner.errors import RunFailed, UsageError

NSPAWN = "systemd-nspawn"
HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
# Set in each container's init, so that a host whose nspawn was killed is still found.
MARKER = "CLUSTERAI_SANDBOX_ROOT"
# Every host's cgroups live below this one, in each cgroup hierarchy.
CGROUP_PARENT = "clusterai-sandbox"


@dataclass(frozen=True)
class HostSpec:
    """What makes one host: where it lives and how it is reached."""

    name: str
    address: str
    machine: str
    directory: Path

    @property
    def root(self) -> Path:
        """The overlay mount nspawn boots: what the host sees as /."""
        return self.directory / "root"

    @property
    def upper(self) -> Path:
        return self.directory / "upper"

    @property
    def work(self) -> Path:
        return self.directory / "work"

    @property
    def log(self) -> Path:
        return self.directory / "console.log"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


MOUNTINFO = Path("/proc/self/mountinfo")


def _mounts(mountinfo: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """(mount point, file system type, super options) of each mount in ``mountinfo``."""
    for line in mountinfo.read_text().splitlines():
        left, right = line.split(" - ", 1)
        fstype, _source, options = right.split()[:3]
        # The kernel writes space, tab, newline and backslash as octal escapes (\040).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), left.split()[4])
        yield Path(point), fstype, options.split(",")


def cgroup2_mounts(mountinfo: Path = MOUNTINFO) -> set[Path]:
    """Where the cgroup v2 (unified) hierarchy is mounted in this mount namespace."""
    return {point for point, fstype, _options in _mounts(mountinfo) if fstype == "cgroup2"}


def mount_points_below(directory: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """Mount points at or below ``directory`` in this mount namespace, deepest first."""
    points = [
        point
        for point, _fstype, _options in _mounts(mountinfo)
        if point == directory or directory in point.parents
    ]
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def cgroups(root: Path, mountinfo: Path = MOUNTINFO) -> list[Path]:
    """The cgroups a host's nspawn runs in: one per hierarchy that nspawn uses.

    Each host needs cgroups of its own. With ``--keep-unit`` nspawn puts the container's
    ``payload`` cgroup below its own; were every host's nspawn in the same cgroup (the
    caller's), the containers' systemds would share one tree and remove each other's unit
    cgroups while booting ("Failed at step CGROUP"). The name derives from the host's root,
    so that stopping a host finds its cgroups again.
    """
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    name = f"{root.parent.name}-{digest}"
    return [
        point / CGROUP_PARENT / name
        for point, fstype, options in _mounts(mountinfo)
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in options)
    ]


# The depth of a host's own cgroup (CGROUP_PARENT/name) in each hierarchy.
CGROUP_LEVEL = 2


def make_cgroups(root: Path, mountinfo: Path = MOUNTINFO) -> Path | None:
    """Create the host's cgroups; return its cgroup v2 directory, if there is one."""
    unified = cgroup2_mounts(mountinfo)
    found = None
    for cgroup in cgroups(root, mountinfo):
        cgroup.mkdir(parents=True, exist_ok=True)
        if cgroup.parents[CGROUP_LEVEL - 1] in unified:
            found = cgroup
    return found


def remove_cgroups(root: Path) -> None:
    """Remove a stopped host's cgroups, innermost first; empty cgroups are all that is left."""
    for cgroup in cgroups(root):
        if not cgroup.is_dir():
            continue
        for directory, _subdirectories, _files in os.walk(cgroup, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def mount(host: HostSpec, lower: Path) -> None:
    """Mount the host's overlay root unless it is mounted already."""
    if host.root in mount_points_below(host.root):
        return
    for path in (lower, host.upper, host.work):
        if any(c in str(path) for c in ",:\\ \t\n"):
            raise UsageError(
                "sandbox",
                f"{path} holds a comma, colon, backslash or space, which overlay mounts refuse",
                "set CLUSTERAI_STATE_DIR and CLUSTERAI_CACHE_DIR to plain paths",
            )
    for path in (host.upper, host.work, host.root):
        path.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={host.upper},workdir={host.work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(host.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RunFailed(
            f"sandbox host {host.name}",
            f"cannot mount its overlay root: {result.stderr.strip()}",
            "put CLUSTERAI_STATE_DIR on a local file system such as ext4, xfs or tmpfs",
        )


def remove_tree(directory: Path) -> None:
    """Unmount everything mounted below ``directory``, then delete it. Hosts must be stopped."""
    for point in mount_points_below(directory):
        subprocess.run(["umount", str(point)], check=True)
    if directory.exists():
        shutil.rmtree(directory)


def create(lower: Path, host: HostSpec, ssh_port: int, authorized_key: str) -> None:
    """Mount a fresh overlay root and give it an identity: host key, hostname, machine id."""
    remove_tree(host.directory)  # a half-made host from an interrupted run
    mount(host, lower)
    key = host.root / HOST_KEY
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    _write(
        host.root / "etc/ssh/sshd_config.d/clusterai-sandbox.conf",
        "# Written by clusterai sandbox: this host answers only on its own address.\n"
        f"ListenAddress {host.address}\n"
        f"Port {ssh_port}\n"
        f"HostKey /{HOST_KEY}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n",
    )
    _write(host.root / "etc/hostname", f"{host.name}\n")
    _write(host.root / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    ssh_dir = host.root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _write(ssh_dir / "authorized_keys", authorized_key, 0o600)


def write_etc_hosts(host: HostSpec, text: str) -> None:
    """Write the host's /etc/hosts through its mounted root."""
    _write(host.root / "etc/hosts", text)


def public_host_key(host: HostSpec) -> str:
    """Return ``type base64`` of the host's SSH key, as known_hosts wants it."""
    text = (host.root / f"{HOST_KEY}.pub").read_text().split()
    return f"{text[0]} {text[1]}"


@dataclass
class Processes:
    """What runs one host: its systemd-nspawn and, seen from here, the container's init."""

    nspawn: list[int] = field(default_factory=list)
    inits: list[tuple[int, int]] = field(default_factory=list)  # (pid, parent pid)

    @property
    def orphans(self) -> list[int]:
        """Container inits whose systemd-nspawn is gone (it was killed, say)."""
        return [pid for pid, parent in self.inits if parent not in self.nspawn]


def _nspawn_directory(args: list[bytes]) -> Path | None:
    # systemd-nspawn itself, or the sh that is about to become it (see start()).
    if NSPAWN.encode() not in [os.path.basename(arg) for arg in args[:5]]:
        return None
    for arg in args[1:]:
        if arg.startswith(b"--directory="):
            return Path(arg.split(b"=", 1)[1].decode(errors="replace"))
    return None


def _marked_root(environ: bytes) -> Path | None:
    prefix = f"{MARKER}=".encode()
    for variable in environ.split(b"\0"):
        if variable.startswith(prefix):
            return Path(variable[len(prefix) :].decode(errors="replace"))
    return None


def host_processes(under: Path) -> dict[Path, Processes]:
    """Map each host root at or below ``under`` to the processes running it.

    nspawn processes are found by their ``--directory=`` argument and container inits by
    the ``CLUSTERAI_SANDBOX_ROOT`` variable nspawn set for them, so nothing depends on
    remembered PIDs and a reused PID is never mistaken for a host.
    """
    found: dict[Path, Processes] = {}

    def ours(directory: Path | None) -> Processes | None:
        if directory is not None and (directory == under or under in directory.parents):
            return found.setdefault(directory, Processes())
        return None

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        pid = int(entry.name)
        processes = ours(_nspawn_directory(args))
        if processes is not None:
            processes.nspawn.append(pid)
            continue
        processes = ours(_marked_root(environ))
        if processes is not None:
            processes.inits.append((pid, parent))
    return found


def start(host: HostSpec, lower: Path) -> int:
    """Boot the host in the background and return the PID of its systemd-nspawn."""
    mount(host, lower)
    make_cgroups(host.root)
    procs = [str(cgroup / "cgroup.procs") for cgroup in cgroups(host.root)]
    with host.log.open("ab") as log:
        process = subprocess.Popen(
            [
                # Join the host's own cgroups, then become systemd-nspawn (same PID).
                "/bin/sh",
                "-c",
                'for procs in $CLUSTERAI_CGROUP_PROCS; do echo $$ > "$procs" || exit 1; done; '
                'exec "$@"',
                "sh",
                NSPAWN,
                "--quiet",
                f"--directory={host.root}",
                "--boot",
                "--register=no",
                "--keep-unit",
                f"--machine={host.machine}",
                f"--hostname={host.name}",
                f"--setenv={MARKER}={host.root}",
                # The firewall role runs nft for real. The hosts share this machine's
                # network, so its rules match only the host's own address (roles/firewall)
                # and the sandbox deletes them with the host (network.detach).
                "--capability=CAP_NET_ADMIN",
                "--console=read-only",
                "--link-journal=no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "CLUSTERAI_CGROUP_PROCS": " ".join(procs)},
        )
    return process.pid


def _gone(pid: int) -> bool:
    # Reap it if it is our own child, so that it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}


def _wait_reaped(pids: Sequence[int], timeout: float = 10.0) -> None:
    """Give init a moment to reap exited processes, so none lingers even as a zombie."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        if not _gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until every PID has exited; return those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if not _gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if not _gone(pid)]
    return alive


def stop(
    under: Path, only: Collection[Path] | None = None, timeout: float = 30.0, halt: bool = True
) -> None:
    """Stop the hosts at or below ``under`` (or just the roots in ``only``).

    Without ``halt`` (hosts whose disks are deleted next) each container's init gets
    SIGKILL at once, which ends every process in its PID namespace and then its nspawn:
    a clean shutdown of services that are thrown away only costs seconds per host.
    Otherwise SIGTERM asks each nspawn to halt its container. It is repeated while we wait: a
    container whose systemd has not yet installed its handlers drops the halt request,
    as a PID-namespace init ignores unhandled signals. An orphaned container init (its
    nspawn is gone) ignores SIGTERM too, so it gets SIGKILL, which ends every process in
    its PID namespace. Whatever is still alive after ``timeout`` gets SIGKILL.
    """

    roots: set[Path] = set(only or ())

    def scan() -> tuple[list[int], list[int]]:
        found = []
        for root, processes in host_processes(under).items():
            if only is None or root in only:
                roots.add(root)
                found.append(processes)
        return (
            [pid for processes in found for pid in processes.nspawn],
            [
                pid
                for processes in found
                for pid in (processes.orphans if halt else [p for p, _ in processes.inits])
            ],
        )

    nspawn, orphans = scan()
    seen = [*nspawn, *orphans]
    _signal(orphans, signal.SIGKILL)
    if not halt:
        nspawn = _wait_gone(nspawn, timeout)
    deadline = time.monotonic() + timeout
    while nspawn and time.monotonic() < deadline:
        _signal(nspawn, signal.SIGTERM)
        nspawn = _wait_gone(nspawn, min(2.0, max(0.0, deadline - time.monotonic())))
    _signal(nspawn, signal.SIGKILL)
    _wait_gone(nspawn, 10.0)
    # A killed nspawn leaves its container's init behind: find and end it as well.
    nspawn, orphans = scan()
    seen += orphans
    _signal([*nspawn, *orphans], signal.SIGKILL)
    alive = _wait_gone([*nspawn, *orphans], 10.0)
    if alive:
        raise RunFailed("sandbox", f"host processes {alive} did not exit", "kill them by hand")
    _wait_reaped(seen)
    for root in roots:
        remove_cgroups(root)


def log_tail(host: HostSpec, lines: int = 3) -> str:
    try:
        text = host.log.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def port_answers(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def ssh_command(address: str, port: int, key: Path, known_hosts: Path, *remote: str) -> list[str]:
    """An ssh command line for a sandbox host, with host key checking on."""
    return openssh_argv(
        address, *remote, port=port, user="root", key_file=str(key),
        known_hosts=str(known_hosts), connect_timeout=5, quiet=True,
    )  # fmt: skip


def _save_failure(host: HostSpec, ssh_port: int, key: Path, known_hosts: Path, report: Path) -> str:
    """Save a degraded host's failed units and boot journal to ``report``; name the units.

    The host is removed when its run is undone, so this report is what remains of it.
    """

    def remote(*command: str) -> str:
        return subprocess.run(
            ssh_command(host.address, ssh_port, key, known_hosts, *command),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout

    failed = remote("systemctl", "--failed", "--plain", "--no-legend")
    journal = remote("journalctl", "--boot", "--no-pager", "--output=short-monotonic", "-n", "500")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(
        f"# {host.name} ({host.address}): failed units\n{failed}\n# journal\n{journal}"
    )
    return ", ".join(line.split()[0] for line in failed.splitlines() if line.strip()) or "none left"


def wait_ready(
    host: HostSpec,
    pid: int,
    ssh_port: int,
    key: Path,
    known_hosts: Path,
    timeout: float,
    report: Path,
) -> None:
    """Wait until the host's systemd reports ``running`` over SSH; raise with the reason.

    A host that comes up ``degraded`` has its failed units and journal saved to ``report``.
    """
    deadline = time.monotonic() + timeout
    last = "sshd never answered"
    while time.monotonic() < deadline:
        if _gone(pid):
            raise RunFailed(
                f"sandbox host {host.name}",
                f"systemd-nspawn exited while booting: {log_tail(host)}",
                f"see {host.log}",
            )
        if port_answers(host.address, ssh_port):
            remaining = max(1.0, deadline - time.monotonic())
            command = ssh_command(
                host.address, ssh_port, key, known_hosts, "systemctl", "is-system-running", "--wait"
            )
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=remaining, check=False
                )
            except subprocess.TimeoutExpired:
                break
            state = result.stdout.strip()
            if state == "running":
                return
            if state == "degraded":
                raise RunFailed(
                    f"sandbox host {host.name}",
                    f"systemd is degraded; failed units: "
                    f"{_save_failure(host, ssh_port, key, known_hosts, report)}",
                    f"its journal is saved in {report}",
                )
            last = result.stderr.strip() or state or f"ssh exited {result.returncode}"
        time.sleep(0.2)
    raise RunFailed(
        f"sandbox host {host.name}",
        f"not ready after {timeout:.0f} s ({last})",
        f"see {host.log}; raise --timeout on a slow machine",
    )
