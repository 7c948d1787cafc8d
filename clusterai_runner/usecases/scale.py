"""Adding workers to a running cluster and taking them out: ``clusterai scale-out/in``.

A host lives either in a YAML inventory file, edited in place (see inventory_edit), or in
the state store, when the inventory is a ``clusterai_state.yml`` config of the dynamic
inventory plugin. Nothing is left half done by a bad input: every check runs before the
first change, and a scale-out whose preflight fails puts the inventory back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from clusterai_runner.adapters.ansible import TaskEvent
from clusterai_runner.adapters.inventory import PARKED, InventoryHost, check_inventory
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.inventory_edit import (
    Edit,
    NewHost,
    add_hosts,
    add_to_group,
    hosts_in,
    is_state_inventory,
    remove_hosts,
)
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import Interrupted, PreflightError, UsageError
from clusterai_runner.store import Store
from clusterai_runner.usecases.converge import (
    CancelToken,
    RunRecord,
    check_inventory_rules,
    run_and_record,
)
from clusterai_runner.usecases.validate import HostReport, validate

HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*$")


def _check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", address) or not HOSTNAME.match(address):
        raise UsageError(
            f"--address {address}", "is not an IP address or host name", "e.g. 192.0.2.40"
        )
    return address


def new_hosts(
    names: list[str], addresses: list[str], user: str | None, port: int | None
) -> list[NewHost]:
    """The hosts named on the command line, checked; one --address per host when given."""
    if len(set(names)) != len(names):
        raise UsageError("scale-out", "a host is named twice", "name each host once")
    for name in names:
        if not HOST_NAME.match(name):
            raise UsageError(
                f"host {name!r}",
                "is not a valid inventory host name",
                "use letters, digits, '.', '-' and '_', starting with a letter or digit",
            )
    if addresses and len(addresses) != len(names):
        raise UsageError(
            "--address",
            f"{len(addresses)} addresses for {len(names)} hosts",
            "give one --address per host, in the same order, or none",
        )
    if user is not None and not USER_NAME.match(user):
        raise UsageError(f"--user {user}", "is not a valid user name", "e.g. --user deploy")
    checked: list[str | None] = [_check_address(a) for a in addresses] or [None] * len(names)
    return [NewHost(n, a, user, port) for n, a in zip(names, checked, strict=True)]


@dataclass
class ScaleResult:
    record: RunRecord | None
    validation: list[HostReport] = field(default_factory=list)
    edited: list[Path] = field(default_factory=list)


class _Placement:
    """Where hosts are added: the state store when the inventory is, or holds, a
    ``clusterai_state.yml`` config of the dynamic inventory plugin; otherwise the YAML
    file of the inventory that defines the group. Hosts are removed from wherever
    they are."""

    def __init__(self, inventory: Path, store: Store, vault: Vault = NO_VAULT) -> None:
        self.inventory = inventory
        self.vault = vault
        self.store = store
        configs = [inventory] if inventory.is_file() else list(inventory.glob("*.y*ml"))
        self.in_state = any(is_state_inventory(p) for p in configs)

    def existing(self) -> dict[str, tuple[str, ...]]:
        """Host name -> its groups, for every host the inventory has now."""
        recorded = {h.name: tuple(h.groups) for h in self.store.hosts()}
        if self.in_state and self.inventory.is_file():
            return recorded
        return {
            **recorded,
            **{h.name: h.groups for h in load_inventory(self.inventory, vault=self.vault)},
        }

    def add(self, group: str, hosts: list[NewHost]) -> Callable[[], None]:
        if not self.in_state:
            edit: Edit = add_hosts(self.inventory, group, hosts)
            return edit.undo
        for host in hosts:
            # The plugin sets ansible_host and clusterai_address from the address.
            variables = {
                k: v
                for k, v in host.variables().items()
                if k not in ("ansible_host", "clusterai_address")
            }
            self.store.put_host(host.name, host.address or host.name, [group], variables)

        def undo() -> None:
            for host in hosts:
                self.store.remove_host(host.name)

        return undo

    def removable(self, names: list[str]) -> None:
        recorded = {h.name for h in self.store.hosts()}
        in_files = [n for n in names if n not in recorded]
        if not in_files:
            return
        listed = set().union(*hosts_in(self.inventory).values())
        missing = [n for n in in_files if n not in listed]
        if missing:
            raise UsageError(
                f"host {', '.join(missing)}",
                f"is not listed in a YAML file of inventory {self.inventory}",
                "remove it from the inventory by hand, then run scale-in with the others",
            )

    def remove(self, names: list[str]) -> list[Path]:
        in_files = [n for n in names if not self.store.remove_host(n)]
        return [edit.path for edit in remove_hosts(self.inventory, in_files)] if in_files else []

    def set_parked(self, name: str, parked: bool) -> Callable[[], None]:
        """Put worker ``name`` in the parked group or take it out; returns the undo."""
        recorded = next((h for h in self.store.hosts() if h.name == name), None)
        if recorded is not None:
            groups = [g for g in recorded.groups if g != PARKED] + ([PARKED] if parked else [])
            self.store.put_host(name, recorded.address, groups, recorded.variables)

            def restore() -> None:
                self.store.put_host(name, recorded.address, recorded.groups, recorded.variables)

            return restore
        if parked:
            return add_to_group(self.inventory, PARKED, name).undo
        edits = remove_hosts(self.inventory, [name], PARKED)

        def undo() -> None:
            for edit in reversed(edits):
                edit.undo()

        return undo


def scale_out(
    settings: Settings,
    inventory: Path,
    group: str,
    hosts: list[NewHost],
    *,
    store: Store | None = None,
    accept_new_host_keys: bool = False,
    timeout: float = 10.0,
    on_validated: Callable[[list[HostReport]], None] | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> ScaleResult:
    """Add ``hosts`` (from ``new_hosts``) to ``group``, check them over SSH, then converge
    them and the control host with scale_out.yml. Hosts already in ``group`` are
    converged again (a re-run heals a failed scale-out); a host already in another group
    is refused. Canceled before the run, the inventory is put back."""
    inventory = check_inventory(inventory)
    if group == "control":
        raise UsageError("--group control", "the cluster has one control host", "add workers")
    with using_store(settings, store) as store:
        placement = _Placement(inventory, store, vault)
        existing = placement.existing()
        for host in hosts:
            groups = existing.get(host.name)
            if groups is not None and group not in groups:
                raise UsageError(
                    f"host {host.name}",
                    f"is already in the inventory, in {', '.join(groups) or 'no group'}",
                    "pick another name, or scale it in first",
                )
        fresh = [h for h in hosts if h.name not in existing]
        undo = placement.add(group, fresh) if fresh else (lambda: None)
        names = [h.name for h in hosts]
        try:
            check_inventory_rules(inventory, names, cancel, vault)
            targets = load_inventory(inventory, ",".join(names), vault)
            reports = validate(targets, accept_new=accept_new_host_keys, timeout=timeout)
            if cancel is not None and cancel.canceled:
                raise Interrupted("scale-out", "canceled", "the inventory was left as it was")
            if on_validated is not None:
                on_validated(reports)
            failed = [r.name for r in reports if r.status == "fail"]
            if failed:
                raise PreflightError(
                    "scale-out",
                    f"preflight failed on {', '.join(failed)}; the inventory was left as it was",
                    "fix what is listed above and run it again",
                )
        except BaseException:
            undo()
            raise
        record = run_and_record(
            settings,
            store,
            "scale_out.yml",
            inventory,
            extravars={"clusterai_targets": ",".join(names)},
            on_event=on_event,
            cancel=cancel,
            vault=vault,
        )
        return ScaleResult(record, reports)


def scale_in_targets(
    settings: Settings,
    inventory: Path,
    names: list[str],
    store: Store | None = None,
    vault: Vault = NO_VAULT,
) -> list[InventoryHost]:
    """The hosts ``names`` of the inventory, checked for removal; nothing is changed."""
    inventory = check_inventory(inventory)
    with using_store(settings, store) as store:
        if len(set(names)) != len(names):
            raise UsageError("scale-in", "a host is named twice", "name each host once")
        known = {h.name: h for h in load_inventory(inventory, vault=vault)}
        missing = [n for n in names if n not in known]
        if missing:
            raise UsageError(
                f"host {', '.join(missing)}",
                f"is not in inventory {inventory}",
                f"hosts: {', '.join(sorted(known)[:20])}",
            )
        control = [n for n in names if "control" in known[n].groups]
        if control:
            raise UsageError(
                f"host {', '.join(control)}",
                "is the control host; scale-in removes workers only",
                "name workers, or take the cluster down with playbooks/reset.yml",
            )
        _Placement(inventory, store, vault).removable(names)
        return [known[n] for n in names]


def scale_in(
    settings: Settings,
    inventory: Path,
    names: list[str],
    *,
    store: Store | None = None,
    drain_timeout: int = 60,
    wipe: bool = False,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> ScaleResult:
    """Drain and stop ``names`` with scale_in.yml, then delete them from the inventory or
    the state. A failed or canceled run leaves them where they are."""
    inventory = check_inventory(inventory)
    with using_store(settings, store) as store:
        scale_in_targets(settings, inventory, names, store, vault)
        record = run_and_record(
            settings,
            store,
            "scale_in.yml",
            inventory,
            extravars={
                "clusterai_targets": ",".join(names),
                "clusterai_confirm": True,
                "clusterai_drain_timeout": drain_timeout,
                "clusterai_wipe": wipe,
            },
            on_event=on_event,
            cancel=cancel,
            vault=vault,
        )
        edited: list[Path] = []
        if record.outcome.status == "successful":
            edited = _Placement(inventory, store, vault).remove(names)
        return ScaleResult(record, edited=edited)


def _worker(
    settings: Settings, inventory: Path, name: str, store: Store, vault: Vault
) -> InventoryHost:
    host = scale_in_targets(settings, inventory, [name], store, vault)[0]
    if host.kind != "workers":
        raise UsageError(f"host {name}", "is not a worker", "park and start workers only")
    return host


def _with_parked(
    settings: Settings,
    inventory: Path,
    name: str,
    parked: bool,
    store: Store,
    vault: Vault,
    step: Callable[[], ScaleResult],
) -> ScaleResult:
    """Put worker ``name`` in the parked group (or take it out), then run ``step``; a step
    that raises, or whose run did not succeed, puts the group back as it was."""
    host = _worker(settings, inventory, name, store, vault)
    if host.parked == parked:
        raise UsageError(
            f"host {name}",
            "is parked already" if parked else "is not parked",
            "start it first" if parked else "it is serving already",
        )
    undo = _Placement(inventory, store, vault).set_parked(name, parked)
    try:
        result = step()
    except BaseException:
        undo()
        raise
    if result.record is None or result.record.outcome.status != "successful":
        undo()
    return result


def park(
    settings: Settings,
    inventory: Path,
    name: str,
    *,
    store: Store | None = None,
    drain_timeout: int = 60,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> ScaleResult:
    """Stop worker ``name``'s inference server and keep it ready to start again: it goes
    into the inventory's parked group (so no play serves a model there and the gateway and
    Prometheus leave it out), then scale_in.yml with clusterai_park drains it at the
    gateway, waits for its requests in flight and stops its server. A failed run takes
    it out of parked again."""
    inventory = check_inventory(inventory)
    with using_store(settings, store) as store:
        opened = store

        def stop_server() -> ScaleResult:
            extravars: dict[str, object] = {
                "clusterai_targets": name,
                "clusterai_confirm": True,
                "clusterai_drain_timeout": drain_timeout,
                "clusterai_park": True,
            }
            return ScaleResult(
                run_and_record(
                    settings,
                    opened,
                    "scale_in.yml",
                    inventory,
                    extravars=extravars,
                    on_event=on_event,
                    cancel=cancel,
                    vault=vault,
                )
            )

        return _with_parked(settings, inventory, name, True, store, vault, stop_server)


def unpark(
    settings: Settings,
    inventory: Path,
    name: str,
    *,
    store: Store | None = None,
    timeout: float = 10.0,
    on_validated: Callable[[list[HostReport]], None] | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> ScaleResult:
    """Start parked worker ``name`` again: out of the parked group, then ``scale_out``
    (preflight over SSH, scale_out.yml: converged, and in the gateway's backends and
    Prometheus' targets). A failed preflight or run puts it back in parked."""
    inventory = check_inventory(inventory)
    with using_store(settings, store) as store:
        opened = store

        def converge() -> ScaleResult:
            return scale_out(
                settings,
                inventory,
                "workers",
                [NewHost(name)],
                store=opened,
                timeout=timeout,
                on_validated=on_validated,
                on_event=on_event,
                cancel=cancel,
                vault=vault,
            )

        return _with_parked(settings, inventory, name, False, store, vault, converge)
