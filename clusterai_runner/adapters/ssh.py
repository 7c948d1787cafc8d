"""The in-process SSH client behind ``clusterai validate``: asyncssh, one event loop for
every host, no process per connection.

Spawning OpenSSH's ``ssh`` costs the controller tens of milliseconds of CPU per host (a
process, its crypto library, its configuration), more than the checks themselves; an
in-process client costs a few. Host key checking stays on with OpenSSH's files and
meanings: the inventory's ``UserKnownHostsFile`` (else ``~/.ssh/known_hosts``) and
``/etc/ssh/ssh_known_hosts``; an unknown key fails unless accept-new, a changed key fails.
``~/.ssh/config`` is read as OpenSSH would (asyncssh supports its common options).

Hosts whose inventory gives SSH options this client does not model (a ``ProxyCommand``,
``-F``, ciphers, ...) are not handled here: ``options_for`` says None and validate runs
OpenSSH's ``ssh`` for them, so they are checked exactly as Ansible will connect.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from clusterai_runner.adapters.inventory import InventoryHost

GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
# -o options that change nothing for a batch check over a fresh connection.
_NEUTRAL = {
    "batchmode", "connecttimeout", "controlmaster", "controlpath", "controlpersist",
    "stricthostkeychecking", "serveraliveinterval", "serveralivecountmax", "loglevel",
    "compression", "passwordauthentication", "kbdinteractiveauthentication",
    "challengeresponseauthentication", "forwardagent", "tcpkeepalive",
    "gssapiauthentication", "preferredauthentications", "hashknownhosts",
}  # fmt: skip


PREFERRED_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    *(a.decode() for a in asyncssh.encryption.get_default_encryption_algs()
      if not a.decode().endswith("-gcm@openssh.com")),
]  # fmt: skip


@dataclass(frozen=True)
class Options:
    """How to reach one host with this client."""

    known_hosts: tuple[str, ...]
    client_keys: tuple[str, ...] | None  # None: asyncssh's defaults (~/.ssh/id_*)
    use_agent: bool


@dataclass(frozen=True)
class Outcome:
    """One connection's result: the probe's output, or why there was none."""

    rc: int
    stdout: str
    sent_at: float
    received_at: float
    failure: str = ""  # "", "reach", "host_key_changed", "host_key_unknown", "auth"
    detail: str = ""


def _ssh_options(args: tuple[str, ...]) -> list[tuple[str, str]] | None:
    """(name, value) of every -o option and -i key in ``args``; None for anything else."""
    found: list[tuple[str, str]] = []
    items = list(args)
    while items:
        arg = items.pop(0)
        if arg in ("-o", "-i") and items:
            value = items.pop(0)
        elif arg.startswith(("-o", "-i")) and len(arg) > 2:
            value = arg[2:]
        elif arg == "-C":
            continue
        else:
            return None
        if arg.startswith("-i"):
            found.append(("identityfile", value))
            continue
        name, sep, rest = value.partition("=")
        if not sep:
            name, _, rest = value.partition(" ")
        found.append((name.strip().lower(), rest.strip()))
    return found


def options_for(host: InventoryHost) -> Options | None:
    """This client's options for ``host``, or None when OpenSSH's ssh must check it."""
    parsed = _ssh_options(host.ssh_args)
    if parsed is None:
        return None
    known: list[str] = []
    keys = [host.key_file] if host.key_file else []
    only = bool(host.key_file)
    for name, value in parsed:
        if name == "userknownhostsfile":
            known += [os.path.expanduser(v) for v in shlex.split(value)]
        elif name == "identityfile":
            keys.append(os.path.expanduser(value))
        elif name == "identitiesonly":
            only = value.lower() == "yes"
        elif name not in _NEUTRAL:
            return None
    if not known:
        known = [os.path.expanduser("~/.ssh/known_hosts")]
    if GLOBAL_KNOWN_HOSTS.is_file():
        known.append(str(GLOBAL_KNOWN_HOSTS))
    return Options(tuple(known), tuple(keys) if keys else None, use_agent=not only)


_LOADED: dict[tuple[tuple[str, float], ...], asyncssh.SSHKnownHosts] = {}


def _known_hosts(options: Options) -> asyncssh.SSHKnownHosts:
    """The known_hosts files, parsed once per content (not once per connection: parsing
    200 keys for each of 200 hosts costs the controller a second of CPU)."""
    files = [f for f in options.known_hosts if os.path.isfile(f)]
    stamp = tuple((f, os.stat(f).st_mtime) for f in files)
    if stamp not in _LOADED:
        _LOADED[stamp] = (
            asyncssh.read_known_hosts(files) if files else asyncssh.import_known_hosts("")
        )
    return _LOADED[stamp]


def _known_entry(host: InventoryHost) -> str:
    return host.host if host.port == 22 else f"[{host.host}]:{host.port}"


def _knows(options: Options, host: InventoryHost) -> bool:
    """Whether a known_hosts file lists a key for this host (then a mismatch is a change)."""
    trusted = _known_hosts(options).match(host.host, "", host.port)
    return bool(trusted[0] or trusted[1])


async def _accept_new(options: Options, host: InventoryHost, timeout: float) -> None:
    """Record the host's key in the first known_hosts file, as accept-new does."""
    key = await asyncio.wait_for(asyncssh.get_server_host_key(host.host, host.port), timeout)
    if key is None:
        raise asyncssh.HostKeyNotVerifiable("the host offered no key")
    path = Path(options.known_hosts[0])
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(f"{_known_entry(host)} {key.export_public_key().decode().strip()}\n")


async def run(
    host: InventoryHost, options: Options, script: str, accept_new: bool, timeout: float
) -> Outcome:
    """Connect, run ``script`` under ``sh -s``, and say what happened."""
    settings: dict[str, Any] = {
        "port": host.port,
        "username": host.user,
        "known_hosts": _known_hosts(options),
        "connect_timeout": timeout,
        "login_timeout": timeout,
        # AES-GCM first: hardware-accelerated, and a single call per packet where
        # asyncssh's ChaCha20-Poly1305 makes several; the rest of the defaults follow.
        "encryption_algs": PREFERRED_CIPHERS,
    }
    if options.client_keys is not None:
        settings["client_keys"] = list(options.client_keys)
    if not options.use_agent:
        settings["agent_path"] = None
    sent = time.time()
    for attempt in (1, 2):
        try:
            async with asyncssh.connect(host.host, **settings) as connection:
                done = await asyncio.wait_for(
                    connection.run("sh -s", input=script, check=False), timeout * 4
                )
            stdout = done.stdout if isinstance(done.stdout, str) else ""
            status = done.exit_status if done.exit_status is not None else 255
            return Outcome(status, stdout, sent, time.time())
        except asyncssh.HostKeyNotVerifiable as exc:
            if _knows(options, host):
                return Outcome(255, "", sent, time.time(), "host_key_changed", str(exc))
            if not accept_new or attempt == 2:
                return Outcome(255, "", sent, time.time(), "host_key_unknown", str(exc))
            try:
                await _accept_new(options, host, timeout)
            except (OSError, TimeoutError, asyncssh.Error) as error:
                return Outcome(255, "", sent, time.time(), "reach", str(error))
            settings["known_hosts"] = _known_hosts(options)
        except asyncssh.PermissionDenied as exc:
            return Outcome(255, "", sent, time.time(), "auth", str(exc))
        except socket.gaierror as exc:
            return Outcome(255, "", sent, time.time(), "reach", f"cannot resolve: {exc.strerror}")
        except (OSError, TimeoutError) as exc:
            # asyncio words a refused connection "Connect call failed (...)": say what
            # the error number means, as ssh does.
            errno = exc.errno if isinstance(exc, OSError) else None
            reason = os.strerror(errno) if errno else str(exc) or f"no answer within {timeout:g} s"
            return Outcome(255, "", sent, time.time(), "reach", reason)
        except asyncssh.Error as exc:
            return Outcome(255, "", sent, time.time(), "auth", exc.reason or str(exc))
    raise AssertionError("unreachable")  # pragma: no cover


def new_host_key(comment: str) -> tuple[str, str]:
    """A fresh Ed25519 host key: (its private key in OpenSSH's format, its public key line),
    for a host that is given its key (a cloud worker's user-data) rather than making one."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    private = key.export_private_key("openssh").decode()
    public = key.export_public_key("openssh").decode().strip()
    return private, public
