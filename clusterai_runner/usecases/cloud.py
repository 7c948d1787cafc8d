"""Cloud burst: EC2 workers that join the cluster, leave it drained, and never leak.

Every launch is a record in the store before the call that can create its instance,
and each step after it moves the record on (``store/cloud.py``): intent -> launched
(RunInstances answered) -> running (its address known) -> joined (preflighted and
converged by scale_out.yml as a worker of the ``cloud`` group, which lives in the state
store; first its SSH must answer with the host key it was given); with ``wait``, ``up``
returns once the gateway routes to the new workers. Down (``take_down``, for ``cloud
down`` and for a spot interruption notice, ``cloud_spot.py``): draining (scale_in.yml
drains it at the gateway and stops it) -> terminating -> terminated. The instance's
ClientToken is the intent's id, and its tags name the cluster and the intent, so
``reconcile`` (run first by every verb) finds what a crash left: an instance the store
does not know, or knows as failed, is terminated; an intent whose call never created
anything is closed after a grace period (the cloud's list lags behind a create).

The worker's SSH host key is made here and given to the instance in its user-data
(cloud-init's ``ssh_keys``), so the first connection checks the key it expects: host key
checking is never switched off and no key is accepted blindly. The rules (configuration,
caps, cost, reconcile's decisions) are pure functions in ``cloud_policy``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.adapters.inventory import group_variables
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.inventory_edit import NewHost, is_state_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import ClusterAIError, Interrupted, RunFailed, UsageError
from clusterai_runner.store import LIVE_STATES, CloudInstance, Store
from clusterai_runner.usecases.cloud_policy import (
    CloudConfig,
    ReconcileAction,
    SeenInstance,
    check_launch,
    cloud_config,
    reconcile_plan,
    spend,
    utc_now,
)
from clusterai_runner.usecases.converge import CancelToken

if TYPE_CHECKING:  # boto3 (and asyncssh) load only when a cloud verb runs
    from clusterai_runner.adapters import ssh
    from clusterai_runner.adapters.aws import Ec2, Instance
    from clusterai_runner.adapters.inventory import InventoryHost

GROUP = "cloud"
RUNNING_TIMEOUT_S = 600.0
# From joined to the gateway's next health check: seconds. (From running to SSH
# answering, Settings.cloud_ssh_timeout_s: cloud-init writes the keys, then sshd starts.)
ROUTED_TIMEOUT_S = 300.0
POLL_S = 2.0

Progress = Callable[[str], None]


def quiet(_message: str) -> None:
    pass


def ec2_for(cloud: Cloud) -> Ec2:
    from clusterai_runner.adapters.aws import Ec2

    return Ec2(cloud.config.region, cloud.settings.aws_read_timeout_s)


@dataclass(frozen=True)
class Cloud:
    """One inventory's cloud: its checked configuration and where its files live."""

    settings: Settings
    inventory: Path
    config: CloudConfig
    vault: Vault
    ssh_key_file: Path

    @property
    def known_hosts(self) -> Path:
        return self.settings.state_dir / "cloud" / self.config.cluster / "known_hosts"


def load(settings: Settings, inventory: Path, vault: Vault = NO_VAULT) -> Cloud:
    """The inventory's cloud configuration, checked before any call to the cloud."""
    configs = [inventory] if inventory.is_file() else sorted(inventory.glob("*.y*ml"))
    if not any(is_state_inventory(p) for p in configs):
        raise UsageError(
            f"inventory {inventory}",
            "has no clusterai_state.yml: cloud workers are kept in the state store",
            "make the inventory a directory that holds your hosts file and a "
            "clusterai_state.yml with `plugin: clusterai_state` (README, Cloud burst)",
        )
    hosts = load_inventory(inventory, vault=vault)
    control = next((h.name for h in hosts if "control" in h.groups), None)
    if control is None:
        raise UsageError(f"inventory {inventory}", "has no control host", "add one")
    variables = group_variables(inventory, GROUP, "cloud_", vault)
    source = f"inventory {inventory}, group {GROUP}"
    config = cloud_config(variables, source, control)
    key = variables.get("cloud_ssh_private_key_file")
    if not isinstance(key, str) or not key:
        raise UsageError(
            f"{source}: cloud_ssh_private_key_file",
            "is not set",
            "the private key Ansible logs in to cloud workers with; "
            "its .pub file goes into their user-data",
        )
    key_file = Path(key).expanduser()
    if not key_file.is_file() or not key_file.with_name(key_file.name + ".pub").is_file():
        raise UsageError(
            f"{source}: cloud_ssh_private_key_file",
            f"{key_file} or its .pub is missing",
            "make a key pair with ssh-keygen -t ed25519 -f PATH",
        )
    return Cloud(settings, inventory, config, vault, key_file)


def user_data(cloud: Cloud, host: str, host_private_key: str, host_public_key: str) -> str:
    """cloud-init user-data: the host name, the cluster's SSH key for the login user, and
    the host key the controller already knows; nothing else (the rest is Ansible's)."""
    public = cloud.ssh_key_file.with_name(cloud.ssh_key_file.name + ".pub").read_text().strip()
    document = {
        "hostname": host,
        "ssh_authorized_keys": [public],
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_private_key, "ed25519_public": host_public_key},
    }
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=True)


def _seen(instance: Instance) -> SeenInstance:
    return SeenInstance(
        instance.instance_id,
        instance.state,
        instance.intent,
        instance.address,
        instance.launched_at,
    )


@contextmanager
def exclusive(cloud: Cloud, wait: bool = False) -> Iterator[None]:
    """Hold the cluster's cloud lock: one cloud command at a time, so reconcile knows that
    a record left half way belongs to a command that is gone. With ``wait``, until the
    command that holds it ends; otherwise that is an error."""
    from clusterai_runner.adapters.files import Locked, locked

    folder = cloud.settings.private_state_dir() / "cloud" / cloud.config.cluster
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with locked(folder / "lock", wait=wait):
            yield
    except Locked as held:
        raise UsageError(
            f"cloud {cloud.config.cluster}",
            f"another clusterai cloud command is running (pid {held.holder})",
            "wait for it to end",
        ) from None


def reconcile(
    cloud: Cloud,
    store: Store,
    ec2: Ec2,
    *,
    adopt: bool = False,
    dry_run: bool = False,
    progress: Progress = quiet,
) -> list[ReconcileAction]:
    """Make the store and the cloud agree (see the module's text); return what was done
    (or, with ``dry_run``, what would be). The caller holds ``exclusive(cloud)``."""
    seen = ec2.tagged(cloud.config.cluster)
    actions = reconcile_plan(store.cloud_instances(), [_seen(i) for i in seen], utc_now(), adopt)
    if dry_run:
        return actions
    by_id = {i.instance_id: i for i in seen}
    doomed = [a for a in actions if a.kind == "terminate" and a.instance_id]
    if doomed:
        ids = [a.instance_id for a in doomed if a.instance_id]
        progress(f"terminating {len(ids)} instance(s): {', '.join(ids)}")
        ec2.terminate(ids)
    stamp = utc_now().isoformat(timespec="seconds")
    for action in actions:
        record = store.cloud_instance(action.intent) if action.intent else None
        if action.kind == "terminate" and record is not None:
            store.remove_host(record.host)
            store.update_cloud_instance(
                record.intent, "terminating", instance_id=action.instance_id, error=action.reason
            )
        elif action.kind == "ended" and record is not None:
            store.remove_host(record.host)
            store.update_cloud_instance(record.intent, "terminated", ended_at=stamp)
        elif action.kind == "close" and record is not None:
            store.update_cloud_instance(record.intent, "closed", error=action.reason)
        elif action.kind == "adopt" and action.instance_id:
            instance = by_id[action.instance_id]
            intent = instance.intent or uuid.uuid4().hex[:16]
            price = cloud.config.prices.get(instance.instance_type, 0.0)
            store.record_intent(intent, f"cloud-{intent[:8]}", instance.instance_type, False, price)
            store.update_cloud_instance(
                intent,
                "running",
                instance_id=instance.instance_id,
                address=instance.address,
                launched_at=instance.launched_at or stamp,
                error="adopted by reconcile",
            )
    # What the terminations above already show as going or gone is ended now.
    for action in doomed:
        shown = ec2.describe(action.instance_id) if action.instance_id else None
        going = shown is None or shown.state in ("shutting-down", "terminated")
        if action.intent and going and store.cloud_instance(action.intent) is not None:
            store.update_cloud_instance(action.intent, "terminated", ended_at=stamp)
    return actions


def reconcile_now(
    settings: Settings,
    inventory: Path,
    *,
    adopt: bool = False,
    dry_run: bool = False,
    vault: Vault = NO_VAULT,
    store: Store | None = None,
    ec2: Ec2 | None = None,
    progress: Progress = quiet,
) -> list[ReconcileAction]:
    """``clusterai cloud reconcile``: the inventory's cloud against the store, under the lock."""
    cloud = load(settings, inventory, vault)
    with exclusive(cloud), using_store(settings, store) as store:
        ec2 = ec2 or ec2_for(cloud)
        ec2.check_credentials()
        return reconcile(cloud, store, ec2, adopt=adopt, dry_run=dry_run, progress=progress)


def _launch_one(
    cloud: Cloud,
    store: Store,
    ec2: Ec2,
    image: str,
    instance_type: str,
    price: float,
    spot: bool,
    max_price: float | None,
    progress: Progress,
) -> CloudInstance:
    from clusterai_runner.adapters.aws import CloudUncertain, LaunchSpec
    from clusterai_runner.adapters.ssh import new_host_key

    intent = uuid.uuid4().hex[:16]
    host = f"cloud-{intent[:8]}"
    private, public = new_host_key(host)
    # Written before the call that can create the instance.
    store.record_intent(intent, host, instance_type, spot, price, host_key=public)
    spec = LaunchSpec(
        image_id=image,
        instance_type=instance_type,
        subnet_id=cloud.config.subnet_id,
        security_group_ids=cloud.config.security_group_ids,
        user_data=user_data(cloud, host, private, public),
        tags=cloud.config.tags_for(intent, host),
        client_token=intent,
        key_name=cloud.config.key_name,
        spot=spot,
        max_price=max_price,
    )
    progress(f"{host}: RunInstances {instance_type}{' (spot)' if spot else ''}")
    try:
        try:
            instance = ec2.run(spec)
        except CloudUncertain:
            # The same token never makes a second instance: ask again.
            progress(f"{host}: no answer to RunInstances; asking again with the same token")
            instance = ec2.run(spec)
    except CloudUncertain as exc:
        # Maybe created, maybe not: reconcile settles it by the intent's tag.
        store.update_cloud_instance(intent, "failed", error=str(exc))
        raise
    except ClusterAIError as exc:
        # The cloud answered with an error: nothing was created.
        store.update_cloud_instance(intent, "closed", error=str(exc))
        raise
    stamp = instance.launched_at or utc_now().isoformat(timespec="seconds")
    return store.update_cloud_instance(
        intent, "launched", instance_id=instance.instance_id, launched_at=stamp
    )


def _wait_running(
    store: Store,
    ec2: Ec2,
    record: CloudInstance,
    cancel: CancelToken | None,
    progress: Progress,
) -> CloudInstance:
    assert record.instance_id is not None
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    while True:
        instance = ec2.describe(record.instance_id)
        state = instance.state if instance else "missing"
        if state == "running" and instance is not None and instance.address:
            progress(f"{record.host}: running at {instance.address}")
            return store.update_cloud_instance(record.intent, "running", address=instance.address)
        if state not in ("pending",) or time.monotonic() > deadline:
            why = f"{record.instance_id} is {state}" if state != "pending" else "still pending"
            store.update_cloud_instance(record.intent, "failed", error=why)
            raise RunFailed(f"cloud worker {record.host}", why, "see `clusterai cloud list`")
        if (cancel or CancelToken()).wait(POLL_S):
            store.update_cloud_instance(record.intent, "failed", error="canceled")
            raise Interrupted(
                f"cloud worker {record.host}",
                "canceled while pending",
                "`clusterai cloud reconcile` terminates it",
            )


def ssh_target(cloud: Cloud, record: CloudInstance) -> tuple[InventoryHost, ssh.Options]:
    """How the controller logs in to a cloud worker: the cluster's key, and only the host
    key the worker was given (the cluster's cloud known_hosts)."""
    from clusterai_runner.adapters import ssh
    from clusterai_runner.adapters.inventory import InventoryHost

    assert record.address is not None
    key = str(cloud.ssh_key_file)
    host = InventoryHost(
        record.host, (GROUP,), record.address, 22, cloud.config.ssh_user, key, (), record.address
    )
    return host, ssh.Options((str(cloud.known_hosts),), (key,), use_agent=False)


def _wait_ssh(
    cloud: Cloud, record: CloudInstance, cancel: CancelToken | None, progress: Progress
) -> None:
    """Until the worker's SSH answers with the host key it was given. Another key means
    another machine has the address: that stops at once, it is never waited out."""
    import asyncio

    from clusterai_runner.adapters import ssh

    host, options = ssh_target(cloud, record)
    timeout_s = cloud.settings.cloud_ssh_timeout_s
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = asyncio.run(ssh.run(host, options, "true\n", accept_new=False, timeout=5.0))
        if outcome.rc == 0:
            progress(f"{record.host}: SSH answers with its host key")
            return
        if outcome.failure in ("host_key_changed", "host_key_unknown"):
            raise RunFailed(
                f"cloud worker {record.host}",
                f"{record.address} answers with a host key other than the one it was given",
                "another machine may hold the address; the instance is terminated",
            )
        if time.monotonic() > deadline:
            raise RunFailed(
                f"cloud worker {record.host}",
                f"SSH did not answer within {timeout_s} s ({outcome.detail})",
                "see the instance's console output in the EC2 console",
            )
        if (cancel or CancelToken()).wait(POLL_S):
            raise Interrupted(f"cloud worker {record.host}", "canceled while waiting for SSH",
                              "the instance is terminated")  # fmt: skip


def _gateway_of(cloud: Cloud) -> JsonApi:
    """The gateway's admin API, for ``--wait``: refused before any call to the cloud when
    the inventory gives no admin key."""
    from clusterai_runner.usecases.services import of_inventory

    gateway = of_inventory(cloud.settings, cloud.inventory, cloud.vault).gateway
    if gateway is None:
        raise UsageError(
            "--wait",
            "needs the gateway's admin key: the inventory has no gateway_admin_key",
            "set it in the inventory's vault, or leave --wait out",
        )
    return gateway


def wait_routed(
    gateway: JsonApi,
    hosts: list[str],
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
    timeout_s: float = ROUTED_TIMEOUT_S,
) -> None:
    """Until the gateway lists each host as a healthy backend that is not draining."""
    deadline = time.monotonic() + timeout_s
    waiting = set(hosts)
    while True:
        try:
            listed = (gateway.get("/admin/backends") or {}).get("backends") or []
        except ClusterAIError as exc:
            listed, why = [], str(exc)
        else:
            why = ""
        routed = {b.get("name") for b in listed if b.get("healthy") and not b.get("draining")}
        if not waiting - routed:
            progress(f"the gateway routes to {', '.join(sorted(waiting))}")
            return
        if time.monotonic() > deadline:
            raise RunFailed(
                "cloud up --wait",
                f"the gateway does not route to {', '.join(sorted(waiting - routed))} after "
                f"{timeout_s:g} s{': ' + why if why else ''}",
                "the workers joined; see `clusterai status` and the gateway's /admin/backends",
            )
        if (cancel or CancelToken()).wait(POLL_S):
            raise Interrupted("cloud up --wait", "canceled", "the workers joined and stay")


def _known_hosts_line(record: CloudInstance) -> str:
    return f"{record.address} {record.host_key}\n"


def new_worker(cloud: Cloud, record: CloudInstance) -> NewHost:
    """The cloud worker as scale-out adds it to the state store: its address, the login
    user and key, and a known_hosts file that holds the host key it was given."""
    assert record.address is not None
    return NewHost(
        record.host,
        record.address,
        cloud.config.ssh_user,
        None,
        extra={
            "ansible_ssh_private_key_file": str(cloud.ssh_key_file),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={cloud.known_hosts}",
            "ansible_become": "true",
            "clusterai_cloud_instance_id": record.instance_id or "",
        },
    )


def write_known_hosts(cloud: Cloud, store: Store) -> None:
    """The known_hosts of the cluster's live cloud workers, rewritten from the store."""
    from clusterai_runner.adapters.files import atomic_write

    lines = [
        _known_hosts_line(r) for r in store.cloud_instances(LIVE_STATES) if r.address and r.host_key
    ]
    cloud.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(cloud.known_hosts, "".join(lines), mode=0o600)


@dataclass(frozen=True)
class UpResult:
    launched: list[CloudInstance]
    reconciled: list[ReconcileAction]


def up(
    settings: Settings,
    inventory: Path,
    count: int,
    *,
    instance_type: str | None = None,
    spot: bool = False,
    max_price: float | None = None,
    vault: Vault = NO_VAULT,
    store: Store | None = None,
    ec2: Ec2 | None = None,
    join: Callable[[Cloud, Store, list[CloudInstance]], None] | None = None,  # join_workers
    wait: bool = False,
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
) -> UpResult:
    """Launch ``count`` workers and join them to the cluster (``join``: scale-out by
    default); with ``wait``, until the gateway routes to them. Every check, the caps
    included, runs before the first call that can create anything; a worker that fails
    to start, to answer over SSH or to join is terminated."""
    cloud = load(settings, inventory, vault)
    gateway = _gateway_of(cloud) if wait else None
    chosen = instance_type or cloud.config.default_type
    if max_price is not None and not spot:
        raise UsageError("--max-price", "only goes with --spot", "add --spot or drop it")
    if max_price is not None and max_price <= 0:
        raise UsageError("--max-price", f"{max_price} is not a positive price", "e.g. 0.5")
    with exclusive(cloud), using_store(settings, store) as store:
        check_launch(cloud.config, store.cloud_instances(), count, chosen, utc_now())
        ec2 = ec2 or ec2_for(cloud)
        ec2.check_credentials()
        reconciled = reconcile(cloud, store, ec2, progress=progress)
        price = check_launch(cloud.config, store.cloud_instances(), count, chosen, utc_now())
        image = cloud.config.ami
        if cloud.config.ssm_parameter:
            image = ec2.resolve_image(cloud.config.ssm_parameter)
        ec2.check_image(image)
        vpc = ec2.subnet_vpc(cloud.config.subnet_id)
        foreign = {
            g: v for g, v in ec2.group_vpcs(cloud.config.security_group_ids).items() if v != vpc
        }
        if foreign:
            group, other = next(iter(foreign.items()))
            raise UsageError(
                f"cloud_security_group_ids {group}",
                f"is in {other}, the subnet in {vpc}",
                "name groups of the subnet's VPC",
            )
        # Launched one by one into this list, so that whatever fails later (a second
        # launch, the wait, the join) terminates every instance made so far.
        launched: list[CloudInstance] = []
        running: list[CloudInstance] = []
        try:
            for _ in range(count):
                launched.append(
                    _launch_one(cloud, store, ec2, image, chosen, price, spot, max_price, progress)
                )
            for record in launched:
                running.append(_wait_running(store, ec2, record, cancel, progress))
            write_known_hosts(cloud, store)
            if join is None:
                join_workers(cloud, store, running, cancel, progress)
            else:
                join(cloud, store, running)
        except BaseException as exc:
            made = [r for r in launched if r.instance_id]
            if made:
                progress(f"terminating {len(made)} worker(s) that did not join: {exc}")
                terminate(cloud, store, ec2, made, reason=str(exc))
            raise
        joined = [store.update_cloud_instance(r.intent, "joined") for r in running]
        progress(f"joined: {', '.join(r.host for r in joined)}")
    if gateway is not None:
        wait_routed(gateway, [r.host for r in joined], cancel, progress)
    return UpResult(joined, reconciled)


def join_workers(
    cloud: Cloud,
    store: Store,
    records: list[CloudInstance],
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
) -> None:
    """Once each running instance answers over SSH with its host key, preflight them and
    converge them as ``cloud`` workers."""
    from clusterai_runner.usecases.scale import scale_out

    for record in records:
        _wait_ssh(cloud, record, cancel, progress)
    result = scale_out(
        cloud.settings,
        cloud.inventory,
        GROUP,
        [new_worker(cloud, r) for r in records],
        store=store,
        on_validated=lambda reports: progress(
            f"preflight passed on {len(reports)} worker(s); converging them (scale_out.yml)"
        ),
        cancel=cancel,
        vault=cloud.vault,
    )
    status = result.record.outcome.status if result.record is not None else "not run"
    if status == "canceled":
        raise Interrupted("cloud up", "canceled during scale_out.yml", "the workers are terminated")
    if status != "successful":
        raise RunFailed(
            "cloud up", "scale_out.yml failed on the new workers", "see `clusterai runs list`"
        )


def terminate(
    cloud: Cloud, store: Store, ec2: Ec2, records: list[CloudInstance], reason: str = ""
) -> list[CloudInstance]:
    """Terminate the records' instances and wait until the cloud says they are gone;
    their hosts leave the state store."""
    ids = [r.instance_id for r in records if r.instance_id]
    for record in records:
        store.update_cloud_instance(record.intent, "terminating", error=reason or record.error)
    ec2.terminate([i for i in ids if i])
    done: list[CloudInstance] = []
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    for record in records:
        while record.instance_id:
            instance = ec2.describe(record.instance_id)
            if instance is None or instance.state == "terminated":
                break
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"cloud worker {record.host}",
                    f"{record.instance_id} is still {instance.state}",
                    "run `clusterai cloud reconcile` later",
                )
            time.sleep(POLL_S)
        store.remove_host(record.host)
        done.append(
            store.update_cloud_instance(
                record.intent, "terminated", ended_at=utc_now().isoformat(timespec="seconds")
            )
        )
    write_known_hosts(cloud, store)
    return done


def down(
    settings: Settings,
    inventory: Path,
    targets: list[str],
    *,
    everything: bool = False,
    vault: Vault = NO_VAULT,
    store: Store | None = None,
    ec2: Ec2 | None = None,
    drain: Callable[[Cloud, Store, list[CloudInstance]], None] | None = None,
    progress: Progress = quiet,
) -> list[CloudInstance]:
    """Drain, scale in and terminate cloud workers named by instance id or host name
    (or all of them); a name that is not this cluster's cloud worker is refused before
    anything changes."""
    cloud = load(settings, inventory, vault)
    with exclusive(cloud), using_store(settings, store) as store:
        live = store.cloud_instances(LIVE_STATES)
        if everything:
            chosen = live
        else:
            if not targets:
                raise UsageError("cloud down", "names no worker", "give instance ids or --all")
            index = {
                **{r.host: r for r in live},
                **{r.instance_id: r for r in live if r.instance_id},
            }
            unknown = [t for t in targets if t not in index]
            if unknown:
                raise UsageError(
                    f"cloud down {unknown[0]}",
                    "is not a live cloud worker of this cluster",
                    "see `clusterai cloud list`",
                )
            chosen = list({index[t].intent: index[t] for t in targets}.values())
        ec2 = ec2 or ec2_for(cloud)
        ec2.check_credentials()
        reconcile(cloud, store, ec2, progress=progress)
        chosen = [
            r
            for r in (store.cloud_instance(c.intent) for c in chosen)
            if r is not None and r.state in LIVE_STATES
        ]
        return take_down(cloud, store, ec2, chosen, "cloud down", drain)


def take_down(
    cloud: Cloud,
    store: Store,
    ec2: Ec2,
    records: list[CloudInstance],
    reason: str,
    drain: Callable[[Cloud, Store, list[CloudInstance]], None] | None = None,
) -> list[CloudInstance]:
    """Drain the joined ones and scale them in (``drain``: drain_workers), then terminate
    them all; ``reason`` stays on their records. The caller holds ``exclusive(cloud)``."""
    joined = [r for r in records if r.state in ("joined", "draining")]
    if joined:
        for record in joined:
            store.update_cloud_instance(record.intent, "draining", error=reason)
        (drain or drain_workers)(cloud, store, joined)
    return terminate(cloud, store, ec2, records, reason=reason)


def drain_workers(cloud: Cloud, store: Store, records: list[CloudInstance]) -> None:
    """Drain the workers at the gateway and stop them (scale_in.yml)."""
    from clusterai_runner.usecases.scale import scale_in

    result = scale_in(
        cloud.settings, cloud.inventory, [r.host for r in records], store=store, vault=cloud.vault
    )
    if result.record is None or result.record.outcome.status != "successful":
        raise RunFailed(
            "cloud down",
            "scale_in.yml failed; the instances still run",
            "see `clusterai runs list`, then run cloud down again",
        )


def listing(settings: Settings, store: Store | None = None) -> list[CloudInstance]:
    with using_store(settings, store) as store:
        return store.cloud_instances()


@dataclass(frozen=True)
class CostReport:
    rows: list[tuple[CloudInstance, float]]
    hourly_now: float
    month_to_date: float
    total: float


def cost(settings: Settings, store: Store | None = None) -> CostReport:
    """What each cloud worker has cost from its launch to its end (or now), at the
    price recorded when it was launched."""
    from clusterai_runner.usecases.cloud_policy import instance_cost

    now = utc_now()
    with using_store(settings, store) as store:
        records = store.cloud_instances()
    totals = spend(records, now)
    return CostReport(
        [(r, instance_cost(r, now)) for r in records],
        totals.hourly_now,
        totals.month_to_date,
        totals.total,
    )
