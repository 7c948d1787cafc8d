"""The sandbox use cases: up, status, down and list.

A sandbox is a directory under ``<state>/sandboxes/<name>/`` holding its state file, SSH
key pair, known_hosts, inventory and one root file system per host. Everything else,
such as which hosts are running, is derived from the machine when asked.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clusterai_runner.adapters.files import atomic_write, locked
from clusterai_runner.config import Settings
from clusterai_runner.errors import UsageError
from clusterai_runner.sandbox import checks, host, inventory, network, rootfs

DEFAULT_NAME = "default"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
MAX_HOSTS = 250
FIRST_SLOT = 10  # sandboxes get 127.0.10.0/24, 127.0.11.0/24, ... in turn
LAST_SLOT = 254
HOST_DISK_MIB = 256  # what a host writes above its overlay: packages, models, logs
ROOTFS_DISK_MIB = 400  # the cached root file system is about 330 MiB
STATE_VERSION = 1
LOCK_FILE = Path("/run/lock/clusterai-sandbox.lock")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class HostRecord:
    name: str
    address: str
    group: str


@dataclass(frozen=True)
class SandboxHostStatus:
    name: str
    address: str
    group: str
    state: str  # running | starting | stopped | orphaned (nspawn gone, container left)
    pid: int | None


@dataclass(frozen=True)
class SandboxStatus:
    name: str
    directory: Path
    inventory: Path
    ssh_key: Path
    known_hosts: Path
    ssh_port: int
    hosts: tuple[SandboxHostStatus, ...]

    def to_json(self) -> dict[str, Any]:
        """The documented, stable ``--json`` shape."""
        return {
            "name": self.name,
            "directory": str(self.directory),
            "inventory": str(self.inventory),
            "ssh_key": str(self.ssh_key),
            "known_hosts": str(self.known_hosts),
            "ssh_port": self.ssh_port,
            "hosts": [asdict(h) for h in self.hosts],
        }


def host_names(count: int) -> list[tuple[str, str]]:
    """The (name, group) of each host: one control host (ctl1), the rest numbered workers."""
    return [("ctl1", "control")] + [(f"worker{i}", "workers") for i in range(1, count)]


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            "--name",
            f"{name!r} is not a valid sandbox name",
            "use 1 to 24 lowercase letters, digits or dashes, starting with a letter",
        )


def addresses_from(first: str, count: int) -> list[str]:
    """``count`` consecutive loopback addresses from ``first``, all in one /24."""
    try:
        start = ipaddress.IPv4Address(first)
    except ipaddress.AddressValueError as error:
        raise UsageError(
            "--first-address", f"{first!r} is not an IPv4 address", "e.g. 127.0.20.1"
        ) from error
    if not start.is_loopback:
        raise UsageError(
            "--first-address",
            f"{first} is not in 127.0.0.0/8",
            "sandbox hosts live on loopback, e.g. 127.0.20.1",
        )
    last_octet = int(start) & 0xFF
    if last_octet == 0 or last_octet + count - 1 > 254:
        raise UsageError(
            "--first-address",
            f"{count} hosts from {first} do not fit between .1 and .254 of its /24",
            "start lower in the range or ask for fewer --hosts",
        )
    return [str(start + i) for i in range(count)]


class Layout:
    """Where a sandbox keeps each of its files."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.directory = root / name
        self.state = self.directory / "sandbox.json"
        self.ssh_key = self.directory / "id_ed25519"
        self.known_hosts = self.directory / "known_hosts"
        self.inventory = self.directory / "inventory.yml"
        # The key the workers' inference servers require (clusterai_backend_api_key), the
        # monitoring login's password (clusterai_monitoring_password), the web app's admin
        # password (web_admin_password) and a gateway API key (gateway_api_keys).
        self.backend_key = self.directory / "backend-api-key"
        self.monitoring_password = self.directory / "monitoring-password"
        self.web_admin_password = self.directory / "web-admin-password"
        self.api_key = self.directory / "gateway-api-key"
        self.hosts = self.directory / "hosts"

    def host(self, record: HostRecord) -> host.HostSpec:
        return host.HostSpec(
            name=record.name,
            address=record.address,
            machine=f"clusterai-{self.name}-{record.name}",
            directory=self.hosts / record.name,
        )


@dataclass(frozen=True)
class SandboxRecord:
    name: str
    ssh_port: int
    hosts: tuple[HostRecord, ...]
    rootfs: Path  # the cached tree every host's overlay has below it

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "version": STATE_VERSION,
                    "name": self.name,
                    "ssh_port": self.ssh_port,
                    "rootfs": str(self.rootfs),
                    "hosts": [asdict(h) for h in self.hosts],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_file(cls, path: Path) -> SandboxRecord:
        try:
            data = json.loads(path.read_text())
            if data.get("version") != STATE_VERSION:
                raise UsageError(
                    str(path),
                    f"state version {data.get('version')!r} is not {STATE_VERSION}",
                    "remove it with `clusterai sandbox down` from the version that made it",
                )
            return cls(
                name=data["name"],
                ssh_port=int(data["ssh_port"]),
                hosts=tuple(HostRecord(**h) for h in data["hosts"]),
                rootfs=Path(data["rootfs"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(
                str(path), f"unreadable sandbox state ({error})", "remove the sandbox directory"
            ) from error


class Sandboxes:
    """Create, inspect and remove sandboxes under one state directory."""

    def __init__(
        self,
        settings: Settings,
        progress: Progress | None = None,
        in_use: Callable[[str, int], bool] = checks.address_in_use,
    ) -> None:
        self.settings = settings
        self.root = settings.state_dir / "sandboxes"
        self.progress: Progress = progress or (lambda _message: None)
        # Whether something on this machine listens on (address, port); tests swap it.
        self.in_use = in_use

    # -- reading ---------------------------------------------------------------------

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/sandbox.json"))

    def load(self, name: str) -> SandboxRecord:
        check_name(name)
        layout = Layout(self.root, name)
        if not layout.state.is_file():
            known = ", ".join(self.names()) or "none"
            raise UsageError(
                f"sandbox {name!r}",
                f"no such sandbox (existing: {known})",
                f"create it with `clusterai sandbox up --name {name}`",
            )
        return SandboxRecord.from_file(layout.state)

    def status(self, name: str) -> SandboxStatus:
        record = self.load(name)
        layout = Layout(self.root, name)
        running = host.host_processes(layout.hosts)
        states = []
        for h in record.hosts:
            processes = running.get(layout.host(h).root, host.Processes())
            pid = processes.nspawn[0] if processes.nspawn else None
            if pid is None:
                state = "orphaned" if processes.orphans else "stopped"
            elif host.port_answers(h.address, record.ssh_port):
                state = "running"
            else:
                state = "starting"
            states.append(SandboxHostStatus(h.name, h.address, h.group, state, pid))
        return SandboxStatus(
            name=name,
            directory=layout.directory,
            inventory=layout.inventory,
            ssh_key=layout.ssh_key,
            known_hosts=layout.known_hosts,
            ssh_port=record.ssh_port,
            hosts=tuple(states),
        )

    # -- changing --------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise changes to sandboxes machine-wide: loopback addresses are shared by
        every state directory on this machine, so the lock is not kept in one of them."""
        with locked(LOCK_FILE):
            yield

    def _others_addresses(self, name: str) -> dict[str, str]:
        taken: dict[str, str] = {}
        for other in self.names():
            if other != name:
                for h in SandboxRecord.from_file(Layout(self.root, other).state).hosts:
                    taken[h.address] = other
        return taken

    def _allocate(self, name: str, count: int, ssh_port: int) -> list[str]:
        """Addresses for a new sandbox: the first free 127.0.S.0/24 range."""
        used_ranges = {a.rsplit(".", 1)[0] for a in self._others_addresses(name)}
        for slot in range(FIRST_SLOT, LAST_SLOT + 1):
            addresses = addresses_from(f"127.0.{slot}.1", count)
            if addresses[0].rsplit(".", 1)[0] in used_ranges:
                continue
            if not any(self.in_use(a, ssh_port) for a in addresses):
                return addresses
        raise UsageError(
            "sandbox",
            "no free 127.0.S.0/24 range is left",
            "remove a sandbox or pass --first-address",
        )

    def _plan(
        self,
        name: str,
        count: int,
        existing: SandboxRecord | None,
        first_address: str | None,
        ssh_port: int,
    ) -> tuple[HostRecord, ...]:
        if existing is not None:
            if count < len(existing.hosts):
                raise UsageError(
                    "--hosts",
                    f"sandbox {name!r} already has {len(existing.hosts)} hosts, more than {count}",
                    f"pass --hosts {len(existing.hosts)} or more, or `clusterai sandbox down "
                    f"--name {name}` first",
                )
            first = existing.hosts[0].address
            if first_address is not None and first_address != first:
                raise UsageError(
                    "--first-address",
                    f"sandbox {name!r} already starts at {first}, not {first_address}",
                    "leave --first-address out, or remove the sandbox first",
                )
            addresses = addresses_from(first, count)
        elif first_address is not None:
            addresses = addresses_from(first_address, count)
        else:
            addresses = self._allocate(name, count, ssh_port)
        taken = self._others_addresses(name)
        for address in addresses:
            if address in taken:
                raise UsageError(
                    "--first-address",
                    f"{address} belongs to sandbox {taken[address]!r}",
                    "leave --first-address out to get a free range",
                )
        return tuple(
            HostRecord(host_name, address, group)
            for (host_name, group), address in zip(host_names(count), addresses, strict=True)
        )

    def up(
        self,
        name: str = DEFAULT_NAME,
        count: int = 3,
        first_address: str | None = None,
        ssh_port: int | None = None,
        timeout: float = 120.0,
    ) -> SandboxStatus:
        """Create the sandbox or complete it: running hosts are kept, missing ones started."""
        check_name(name)
        if not 1 <= count <= MAX_HOSTS:
            raise UsageError("--hosts", f"{count} is out of range", f"use 1 to {MAX_HOSTS}")
        checks.require_root()
        checks.require_tools()
        layout = Layout(self.root, name)
        with self._lock():
            existing = SandboxRecord.from_file(layout.state) if layout.state.is_file() else None
            if existing and ssh_port is not None and ssh_port != existing.ssh_port:
                raise UsageError(
                    "--ssh-port",
                    f"sandbox {name!r} already uses port {existing.ssh_port}",
                    "leave --ssh-port out, or remove the sandbox first",
                )
            port = existing.ssh_port if existing else (ssh_port or 22)
            planned = self._plan(name, count, existing, first_address, port)
            running = host.host_processes(layout.hosts)
            known = {h.name for h in existing.hosts} if existing else set()
            # A host's disk is its upper directory; the mount point survives a reboot.
            new = [h for h in planned if h.name not in known or not layout.host(h).upper.is_dir()]
            to_start = [
                h for h in planned if not running.get(layout.host(h).root, host.Processes()).nspawn
            ]
            orphaned = [
                h for h in to_start if running.get(layout.host(h).root, host.Processes()).orphans
            ]
            for h in to_start:
                # An orphaned host's own sshd holds its address until it is cleared below.
                if h not in orphaned and self.in_use(h.address, port):
                    raise UsageError(
                        f"sandbox host {h.name}",
                        f"address {h.address}:{port} is already in use on this machine",
                        "stop what listens there, or pick another range with --first-address",
                    )
            checks.require_memory(len(to_start), self.settings.sandbox_host_memory_mib)
            checks.require_disk(self.root, len(new) * HOST_DISK_MIB)
            for h in orphaned:  # its nspawn was killed; clear the container it left behind
                self.progress(f"clearing host {h.name}, left running without its nspawn")
                host.stop(layout.hosts, only={layout.host(h).root})
            if existing is not None:
                lower = existing.rootfs
                if to_start and not lower.is_dir():
                    raise UsageError(
                        f"sandbox {name!r}",
                        f"its root file system {lower} is gone (was the cache cleared?)",
                        f"remove it with `clusterai sandbox down --name {name}`, then `up` again",
                    )
            else:
                cached = rootfs.cached_path(self.settings.cache_dir).is_dir()
                checks.require_disk(self.settings.cache_dir, 0 if cached else ROOTFS_DISK_MIB)
                in_use = {self.load(other).rootfs for other in self.names()}
                lower = rootfs.ensure_rootfs(
                    self.settings.cache_dir, self.settings.sandbox_mirror, self.progress, in_use
                )
            self._converge(layout, planned, port, new, to_start, existing, timeout, lower)
        return self.status(name)

    def _converge(
        self,
        layout: Layout,
        planned: tuple[HostRecord, ...],
        port: int,
        new: list[HostRecord],
        to_start: list[HostRecord],
        existing: SandboxRecord | None,
        timeout: float,
        lower: Path,
    ) -> None:
        created_directory = not layout.directory.exists()
        pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(to_start))))
        try:
            self.settings.private_state_dir()
            layout.directory.mkdir(parents=True, exist_ok=True)
            layout.directory.chmod(0o700)
            if not layout.ssh_key.exists():
                subprocess.run(
                    [
                        "ssh-keygen",
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        f"clusterai-sandbox-{layout.name}",
                        "-f",
                        str(layout.ssh_key),
                    ],
                    check=True,
                    stdin=subprocess.DEVNULL,
                )
            for secret in (layout.backend_key, layout.monitoring_password,
                           layout.web_admin_password):  # fmt: skip
                if not secret.exists():
                    atomic_write(secret, secrets.token_urlsafe(32) + "\n", mode=0o600)
            if not layout.api_key.exists():
                from clusterai_runner.gateway.keys import new_key

                atomic_write(layout.api_key, new_key()[0] + "\n", mode=0o600)
            authorized = (layout.ssh_key.parent / f"{layout.ssh_key.name}.pub").read_text()
            for h in new:
                self.progress(f"creating host {h.name} ({h.address})")
                host.create(lower, layout.host(h), port, authorized)
            self._write_known_hosts(layout, planned, port)
            warnings = set()
            for h in to_start:  # before it boots, so that no connection leaves it unnamed
                cgroup = host.make_cgroups(layout.host(h).root)
                warnings.add(network.attach(h.address, cgroup, host.CGROUP_LEVEL))
            for warning in sorted(w for w in warnings if w):
                self.progress(f"warning: {warning}")
            if to_start:
                names = ", ".join(h.name for h in to_start)
                self.progress(f"booting {len(to_start)} host(s): {names}")
            futures = [
                pool.submit(
                    host.wait_ready,
                    layout.host(h),
                    host.start(layout.host(h), lower),
                    port,
                    layout.ssh_key,
                    layout.known_hosts,
                    timeout,
                    self.root.parent / "logs" / f"sandbox-{layout.name}-{h.name}.log",
                )
                for h in to_start
            ]
            for future in futures:
                future.result()
            hosts_file = inventory.etc_hosts(planned)
            for h in planned:  # every host, old and new, knows every other by name
                host.write_etc_hosts(layout.host(h), hosts_file)
            record = SandboxRecord(layout.name, port, planned, lower)
            atomic_write(
                layout.inventory,
                inventory.render(
                    layout.name,
                    planned,
                    port,
                    layout.ssh_key,
                    layout.known_hosts,
                    inventory.Secrets(
                        layout.backend_key.read_text().strip(),
                        layout.monitoring_password.read_text().strip(),
                        layout.web_admin_password.read_text().strip(),
                        layout.api_key.read_text().strip(),
                    ),
                ),
                mode=0o600,  # it holds the backend key
            )
            atomic_write(layout.state, record.to_json())
        except BaseException:
            # Ctrl-C or a failed host: stop what this run started, without waiting for
            # the other hosts' boot checks, which end once their hosts are gone.
            pool.shutdown(wait=False, cancel_futures=True)
            self.progress("failed: undoing what this run created")
            host.stop(layout.hosts, only={layout.host(h).root for h in to_start})
            for h in to_start:
                network.detach(h.address)
            if created_directory:
                host.remove_tree(layout.directory)
            else:
                kept = {h.name for h in existing.hosts} if existing else set()
                for h in new:
                    if h.name not in kept:
                        host.remove_tree(layout.host(h).directory)
                if existing:
                    self._write_known_hosts(layout, existing.hosts, port)
            raise
        finally:
            pool.shutdown(wait=True)

    @staticmethod
    def _write_known_hosts(layout: Layout, hosts: tuple[HostRecord, ...], port: int) -> None:
        text = "".join(
            inventory.known_hosts_line(h.address, port, host.public_host_key(layout.host(h)))
            for h in hosts
        )
        atomic_write(layout.known_hosts, text)

    def down(self, name: str = DEFAULT_NAME) -> bool:
        """Stop every host and remove the sandbox; False when there was nothing to remove."""
        check_name(name)
        layout = Layout(self.root, name)
        if not layout.directory.exists():
            return False
        checks.require_root()
        with self._lock():
            running = host.host_processes(layout.directory)
            if running:
                self.progress(f"stopping {len(running)} host(s)")
            host.stop(layout.directory, halt=False)  # their disks are deleted next
            record = SandboxRecord.from_file(layout.state) if layout.state.is_file() else None
            for h in record.hosts if record else ():
                host.remove_cgroups(layout.host(h).root)  # left by a host that crashed
                network.detach(h.address)
            host.remove_tree(layout.directory)
        return True
