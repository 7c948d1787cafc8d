"""``clusterai autoscale``: the loop around the autoscaler's policy.

Each evaluation reads the gateway's load through its admin API (queue wait p95 over the
last minute, requests waiting and in flight, workers serving), each pool's hosts from the
inventory (a pool's hosts are those of its group; parked ones are stopped), asks
``autoscaler.policy.decide`` and carries out what it says through the scale use cases:
a scale-out starts a parked worker (``scale.unpark``: out of the parked group, preflight,
scale_out.yml), a scale-in parks one (``scale.park``: into the parked group, drained at
the gateway, its server stopped by scale_in.yml). One action at a time; every decision
that acts, or holds for a new reason, is written to the store with its inputs and
outcome, and the loop's memory (timers, backoffs) is kept there too, so ``once`` from a
timer and ``run`` after a restart go on where the last evaluation stopped.

Nothing here prints or touches a signal: the CLI renders ``progress`` and stops ``run``
with the cancel token.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.adapters.inventory import check_inventory, group_variables
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.autoscaler.config import autoscale_config
from clusterai_runner.autoscaler.policy import (
    Action,
    AutoscaleConfig,
    Decision,
    Memory,
    PoolState,
    Signals,
    after_start,
    decide,
)
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.store import AutoscaleDecision, Store
from clusterai_runner.usecases.converge import CancelToken, TaskEvent

Progress = Callable[[str], None]


def quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class Autoscaler:
    settings: Settings
    inventory: Path
    config: AutoscaleConfig
    gateway: JsonApi
    vault: Vault = NO_VAULT


@dataclass(frozen=True)
class Evaluation:
    """One look at the cluster and what the policy made of it."""

    at: float
    signals: Signals | None
    signals_error: str
    pools: list[PoolState]
    decision: Decision

    def inputs(self) -> dict[str, Any]:
        return {
            "signals": asdict(self.signals) if self.signals is not None else None,
            "signals_error": self.signals_error,
            "pools": {
                p.name: {"active": list(p.active), "parked": list(p.parked)} for p in self.pools
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
    for index, pool in enumerate(config.pools):
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
    gateway = of_inventory(settings, inventory, vault, timeout=5.0).gateway
    if gateway is None:
        raise UsageError(
            f"{source}: gateway_admin_key",
            "is not set; the autoscaler reads the load from the gateway's admin API",
            "put the gateway's admin key in the vault and name it gateway_admin_key",
        )
    return Autoscaler(settings, inventory, config, gateway, vault)


def signals(gateway: JsonApi) -> tuple[Signals | None, str]:
    """The gateway's load now, or None and why it could not be read."""
    sampled = time.time()
    try:
        answer = gateway.get("/admin/backends") or {}
    except ClusterAIError as error:
        return None, str(error)
    queue = answer.get("queue")
    backends = answer.get("backends")
    if not isinstance(queue, dict) or not isinstance(backends, list):
        return None, "the gateway's /admin/backends has no queue figures (an older gateway?)"
    workers = [b for b in backends if isinstance(b, dict) and not b.get("fallback")]
    serving = sum(1 for b in workers if b.get("healthy") and not b.get("draining"))
    in_flight = sum(int(b.get("outstanding") or 0) for b in workers)
    return (
        Signals(
            sampled,
            float(queue.get("wait_p95_s") or 0.0),
            int(queue.get("waiting") or 0),
            in_flight,
            serving,
        ),
        "",
    )


def pool_states(autoscaler: Autoscaler) -> list[PoolState]:
    """Each pool's serving and parked hosts, as the inventory says now."""
    hosts = load_inventory(autoscaler.inventory, None, autoscaler.vault)
    states = []
    for pool in autoscaler.config.pools:
        members = sorted((h for h in hosts if pool.group in h.groups), key=lambda h: h.name)
        states.append(
            PoolState(
                pool.name,
                tuple(h.name for h in members if not h.parked),
                tuple(h.name for h in members if h.parked),
            )
        )
    return states


def evaluate(autoscaler: Autoscaler, memory: Memory, now: float | None = None) -> Evaluation:
    """Read the signals and the pools and ask the policy; changes nothing."""
    at = time.time() if now is None else now
    seen, error = signals(autoscaler.gateway)
    pools = pool_states(autoscaler)
    decision = decide(
        seen, pools, datetime.fromtimestamp(at).astimezone(), autoscaler.config, memory
    )
    return Evaluation(at, seen, error, pools, decision)


def plan(settings: Settings, autoscaler: Autoscaler, store: Store | None = None) -> Evaluation:
    """``autoscale plan``: what the next evaluation would do now, and why."""
    with using_store(settings, store) as store:
        return evaluate(autoscaler, Memory.from_json(store.autoscale_memory()))


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
        return _once(autoscaler, store, cancel, progress, on_event)


def _once(
    autoscaler: Autoscaler,
    store: Store,
    cancel: CancelToken | None,
    progress: Progress,
    on_event: Callable[[TaskEvent], None] | None,
) -> tuple[Evaluation, AutoscaleDecision | None]:
    memory = Memory.from_json(store.autoscale_memory())
    evaluation = evaluate(autoscaler, memory)
    decision = evaluation.decision
    action = decision.action
    memory = decision.memory
    if action is None:
        store.save_autoscale_memory(memory.to_json())
        last = store.decisions(limit=1)
        if last and last[0].action == "hold" and _shape(last[0].reason) == _shape(decision.reason):
            return evaluation, None
        entry = store.record_decision("hold", decision.reason, evaluation.inputs(), outcome="held")
        return evaluation, next(d for d in store.decisions(limit=5) if d.id == entry)
    entry = store.record_decision(
        action.kind, decision.reason, evaluation.inputs(), action.pool, action.host
    )
    store.save_autoscale_memory(memory.to_json())
    progress(f"{action.kind} {action.host} ({action.pool}): {decision.reason}")
    started = time.monotonic()
    ok, error, run_id = _carry_out(autoscaler, store, action, cancel, on_event)
    seconds = round(time.monotonic() - started, 1)
    store.finish_decision(entry, "succeeded" if ok else "failed", error, run_id, seconds)
    if action.kind == "scale-out":
        memory = after_start(memory, action.host, ok, time.time(), autoscaler.config.backoff_s)
    store.save_autoscale_memory(memory.to_json())
    progress(
        f"{action.kind} {action.host}: {'done' if ok else 'failed: ' + error} in {seconds:g} s"
    )
    recorded = next(d for d in store.decisions(limit=5) if d.id == entry)
    return evaluation, recorded


def _carry_out(
    autoscaler: Autoscaler,
    store: Store,
    action: Action,
    cancel: CancelToken | None,
    on_event: Callable[[TaskEvent], None] | None,
) -> tuple[bool, str, int | None]:
    from clusterai_runner.usecases.scale import park, unpark

    a = autoscaler
    step = unpark if action.kind == "scale-out" else park
    try:
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
        return False, str(error), None
    record = result.record
    if record is None:
        return False, "no run", None
    outcome = record.outcome
    if outcome.status != "successful":
        playbook = "scale_out.yml" if action.kind == "scale-out" else "scale_in.yml"
        failed = [h for h, c in outcome.recap.items() if c.get("failed") or c.get("unreachable")]
        on = f" on {', '.join(sorted(failed))}" if failed else ""
        return False, f"{playbook} {outcome.status}{on} (run {record.id})", record.id
    return True, "", record.id


def run(
    autoscaler: Autoscaler,
    *,
    store: Store | None = None,
    cancel: CancelToken | None = None,
    progress: Progress = quiet,
    on_decision: Callable[[Evaluation, AutoscaleDecision], None] | None = None,
) -> None:
    """``autoscale run``: evaluate every ``interval_s`` until ``cancel``."""
    cancel = cancel or CancelToken()
    with using_store(autoscaler.settings, store) as store:
        while not cancel.canceled:
            evaluation, recorded = _once(autoscaler, store, cancel, progress, None)
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
