"""Spot interruptions: ``clusterai cloud watch`` asks each joined spot worker's instance
metadata for an interruption notice and takes the worker out before EC2 takes it back.

EC2 gives a spot instance two minutes' notice in its metadata
(``/latest/meta-data/spot/instance-action``, IMDSv2), readable only from the instance: the
controller asks over SSH (the worker's own host key, as every cloud login) every few
seconds. On a notice, the worker is drained at the gateway at once through its admin API
(no new request goes there; those in flight finish), then, under the cloud lock, taken
down as ``cloud down`` does it: scale_in.yml, TerminateInstances, the record ended with
the notice as its reason. Without the inventory's ``gateway_admin_key``, scale_in.yml's
own drain is the first.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import ClusterAIError
from clusterai_runner.store import LIVE_STATES, CloudInstance, Store
from clusterai_runner.usecases.cloud import (
    Cloud,
    Progress,
    ec2_for,
    exclusive,
    load,
    quiet,
    reconcile,
    ssh_target,
    take_down,
)
from clusterai_runner.usecases.cloud_policy import SpotNotice, spot_notice
from clusterai_runner.usecases.converge import CancelToken

if TYPE_CHECKING:
    from clusterai_runner.adapters.aws import Ec2
    from clusterai_runner.adapters.http import JsonApi

# AWS suggests asking every five seconds; the notice comes two minutes ahead.
INTERVAL_S = 5.0
TOKEN_TTL_S = 60

Taken = Callable[[CloudInstance, SpotNotice], None]


def _check_script(base_url: str) -> str:
    """On the worker: an IMDSv2 token, then spot/instance-action's body and, on the last
    line, its HTTP status (404 while there is no notice)."""
    base = shlex.quote(base_url)
    return f"""base={base}
token=$(curl -fsS -m 3 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: {TOKEN_TTL_S}' \\
  "$base/latest/api/token") || exit 3
curl -sS -m 3 -w '\\n%{{http_code}}\\n' -H "X-aws-ec2-metadata-token: $token" \\
  "$base/latest/meta-data/spot/instance-action"
"""


async def _ask(cloud: Cloud, record: CloudInstance) -> SpotNotice | str | None:
    from clusterai_runner.adapters import ssh

    host, options = ssh_target(cloud, record)
    script = _check_script(cloud.config.metadata_url)
    outcome = await ssh.run(host, options, script, accept_new=False, timeout=5.0)
    if outcome.rc != 0:
        return outcome.detail or f"the check exited {outcome.rc}"
    try:
        return spot_notice(outcome.stdout)
    except ValueError as exc:
        return str(exc)


def notices(
    cloud: Cloud, records: list[CloudInstance], progress: Progress = quiet
) -> list[tuple[CloudInstance, SpotNotice]]:
    """Ask each of ``records`` (joined spot workers) at once; a worker that cannot say is
    reported through ``progress`` and asked again next time."""
    if not records:
        return []

    async def ask_all() -> list[SpotNotice | str | None]:
        return list(await asyncio.gather(*(_ask(cloud, r) for r in records)))

    found = []
    for record, answer in zip(records, asyncio.run(ask_all()), strict=True):
        if isinstance(answer, str):
            progress(f"{record.host}: cannot read its spot notice: {answer}")
        elif answer is not None:
            found.append((record, answer))
    return found


def watched(store: Store) -> list[CloudInstance]:
    """The records whose metadata is asked: joined spot workers with an address."""
    return [r for r in store.cloud_instances(("joined",)) if r.spot and r.address]


def _drain_now(gateway: JsonApi | None, host: str, progress: Progress) -> None:
    """No new request to ``host`` from this moment (its requests in flight go on)."""
    from clusterai_runner.usecases.gateway_admin import drain

    if gateway is None:
        return
    try:
        drain(gateway, host, wait_s=0)
        progress(f"{host}: drained at the gateway")
    except ClusterAIError as exc:
        progress(f"{host}: the gateway did not drain it ({exc}); scale_in.yml will")


def act(
    cloud: Cloud,
    store: Store,
    ec2: Ec2,
    found: list[tuple[CloudInstance, SpotNotice]],
    gateway: JsonApi | None,
    drain: Callable[[Cloud, Store, list[CloudInstance]], None] | None = None,
    progress: Progress = quiet,
) -> list[tuple[CloudInstance, SpotNotice]]:
    """Take down the workers with a notice: drained at the gateway now, then (waiting for
    any other cloud command to end) scaled in and terminated."""
    for record, notice in found:
        progress(f"{record.host} ({record.instance_id}): {notice}")
        _drain_now(gateway, record.host, progress)
    with exclusive(cloud, wait=True):
        # What another command did meanwhile (a down, a reclaim reconcile saw) counts.
        reconcile(cloud, store, ec2, progress=progress)
        taken: list[tuple[CloudInstance, SpotNotice]] = []
        for record, notice in found:
            current = store.cloud_instance(record.intent)
            if current is None or current.state not in LIVE_STATES:
                continue
            done = take_down(cloud, store, ec2, [current], str(notice), drain)
            taken.extend((r, notice) for r in done)
    return taken


def watch(
    settings: Settings,
    inventory: Path,
    *,
    interval_s: float = INTERVAL_S,
    once: bool = False,
    vault: Vault = NO_VAULT,
    store: Store | None = None,
    ec2: Ec2 | None = None,
    drain: Callable[[Cloud, Store, list[CloudInstance]], None] | None = None,
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
    on_taken: Taken | None = None,
) -> list[tuple[CloudInstance, SpotNotice]]:
    """``clusterai cloud watch``: reconcile first, as every cloud verb; then every
    ``interval_s`` (once, with ``once``) ask the joined spot workers for a notice and
    take down those that have one, until ``cancel``. Returns what was taken down."""
    from clusterai_runner.usecases.services import of_inventory

    cloud = load(settings, inventory, vault)
    gateway = of_inventory(settings, inventory, vault).gateway
    if gateway is None:
        progress("no gateway_admin_key in the inventory: scale_in.yml drains the workers")
    cancel = cancel or CancelToken()
    taken: list[tuple[CloudInstance, SpotNotice]] = []
    with using_store(settings, store) as store:
        ec2 = ec2 or ec2_for(cloud)
        ec2.check_credentials()
        with exclusive(cloud, wait=True):
            reconcile(cloud, store, ec2, progress=progress)
        while True:
            found = notices(cloud, watched(store), progress)
            if found:
                for pair in act(cloud, store, ec2, found, gateway, drain, progress):
                    taken.append(pair)
                    if on_taken is not None:
                        on_taken(*pair)
            if once or cancel.wait(interval_s):
                return taken
