"""Reading an Ansible inventory into plain host records, with errors that name the file.

Ansible's own inventory code does the parsing, so every source it understands works; a
YAML file is first read with PyYAML to point at the line of a syntax error, which
Ansible reports only as a warning.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import ANSIBLE_CONFIG, forced_variables
from clusterai_runner.errors import UsageError

# The group of workers the autoscaler stopped (plays/hosts.yml serves no model there, the
# gateway and Prometheus leave them out); a worker leaves it when it is started again.
PARKED = "parked"


@dataclass(frozen=True)
class InventoryHost:
    """What the CLI needs to reach one host and check it."""

    name: str
    groups: tuple[str, ...]
    host: str
    port: int
    user: str
    key_file: str | None
    ssh_args: tuple[str, ...]
    address: str
    variables: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def kind(self) -> str:
        return "control" if "control" in self.groups else "workers"

    @property
    def parked(self) -> bool:
        """A worker the autoscaler stopped: its inference server is off and no one is sent
        requests (the inventory's ``parked`` group)."""
        return PARKED in self.groups

    @property
    def serving(self) -> bool:
        """A worker whose inference server should answer: in workers, not parked."""
        return self.kind == "workers" and not self.parked

    def known_hosts_files(self) -> list[str]:
        """The UserKnownHostsFile values among this host's SSH options."""
        found = []
        for i, arg in enumerate(self.ssh_args):
            option = arg[2:] if arg.startswith("-o") and len(arg) > 2 else None
            if arg == "-o" and i + 1 < len(self.ssh_args):
                option = self.ssh_args[i + 1]
            if option and option.lower().startswith("userknownhostsfile="):
                found.extend(option.split("=", 1)[1].split())
        return found


# The inventory variables the CLI reads: connection, Cluster AI's own, and the ports of
# the services `clusterai status` and the web app ask (and the gateway's admin key).
VARIABLE_PREFIXES = (
    "ansible_",
    "autoscale_",
    "clusterai_",
    "desktop_",
    "preflight_",
    "llamacpp_server_",
    "ollama_",
    "node_exporter_",
    "gpu_exporter_",
    "prometheus_port",
    "alertmanager_port",
    "gateway_port",
    "gateway_admin_key",
    "gateway_aliases",
    "model_store_",
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML and
    Ansible keep the last one without a word: a host listed twice loses its first vars)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


# Host names the CLI, Ansible's --limit and its patterns can all name: an IP address, or
# letters, digits, '.', '-' and '_' (no spaces, commas, ':', '!', '&', '*', '[', ...).
HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
# What ansible_host and ansible_user may hold besides an IP address: never a leading '-'.
DNS_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_-]+)*\.?$")
USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]*\$?$")
# Files Ansible skips in an inventory directory (its inventory_ignore_extensions).
_IGNORED = (".orig", ".ini.orig", ".cfg", ".retry", ".pyc", ".pyo", "~", ".md", ".txt", ".rst")


def _text(path: Path) -> str:
    """The file's text: UTF-8, not a binary file; one line naming it otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"inventory {path}", exc.strerror or "unreadable", "check it") from exc
    if b"\x00" in data:
        raise UsageError(
            f"inventory {path}", "is a binary file, not an inventory", "give a YAML or INI file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"inventory {path}:{line}",
            f"is not UTF-8 text (byte 0x{data[exc.start]:02x})",
            "save the file as UTF-8",
        ) from None


def _check_files(path: Path) -> None:
    """Every file Ansible will read as inventory, group_vars or host_vars is text."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        hidden = any(part.startswith(".") for part in file.relative_to(path).parts)
        if hidden or file.name.endswith(_IGNORED):
            continue
        text = _text(file)
        if file.suffix in (".yml", ".yaml"):
            _check_yaml(file, text)


def _check_host_name(path: Path, name: str) -> None:
    if HOST_NAME.match(name):
        return
    try:
        ipaddress.ip_address(name)
    except ValueError:
        raise UsageError(
            f"inventory {path}: host {name!r}",
            "is not a usable host name (--limit and Ansible's host patterns cannot name it)",
            "use letters, digits, '.', '-' and '_'",
        ) from None


def _check_yaml(path: Path, text: str) -> None:
    try:
        yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(
            f"inventory {where}", f"YAML syntax error: {exc.problem}", "fix the file"
        ) from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"inventory {path}", f"not valid YAML: {exc}", "fix the file") from exc


def check_inventory(path: Path) -> Path:
    """An inventory path the CLI can hand to Ansible, or a usage error naming it."""
    if not path.exists():
        raise UsageError(f"inventory {path}", "does not exist", "give the path with -i")
    if path.is_file():
        try:
            path.read_bytes()
        except OSError as exc:
            raise UsageError(f"inventory {path}", exc.strerror or "unreadable", "check it") from exc
    return path.resolve()


@contextlib.contextmanager
def _ansible_warnings() -> Iterator[list[str]]:
    """Collect what Ansible would print as warnings, instead of printing it: the CLI
    reports problems as its own one line."""
    from ansible.utils.display import Display

    display = Display()
    collected: list[str] = []

    def collect(msg: str, *_args: Any, **_kwargs: Any) -> None:
        collected.append(" ".join(str(msg).split()))

    display.warning = collect
    try:
        yield collected
    finally:
        del display.warning


# Ansible's inventory code is not safe to run from two threads at once (its plugin loader
# caches half-imported modules; reading swaps a global setting, and its warnings are caught
# by patching its display): the web app's status watch and a job read inventories at once.
_ANSIBLE = threading.Lock()


def load(path: Path, limit: str | None = None, vault: Vault = NO_VAULT) -> list[InventoryHost]:
    """The hosts of the inventory at ``path`` (a file or directory), restricted to the
    Ansible pattern ``limit``; ``vault`` opens its encrypted values. Raises UsageError
    naming the file, host or pattern. One thread at a time reads with Ansible."""
    with _ANSIBLE:
        return _load(path, limit, vault)


def _open(path: Path, vault: Vault) -> tuple[Any, Any]:
    """The inventory at ``path`` as Ansible reads it, after our checks of its files: its
    DataLoader (with the vault's secrets) and its InventoryManager."""
    check_inventory(path)
    _check_files(path)
    # Ansible reads its configuration once, at import: ours names plugins/inventory, where
    # the clusterai_state plugin lives.
    os.environ["ANSIBLE_CONFIG"] = str(ANSIBLE_CONFIG)

    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.vars import host_group_vars

    # Ansible remembers, per process, which group_vars and host_vars files it found (and
    # which directories were missing): a long-running process (the autoscaler, the web
    # app) would never see a file added or removed since. Forget it at every read.
    host_group_vars.FOUND.clear()
    host_group_vars.NAK.clear()
    loader = DataLoader()
    loader.set_vault_secrets(vault.secrets(loader))
    try:
        manager = InventoryManager(loader=loader, sources=[str(path)])
    except AnsibleError as exc:
        raise UsageError(f"inventory {path}", str(exc).splitlines()[0], "fix the file") from exc
    return loader, manager


def _load(path: Path, limit: str | None, vault: Vault) -> list[InventoryHost]:
    from ansible.errors import AnsibleError
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    with _ansible_warnings() as warnings:
        loader, manager = _open(path, vault)
        pattern = limit or "all"
        selected = manager.get_hosts(pattern=pattern) if manager.hosts else []
    if not manager.hosts:
        reasons = [w for w in warnings if "implicit localhost" not in w]
        raise UsageError(
            f"inventory {path}",
            f"holds no hosts ({reasons[0]})" if reasons else "holds no hosts",
            "check it with: ansible-inventory -i PATH --list",
        )
    for host in manager.hosts.values():
        _check_host_name(path, host.name)
    if not selected:
        groups = ", ".join(sorted(manager.groups))
        raise UsageError(
            f"--limit {pattern}", "matches no host of the inventory", f"groups: {groups}"
        )
    # Inventory variables only: not the facts Ansible cached from earlier runs.
    from ansible import constants

    cache_plugin = constants.CACHE_PLUGIN
    constants.CACHE_PLUGIN = "memory"
    try:
        variables = VariableManager(loader=loader, inventory=manager)
    finally:
        constants.CACHE_PLUGIN = cache_plugin
    hosts = []
    # The process's forced variables beat the inventory's (config.FORCED_VARS), as they
    # do in the playbooks it runs.
    forced = {k: v for k, v in forced_variables().items() if k.startswith(VARIABLE_PREFIXES)}
    for host in selected:
        try:
            raw = variables.get_vars(host=host, include_hostvars=False)
            templar = Templar(loader=loader, variables=raw)
            rendered = {
                key: templar.template(raw[key]) for key in raw if key.startswith(VARIABLE_PREFIXES)
            }
        except AnsibleError as exc:
            raise _variables_error(path, f"host {host.name}", exc, vault, loader) from exc
        rendered.update(forced)
        hosts.append(_host(path, host.name, sorted(g.name for g in host.groups), rendered))
    return hosts


def _variables_error(
    path: Path, owner: str, exc: Exception, vault: Vault, loader: Any
) -> UsageError:
    """One line for an Ansible error while reading ``owner``'s variables (a host or a
    group): ansible-vault values it cannot open, or the error's first line."""
    if "vault" not in str(exc).lower():
        why = str(exc).splitlines()[0]
        return UsageError(f"inventory {path}: {owner}", why, "fix its variables")
    if vault.secrets(loader):
        why = "the vault password given does not open its ansible-vault encrypted values"
        return UsageError(f"inventory {path}", why, "check the password")
    why = "holds ansible-vault encrypted values and no vault password was given"
    fix = "add --vault-password-file FILE or --ask-vault-pass"
    return UsageError(f"inventory {path}", why, fix)


def _check_key_file(where: str, key: str) -> None:
    """The private key must be a readable file that ssh will use: ssh ignores a key of
    its user's that others may read."""
    path = os.path.expanduser(key)
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(
            where,
            f"ansible_ssh_private_key_file {key} does not exist or cannot be read",
            "fix the path, or the file's owner and mode",
        )
    info = os.stat(path)
    if info.st_uid == os.getuid() and info.st_mode & 0o077:
        raise UsageError(
            where,
            f"ansible_ssh_private_key_file {key} has mode {info.st_mode & 0o777:04o}, "
            "which ssh refuses as too open",
            f"chmod 600 {key}",
        )


def _check_host_address(where: str, host: str) -> None:
    """ansible_host is an IP address or a DNS name: one that looks like an address must
    be one, and nothing that ssh could read as an option (``-oProxyCommand=...``) or that
    holds spaces, quotes or control characters passes."""
    looks_like_address = host.replace(".", "").isdigit() or (":" in host and "." not in host)
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        if looks_like_address:
            raise UsageError(
                where, f"ansible_host {host} is not a valid IP address", "fix the address"
            ) from None
    if not DNS_NAME.match(host):
        raise UsageError(
            where,
            f"ansible_host {host!r} is not an IP address or host name",
            "use an address or a name of letters, digits, '.' and '-'",
        )


def _check_user(where: str, user: str) -> None:
    """ansible_user goes to ssh as ``-l USER``/``USER@HOST``: no leading '-', no spaces."""
    if not USER_NAME.match(user):
        raise UsageError(
            where,
            f"ansible_user {user!r} is not a user name",
            "use letters, digits, '.', '_', '-' and '@', not starting with '-'",
        )


def _host(path: Path, name: str, groups: list[str], v: dict[str, Any]) -> InventoryHost:
    where = f"inventory {path}: host {name}"
    port_value = v.get("ansible_port", v.get("ansible_ssh_port", 22))
    try:
        port = int(port_value)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise UsageError(where, f"ansible_port {port_value!r} is not a port", "use 1 to 65535")
    args = " ".join(
        str(v.get(key) or "") for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args")
    )
    try:
        ssh_args = tuple(shlex.split(args))
    except ValueError as exc:
        raise UsageError(where, f"ansible_ssh_common_args: {exc}", "fix the quoting") from exc
    key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
    if key:
        _check_key_file(where, str(key))
    host = str(v.get("ansible_host") or name)
    _check_host_address(where, host)
    user = str(v.get("ansible_user") or "root")
    _check_user(where, user)
    return InventoryHost(
        name=name,
        groups=tuple(g for g in groups if g not in ("all", "ungrouped")),
        host=host,
        port=port,
        user=user,
        key_file=str(key) if key else None,
        ssh_args=ssh_args,
        address=str(v.get("clusterai_address") or host),
        variables=v,
    )


def group_variables(path: Path, group: str, prefix: str, vault: Vault = NO_VAULT) -> dict[str, Any]:
    """The variables starting with ``prefix`` that ``group`` of the inventory at ``path``
    gets from the inventory and its group_vars (its ancestors' first, as Ansible orders
    them), templated; the group may hold no host yet. Raises UsageError naming the file."""
    with _ANSIBLE:
        from ansible.errors import AnsibleError
        from ansible.template import Templar
        from ansible.utils.vars import combine_vars
        from ansible.vars.plugins import get_vars_from_inventory_sources

        loader, manager = _open(path, vault)
        try:
            found = manager.groups.get(group)
            if found is None:
                raise UsageError(
                    f"inventory {path}",
                    f"has no group {group!r}",
                    f"add it (a child of workers) with its variables in group_vars/{group}.yml",
                )
            data: dict[str, Any] = {}
            for entity in sorted([*found.get_ancestors(), found], key=lambda g: g.depth):
                data = combine_vars(data, entity.get_vars())
                data = combine_vars(
                    data,
                    get_vars_from_inventory_sources(loader, [str(path)], [entity], "task"),
                )
            templar = Templar(loader=loader, variables=data)
            return {k: templar.template(v) for k, v in data.items() if k.startswith(prefix)}
        except AnsibleError as exc:
            raise _variables_error(path, f"group {group}", exc, vault, loader) from exc
