"""``clusterai autoscale``: the loop around the autoscaler's policy.

Each evaluation reads the gateway's load through its admin API (queue wait p95 over the
last minute, requests waiting and in flight, workers serving), and when GPU targets are
set the serving workers' GPUs from Prometheus; each pool's hosts from the inventory (a
pool's hosts are those of its group; parked ones are stopped; a cloud pool's are the
cloud workers of the state store, and how many more its caps allow), asks
``autoscaler.policy.decide`` and carries out what it says through the use cases:
a scale-out starts a parked worker (``scale.unpark``: out of the parked group, preflight,
scale_out.yml), a scale-in parks one (``scale.park``: into the parked group, drained at
the gateway, its server stopped by scale_in.yml); a cloud pool's launches a worker
(``cloud.up``) or drains and terminates one (``cloud.down``); a hosted pool's turns a
provider on or off at the gateway. One action at a time; every decision
that acts, or holds for a new reason, is written to the store with its inputs and
outcome, and the loop's memory (timers, backoffs) is kept there too, so ``once`` from a
timer and ``run`` after a restart go on where the last evaluation stopped.

Nothing here prints or touches a signal: the CLI renders ``progress`` and stops ``run``
with the cancel token.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from clusterai_runner import backends
from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.adapters.inventory import InventoryHost, check_inventory, group_variables
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.autoscaler.config import autoscale_config, check_desktop_host
from clusterai_runner.autoscaler.metrics import AutoscaleMetrics
from clusterai_runner.autoscaler.policy import (
    Action,
    AutoscaleConfig,
    Decision,
    Memory,
    PoolConfig,
    PoolState,
    Signals,
    after_start,
    decide,
)
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.store import AutoscaleDecision, Store
from clusterai_runner.usecases import cloud, healing
from clusterai_runner.usecases.cloud_policy import check_launch, utc_now
from clusterai_runner.usecases.converge import CancelToken, TaskEvent
from clusterai_runner.usecases.metrics import gpu_load
from clusterai_runner.usecases.status import tcp_open

Progress = Callable[[str], None]
# The desktop role's check: exit 0 and say why when the owner uses the machine, 1 when not.
OWNER_CHECK = "exec /usr/local/libexec/clusterai/owner-active\n"
# How long a desktop woken by its magic packet has to answer SSH.
WAKE_TIMEOUT_S = 180.0


def quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class Autoscaler:
    settings: Settings
    inventory: Path
    config: AutoscaleConfig
    gateway: JsonApi
    vault: Vault = NO_VAULT
    cloud: cloud.Cloud | None = None  # with a cloud pool: the inventory's cloud
    prometheus: JsonApi | None = None  # with GPU targets: where the GPU figures come from


@dataclass(frozen=True)
class Done:
    """How an action ended: its error, the run it made, the host it acted on (a cloud
    launch names its new host only once it is made)."""

    ok: bool
    error: str = ""
    run_id: int | None = None
    host: str = ""


@dataclass(frozen=True)
class Evaluation:
    """One look at the cluster and what the policy made of it."""

    at: float
    signals: Signals | None
    signals_error: str
    pools: list[PoolState]
    decision: Decision
    # The gateway's backends by name, as /admin/backends listed them (their flags too).
    at_gateway: dict[str, dict[str, Any]] = field(default_factory=dict)

    def inputs(self) -> dict[str, Any]:
        return {
            "signals": asdict(self.signals) if self.signals is not None else None,
            "signals_error": self.signals_error,
            "pools": {
                p.name: {
                    "active": list(p.active),
                    "parked": list(p.parked),
                    "models": {h: list(m) for h, m in sorted(p.models.items())},
                    "unavailable": dict(sorted(p.unavailable.items())),
                    "start_s": p.start_s,
                    # A cloud pool's: whether one more may be launched now, and why not.
                    **(
                        {"launchable": p.launchable, "capped": p.capped}
                        if p.launchable or p.capped
                        else {}
                    ),
                }
                for p in self.pools
            },
            "mins": dict(self.decision.mins),
        }

    def to_json(self) -> dict[str, Any]:
        """What ``autoscale plan --json`` prints (documented in the README; stable)."""
        action = self.decision.action
        return {
            "at": datetime.fromtimestamp(self.at).astimezone().isoformat(timespec="seconds"),
            "action": asdict(action) if action is not None else None,
            "reason": self.decision.reason,
            **self.inputs(),
        }


def load(settings: Settings, inventory: Path, vault: Vault = NO_VAULT) -> Autoscaler:
    """The inventory's autoscaler configuration, checked against its hosts; raises one
    UsageError naming the variable, group or host."""
    from clusterai_runner.usecases.services import of_inventory

    inventory = check_inventory(inventory)
    source = f"inventory {inventory}"
    config = autoscale_config(group_variables(inventory, "control", "autoscale_", vault), source)
    hosts = load_inventory(inventory, None, vault)
    the_cloud = None
    for index, pool in enumerate(config.pools):
        if pool.kind == "hosted":  # its backends are the gateway's, checked as it runs
            continue
        if pool.kind == "cloud":  # its hosts are launched; the cloud's settings checked
            the_cloud = _cloud_of(
                settings, inventory, vault, pool, f"{source}: autoscale_pools[{index}]"
            )
            continue
        members = [h for h in hosts if pool.group in h.groups]
        if not members:
            raise UsageError(
                f"{source}: autoscale_pools[{index}].group",
                f"group {pool.group!r} holds no host",
                f"list the pool's hosts under {pool.group}, a child of workers",
            )
        strays = [h.name for h in members if h.kind != "workers"]
        if strays:
            raise UsageError(
                f"{source}: autoscale_pools[{index}].group",
                f"{', '.join(strays)} in group {pool.group!r} not a worker",
                f"make {pool.group} a child of workers",
            )
        shared = [
            h.name
            for h in members
            if any(o.group in h.groups for o in config.pools if o is not pool)
        ]
        if shared:
            raise UsageError(
                f"{source}: autoscale_pools[{index}].group",
                f"{', '.join(shared)} in two pools' groups",
                "put each host in one pool",
            )
        if pool.kind == "desktop":
            for h in members:
                check_desktop_host(h.name, h.variables)
    services = of_inventory(settings, inventory, vault, timeout=5.0)
    gateway = services.gateway
    if gateway is None:
        raise UsageError(
            f"{source}: gateway_admin_key",
            "is not set; the autoscaler reads the load from the gateway's admin API",
            "put the gateway's admin key in the vault and name it gateway_admin_key",
        )
    gpus = config.target_gpu_utilization or config.target_gpu_memory
    return Autoscaler(
        settings,
        inventory,
        config,
        gateway,
        vault,
        the_cloud,
        services.prometheus if gpus else None,
    )


def _cloud_of(
    settings: Settings, inventory: Path, vault: Vault, pool: PoolConfig, at: str
) -> cloud.Cloud:
    """The inventory's cloud for a cloud pool, its max and instance type checked against
    the cloud's settings."""
    try:
        found = cloud.load(settings, inventory, vault)
    except UsageError as error:
        raise UsageError(
            f"{at}.kind", f"a cloud pool needs the cloud configuration: {error}"
        ) from error
    config = found.config
    if pool.max > config.max_instances:
        raise UsageError(
            f"{at}.max",
            f"{pool.max} is above cloud_max_instances {config.max_instances}",
            "lower it, or raise cloud_max_instances",
        )
    if pool.instance_type and pool.instance_type not in config.prices:
        raise UsageError(
            f"{at}.instance_type",
            f"{pool.instance_type!r} is not in cloud_instance_types",
            f"one of {', '.join(config.prices)}",
        )
    return found


def signals(gateway: JsonApi) -> tuple[Signals | None, str, dict[str, dict[str, Any]]]:
    """The gateway's load now (or None and why it could not be read), and its backends
    by name."""
    sampled = time.time()
    try:
        answer = gateway.get("/admin/backends") or {}
    except ClusterAIError as error:
        return None, str(error), {}
    queue = answer.get("queue")
    backends = answer.get("backends")
    if not isinstance(queue, dict) or not isinstance(backends, list):
        return (
            None,
            "the gateway's /admin/backends has no queue figures (an older gateway?)",
            {},
        )
    named = {str(b.get("name")): b for b in backends if isinstance(b, dict)}
    workers = [b for b in named.values() if not b.get("fallback") and not b.get("standby")]
    wanted = queue.get("wanted") or {}
    serving = len(serving_workers(named))
    in_flight = sum(int(b.get("outstanding") or 0) for b in workers)
    return (
        Signals(
            sampled,
            float(queue.get("wait_p95_s") or 0.0),
            int(queue.get("waiting") or 0),
            in_flight,
            serving,
            tuple(sorted(str(m) for m in wanted)) if isinstance(wanted, dict) else (),
            requests_per_s=round(
                float(queue.get("requests") or 0) / float(queue.get("window_s") or 60.0), 3
            ),
        ),
        "",
        named,
    )


def serving_workers(at_gateway: dict[str, dict[str, Any]]) -> list[str]:
    """The gateway's backends that are workers taking requests: healthy, not draining,
    neither a provider (fallback) nor parked (standby)."""
    return [
        name
        for name, b in at_gateway.items()
        if not b.get("fallback") and not b.get("standby")
        and b.get("healthy") and not b.get("draining")
    ]  # fmt: skip


def _with_gpus(
    prometheus: JsonApi, seen: Signals, at_gateway: dict[str, dict[str, Any]]
) -> tuple[Signals | None, str]:
    """The signals with the serving workers' GPU load from Prometheus, or None and why
    it could not be read (the autoscaler holds)."""
    serving = serving_workers(at_gateway)
    if not serving:
        return seen, ""
    try:
        utilization, memory = gpu_load(prometheus, serving)
    except ClusterAIError as error:
        return None, str(error)
    return replace(seen, gpu_utilization=utilization, gpu_memory=memory), ""


def outside_windows(
    pool: PoolConfig, variables: dict[str, Any], name: str, at: float
) -> str | None:
    """Why desktop ``name`` may not serve at ``at`` by its windows (its own
    desktop_windows, else the pool's, in its desktop_timezone, else the pool's), or None."""
    _mac, own, own_zone = check_desktop_host(name, variables)
    windows = own if own is not None else pool.available
    zone = own_zone or pool.timezone
    local = (
        datetime.fromtimestamp(at, ZoneInfo(zone))
        if zone
        else datetime.fromtimestamp(at).astimezone()
    )
    if not windows or any(w.covers(local) for w in windows):
        return None
    return f"outside its windows ({', '.join(w.text for w in windows)})"


def owners(hosts: list[InventoryHost], progress: Progress = quiet) -> dict[str, str]:
    """Ask each desktop at once whether its owner is using it (the ``desktop`` role's
    owner-active check, over SSH): host -> why, for those whose owner is. A desktop that
    does not answer (asleep, say) is left out, and said through ``progress`` when its
    check failed otherwise."""
    from clusterai_runner.adapters import ssh

    async def ask(host: InventoryHost) -> tuple[InventoryHost, ssh.Outcome | None]:
        options = ssh.options_for(host)
        if options is None:
            return host, None
        return host, await ssh.run(host, options, OWNER_CHECK, accept_new=False, timeout=5.0)

    async def ask_all() -> list[tuple[InventoryHost, ssh.Outcome | None]]:
        return list(await asyncio.gather(*(ask(h) for h in hosts)))

    busy: dict[str, str] = {}
    for host, outcome in asyncio.run(ask_all()) if hosts else []:
        if outcome is None:
            progress(f"{host.name}: its SSH options need OpenSSH; its owner is not asked")
        elif outcome.rc == 0:
            busy[host.name] = (
                "its owner is using it: " + (outcome.stdout.strip().splitlines() or ["active"])[-1]
            )
        elif outcome.rc != 1 and outcome.failure != "reach":
            why = outcome.detail or f"exit {outcome.rc}"
            progress(f"{host.name}: cannot ask whether its owner uses it ({why})")
    return busy


def pool_states(
    autoscaler: Autoscaler,
    at: float | None = None,
    progress: Progress = quiet,
    at_gateway: dict[str, dict[str, Any]] | None = None,
    starts: dict[str, float | None] | None = None,
    store: Store | None = None,
) -> list[PoolState]:
    """Each pool's serving and parked hosts, as the inventory says now, and for desktops
    those that may not serve (outside their windows, or their owner at them); a hosted
    pool's backends as the gateway has them (``at_gateway``: on, or drained); a cloud
    pool's joined workers and whether its caps allow one more (the ``store``'s records);
    each pool's measured start time (``starts``)."""
    at = time.time() if at is None else at
    hosts = load_inventory(autoscaler.inventory, None, autoscaler.vault)
    starts = starts or {}
    states = []
    for pool in autoscaler.config.pools:
        if pool.kind == "hosted":
            seen = at_gateway or {}
            known = {n: seen[n] for n in pool.backends if n in seen}
            for missing in sorted(set(pool.backends) - set(known)) if seen else []:
                progress(f"{pool.name}: the gateway has no backend {missing}")
            states.append(
                PoolState(
                    pool.name,
                    tuple(n for n, b in known.items() if not b.get("draining")),
                    tuple(n for n, b in known.items() if b.get("draining")),
                    start_s=starts.get(pool.name),
                )
            )
            continue
        if pool.kind == "cloud":
            with using_store(autoscaler.settings, store) as used:
                states.append(_cloud_state(autoscaler, pool, used, starts.get(pool.name), hosts))
            continue
        members = sorted((h for h in hosts if pool.group in h.groups), key=lambda h: h.name)
        models = {}
        for h in members:
            server = backends.of_host(h.variables)
            models[h.name] = tuple(server.models_for(h.variables)) if server is not None else ()
        unavailable: dict[str, str] = {}
        if pool.kind == "desktop":
            for h in members:
                why = outside_windows(pool, h.variables, h.name, at)
                if why is not None:
                    unavailable[h.name] = why
            asked = [h for h in members if h.name not in unavailable]
            unavailable.update(owners(asked, progress))
        states.append(
            PoolState(
                pool.name,
                tuple(h.name for h in members if not h.parked),
                tuple(h.name for h in members if h.parked),
                models,
                unavailable,
                starts.get(pool.name),
            )
        )
    return states


def _cloud_state(
    autoscaler: Autoscaler,
    pool: PoolConfig,
    store: Store,
    start_s: float | None,
    hosts: list[InventoryHost],
) -> PoolState:
    """A cloud pool: its joined workers serve; one more may be launched when the cloud's
    caps (count, hourly and monthly spend) allow it now."""
    assert autoscaler.cloud is not None  # load() sets it for a cloud pool
    config = autoscaler.cloud.config
    records = store.cloud_instances()
    joined = tuple(sorted(r.host for r in records if r.state == "joined"))
    launching = [r for r in records if r.state in ("intent", "launched", "running")]
    capped = ""
    if launching:
        capped = f"{len(launching)} cloud worker(s) still starting"
    else:
        try:
            check_launch(config, records, 1, pool.instance_type or config.default_type, utc_now())
        except UsageError as error:
            capped = error.why
    group = {h.name: h for h in hosts if pool.group in h.groups}
    models: dict[str, tuple[str, ...]] = {}
    for name in joined:
        host = group.get(name)
        server = backends.of_host(host.variables) if host is not None else None
        models[name] = tuple(server.models_for(host.variables)) if server and host else ()
    return PoolState(
        pool.name,
        joined,
        (),
        models,
        start_s=start_s,
        launchable=0 if capped else 1,
        capped=capped,
    )


def evaluate(
    autoscaler: Autoscaler,
    memory: Memory,
    now: float | None = None,
    progress: Progress = quiet,
    starts: dict[str, float | None] | None = None,
    store: Store | None = None,
) -> Evaluation:
    """Read the signals and the pools and ask the policy; changes nothing."""
    at = time.time() if now is None else now
    seen, error, at_gateway = signals(autoscaler.gateway)
    if seen is not None and autoscaler.prometheus is not None:
        seen, error = _with_gpus(autoscaler.prometheus, seen, at_gateway)
    pools = pool_states(autoscaler, at, progress, at_gateway, starts, store)
    decision = decide(
        seen, pools, datetime.fromtimestamp(at).astimezone(), autoscaler.config, memory
    )
    return Evaluation(at, seen, error, pools, decision, at_gateway)


def plan(settings: Settings, autoscaler: Autoscaler, store: Store | None = None) -> Evaluation:
    """``autoscale plan``: what the next evaluation would do now, and why."""
    with using_store(settings, store) as store:
        memory = Memory.from_json(store.autoscale_memory())
        return evaluate(autoscaler, memory, starts=_starts(autoscaler, store), store=store)


def _starts(autoscaler: Autoscaler, store: Store) -> dict[str, float | None]:
    return {p.name: store.start_seconds(p.name) for p in autoscaler.config.pools}


def _shape(reason: str) -> str:
    """A reason with its figures taken out: holds are recorded when this changes."""
    return re.sub(r"\d+(\.\d+)?", "N", reason)


def once(
    autoscaler: Autoscaler,
    store: Store | None = None,
    *,
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
    on_event: Callable[[TaskEvent], None] | None = None,
) -> tuple[Evaluation, AutoscaleDecision | None]:
    """One evaluation, and its action carried out; the decision as recorded (None: a
    hold for the same reason as the last record)."""
    with using_store(autoscaler.settings, store) as store:
        return _once(autoscaler, store, cancel, progress, on_event, AutoscaleMetrics())


def _once(
    autoscaler: Autoscaler,
    store: Store,
    cancel: CancelToken | None,
    progress: Progress,
    on_event: Callable[[TaskEvent], None] | None,
    metrics: AutoscaleMetrics,
) -> tuple[Evaluation, AutoscaleDecision | None]:
    memory = Memory.from_json(store.autoscale_memory())
    evaluation = evaluate(
        autoscaler, memory, progress=progress, starts=_starts(autoscaler, store), store=store
    )
    decision = evaluation.decision
    metrics.evaluated(evaluation.at, evaluation.signals, evaluation.pools, decision.mins)
    action = decision.action
    memory = decision.memory
    if action is None and autoscaler.config.healing and evaluation.signals is not None:
        heal = healing.plan(store, evaluation.at_gateway, autoscaler.config.healing,
                            autoscaler.config.healing_wait_s, evaluation.at)  # fmt: skip
        if heal is not None:
            store.save_autoscale_memory(memory.to_json())
            return evaluation, _heal(autoscaler, store, heal, cancel, on_event, progress, metrics)
    if action is None:
        store.save_autoscale_memory(memory.to_json())
        last = store.decisions(limit=1)
        if last and last[0].action == "hold" and _shape(last[0].reason) == _shape(decision.reason):
            return evaluation, None
        entry = store.record_decision("hold", decision.reason, evaluation.inputs(), outcome="held")
        metrics.decided("hold", "held", "")
        return evaluation, store.decision(entry)
    entry = store.record_decision(
        action.kind, decision.reason, evaluation.inputs(), action.pool, action.host
    )
    store.save_autoscale_memory(memory.to_json())
    progress(f"{action.kind} {action.host or 'a new worker'} ({action.pool}): {decision.reason}")
    started = time.monotonic()
    done = _carry_out(autoscaler, store, action, cancel, on_event, progress)
    seconds = round(time.monotonic() - started, 1)
    outcome = "succeeded" if done.ok else "failed"
    store.finish_decision(entry, outcome, done.error, done.run_id, seconds, done.host or None)
    metrics.decided(action.kind, outcome, action.pool)
    if action.kind == "scale-out":
        memory = after_start(memory, action.key, done.ok, time.time(), autoscaler.config.backoff_s)
    store.save_autoscale_memory(memory.to_json())
    result = "done" if done.ok else "failed: " + done.error
    progress(
        f"{action.kind} {done.host or action.host or 'a new worker'}: {result} in {seconds:g} s"
    )
    return evaluation, store.decision(entry)


def _heal(
    autoscaler: Autoscaler,
    store: Store,
    heal: healing.Heal,
    cancel: CancelToken | None,
    on_event: Callable[[TaskEvent], None] | None,
    progress: Progress,
    metrics: AutoscaleMetrics,
) -> AutoscaleDecision | None:
    """One healing step for a flagged worker (usecases/healing.py), recorded."""
    a = autoscaler
    entry = store.record_decision("heal", heal.reason, heal.inputs(), healing.POOL, heal.backend)
    progress(f"heal {heal.backend}: {heal.reason}")
    started = time.monotonic()
    ok, error, run_id = healing.carry_out(
        heal, a.settings, a.inventory, a.gateway, store, on_event=on_event, cancel=cancel,
        vault=a.vault,
    )  # fmt: skip
    seconds = round(time.monotonic() - started, 1)
    outcome = "succeeded" if ok else "failed"
    store.finish_decision(entry, outcome, error, run_id, seconds)
    metrics.decided("heal", outcome, healing.POOL)
    progress(f"heal {heal.backend} ({heal.step}): {'done' if ok else 'failed: ' + error}")
    return store.decision(entry)


def _carry_out(
    autoscaler: Autoscaler,
    store: Store,
    action: Action,
    cancel: CancelToken | None,
    on_event: Callable[[TaskEvent], None] | None,
    progress: Progress = quiet,
) -> Done:
    from clusterai_runner.usecases.scale import park, unpark

    a = autoscaler
    kind = a.config.pool(action.pool).kind
    if kind == "hosted":
        return _switch_provider(a, action)
    if kind == "cloud":
        return _cloud_step(a, store, action, cancel, progress)
    step = unpark if action.kind == "scale-out" else park
    try:
        if action.kind == "scale-out" and a.config.pool(action.pool).kind == "desktop":
            _wake(a, action.host, progress)
        result = step(
            a.settings,
            a.inventory,
            action.host,
            store=store,
            on_event=on_event,
            cancel=cancel,
            vault=a.vault,
        )
    except ClusterAIError as error:
        return Done(False, str(error))
    record = result.record
    if record is None:
        return Done(False, "no run")
    outcome = record.outcome
    if outcome.status != "successful":
        playbook = "scale_out.yml" if action.kind == "scale-out" else "scale_in.yml"
        failed = [h for h, c in outcome.recap.items() if c.get("failed") or c.get("unreachable")]
        on = f" on {', '.join(sorted(failed))}" if failed else ""
        return Done(False, f"{playbook} {outcome.status}{on} (run {record.id})", record.id)
    return Done(True, "", record.id)


def _cloud_step(
    autoscaler: Autoscaler,
    store: Store,
    action: Action,
    cancel: CancelToken | None,
    progress: Progress,
) -> Done:
    """A cloud pool's action: launch one worker and join it (``cloud.up``: a worker that
    does not join is terminated), or drain, scale in and terminate one (``cloud.down``).
    The run is the latest scale_out.yml or scale_in.yml the step made."""
    a = autoscaler
    pool = a.config.pool(action.pool)
    before = store.runs(limit=1)
    host = action.host
    try:
        if action.kind == "scale-out":
            result = cloud.up(
                a.settings,
                a.inventory,
                1,
                instance_type=pool.instance_type or None,
                vault=a.vault,
                store=store,
                cancel=cancel,
                progress=progress,
            )
            host = ", ".join(r.host for r in result.launched)
        else:
            cloud.down(
                a.settings,
                a.inventory,
                [action.host],
                vault=a.vault,
                store=store,
                progress=progress,
            )
        ok, error = True, ""
    except ClusterAIError as failure:
        ok, error = False, str(failure)
    after = store.runs(limit=1)
    run_id = after[0].id if after and (not before or after[0].id != before[0].id) else None
    return Done(ok, error, run_id, host)


def _switch_provider(autoscaler: Autoscaler, action: Action) -> Done:
    """A hosted pool's action: its provider backend back in service at the gateway, or
    drained (no new request; those in flight finish, up to 30 s)."""
    from clusterai_runner.usecases import gateway_admin

    try:
        if action.kind == "scale-out":
            gateway_admin.undrain(autoscaler.gateway, action.host)
        else:
            gateway_admin.drain(autoscaler.gateway, action.host, wait_s=30.0)
    except ClusterAIError as error:
        return Done(False, str(error))
    return Done(True)


def _desktop(autoscaler: Autoscaler, name: str) -> tuple[InventoryHost, PoolConfig, str | None]:
    hosts = {h.name: h for h in load_inventory(autoscaler.inventory, None, autoscaler.vault)}
    host = hosts.get(name)
    pool = next(
        (p for p in autoscaler.config.pools if host is not None and p.group in host.groups), None
    )
    if host is None or pool is None or pool.kind != "desktop":
        raise UsageError(f"host {name}", "is not a desktop of a pool", "name a desktop pool's host")
    mac, _windows, _zone = check_desktop_host(name, host.variables)
    return host, pool, mac


def _wake(autoscaler: Autoscaler, name: str, progress: Progress) -> None:
    """Before a desktop starts: when its SSH does not answer, send its magic packet and
    wait up to WAKE_TIMEOUT_S for SSH."""
    host, _pool, mac = _desktop(autoscaler, name)
    if tcp_open(host.host, host.port, 2.0):
        return
    if mac is None:
        raise UsageError(
            f"host {name}: desktop_mac",
            "is not set, and its SSH does not answer",
            "set desktop_mac to its network card's MAC so it can be woken",
        )
    wake(autoscaler, name)
    progress(f"{name}: magic packet sent; waiting up to {WAKE_TIMEOUT_S:g} s for its SSH")
    deadline = time.monotonic() + WAKE_TIMEOUT_S
    while not tcp_open(host.host, host.port, 2.0):
        if time.monotonic() > deadline:
            raise UsageError(
                f"host {name}",
                f"did not answer SSH within {WAKE_TIMEOUT_S:g} s of its magic packet",
                "check that Wake-on-LAN is on in its firmware and for its card (ethtool)",
            )
        time.sleep(2)


def wake(autoscaler: Autoscaler, name: str) -> tuple[str, str, int]:
    """``autoscale wake HOST``: send desktop ``name``'s Wake-on-LAN magic packet to its
    pool's wol address and port; returns (mac, address, port)."""
    from clusterai_runner.adapters import wol

    _host, pool, mac = _desktop(autoscaler, name)
    if mac is None:
        raise UsageError(
            f"host {name}: desktop_mac",
            "is not set",
            "set desktop_mac (host_vars) to its network card's MAC, e.g. 3c:7c:3f:12:34:56",
        )
    try:
        wol.send(mac, pool.wol_address, pool.wol_port)
    except OSError as error:
        raise UsageError(
            f"autoscale_pools: {pool.name}.wol",
            f"cannot send to {pool.wol_address}:{pool.wol_port}: {error.strerror or error}",
            "give the LAN's broadcast address",
        ) from error
    return mac, pool.wol_address, pool.wol_port


def run(
    autoscaler: Autoscaler,
    *,
    store: Store | None = None,
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
    on_decision: Callable[[Evaluation, AutoscaleDecision], None] | None = None,
    metrics: AutoscaleMetrics | None = None,
) -> None:
    """``autoscale run``: evaluate every ``interval_s`` until ``cancel``, counting each
    evaluation and decision in ``metrics``."""
    cancel = cancel or CancelToken()
    metrics = metrics or AutoscaleMetrics()
    with using_store(autoscaler.settings, store) as store:
        while not cancel.canceled:
            evaluation, recorded = _once(autoscaler, store, cancel, progress, None, metrics)
            if recorded is not None and on_decision is not None:
                on_decision(evaluation, recorded)
            if cancel.wait(autoscaler.config.interval_s):
                return


def history(
    settings: Settings, store: Store | None = None, limit: int = 50, acted: bool = False
) -> list[AutoscaleDecision]:
    """``autoscale history``: past decisions, the newest first."""
    with using_store(settings, store) as store:
        return store.decisions(limit=limit, acted=acted)
