"""Model rollouts (``clusterai models rollout ALIAS --to MODEL``): the Ollama workers that
serve a gateway alias move from its model to another, a canary first, behind an
evaluation gate, the rest in batches, without a failed request; or, when anything fails,
every worker stays on the model it had.

The alias is one of the control host's ``gateway_aliases`` naming one model (the old
one); the workers are the Ollama workers whose ``ollama_models`` list it (parked ones left
out). Step by step, each recorded in the store (``rollouts``, ``rollout_steps``):

1. the canaries (``--canary``, default 1) are drained at the gateway (no new requests;
   those in flight finish), get the new model (``playbooks/models.yml``: a pull, or the
   model store), and the evaluation gate (``evaluation``) runs on each: its prompts to the
   new model and to the old one on the canary's own server; the new one must pass every
   case the old one passes. Then the canaries are put back.
2. the other workers follow in batches (``--batch``), each drained first and put back after.
3. once the gateway lists the new model on every worker, the inventory's
   ``gateway_aliases`` entry and the ``ollama_models`` lists name the new model (a line
   edit of each item, every other byte kept), and ``playbooks/gateway.yml`` rewrites the
   gateway's aliases, applied by a reload that drops no request.

A failure anywhere (a pull, the gate, a canary that does not come back, the gateway's
rewrite) rolls back: the new model is deleted from every worker that got it, every
drained worker is put back, the inventory is left (or put back) as it was, and the
rollout ends ``failed`` with the reason. The old model stays on the workers after a
rollout that succeeded (``clusterai models sync --prune`` removes it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clusterai_runner import backends
from clusterai_runner.adapters.http import JsonApi, ServiceUnavailable
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import ClusterAIError, UsageError
from clusterai_runner.usecases import evaluation, gateway_admin

# The inventory's edits need ruamel.yaml, which the web app's venv (on the control host)
# does not hold: imported where a rollout is planned or run, not where its history is read.
if TYPE_CHECKING:
    from clusterai_runner.adapters.inventory import InventoryHost
    from clusterai_runner.adapters.inventory_edit import Edit, ListEntry
    from clusterai_runner.store import Rollout as StoredRollout
    from clusterai_runner.store import RolloutStep, Store
    from clusterai_runner.usecases.converge import CancelToken, RunRecord, TaskEvent

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
LISTED_TIMEOUT_S = 120.0


def normalize(name: str) -> str:
    """Ollama's naming: no tag means ``latest``; names compare case-insensitively."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True)
class Target:
    name: str
    url: str  # its Ollama server
    headers: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Plan:
    alias: str
    old: str
    new: str
    control: str
    canaries: list[Target]
    batches: list[list[Target]]
    cases: list[evaluation.Case]
    entries: list[ListEntry]  # the inventory's items that name the old model

    @property
    def targets(self) -> list[Target]:
        """Every worker, canaries first."""
        return [*self.canaries, *(t for b in self.batches for t in b)]

    @property
    def hosts(self) -> list[str]:
        return [t.name for t in self.targets]


def plan(
    inventory: Path,
    alias: str,
    to: str,
    canary: int = 1,
    batch: int = 1,
    eval_file: Path | None = None,
    vault: Vault = NO_VAULT,
) -> Plan:
    """Everything checked before anything changes (one line, exit 2, where it cannot go)."""
    from clusterai_runner.adapters.inventory_edit import list_entries

    cases = evaluation.load(eval_file or evaluation.DEFAULT)
    hosts = load_inventory(inventory, None, vault)
    control = next((h for h in hosts if h.kind == "control"), None)
    if control is None:
        raise UsageError(f"inventory {inventory}", "has no control host", "add one under control:")
    aliases = control.variables.get("gateway_aliases") or {}
    listed = aliases.get(alias) if isinstance(aliases, dict) else None
    if not isinstance(listed, list) or len(listed) != 1 or not isinstance(listed[0], str):
        known = ", ".join(sorted(aliases)) if isinstance(aliases, dict) else ""
        raise UsageError(f"alias {alias!r}", "is not one of the control host's gateway_aliases"
                         " naming one model", f"one of: {known}" if known else
                         "add it to gateway_aliases first: {ALIAS: [MODEL]}")  # fmt: skip
    old = normalize(listed[0])
    new = _resolve(control, inventory, to, old)
    if new == old:
        raise UsageError(f"--to {to}", f"is the model {alias} names already", "name another")
    from clusterai_runner.usecases.models import store_knows

    if store_knows(control, new) is False:
        raise UsageError(f"--to {to}", f"{new} is no model the cluster's model store holds or"
                         " its registry knows", "check the name and tag")  # fmt: skip
    targets = []
    for host in hosts:
        server = backends.of_host(host.variables)
        if not host.serving or server is None or server.kind != "ollama":
            continue
        wanted = {normalize(str(m)) for m in host.variables.get("ollama_models") or []}
        if old in wanted:
            address = backends.url(host.address, server.port_for(host.variables))
            targets.append(Target(host.name, address, server.headers_for(host.variables)))
    if not targets:
        raise UsageError(f"alias {alias!r}", f"has no eligible worker: no Ollama worker in"
                         f" service lists {old} in its ollama_models", "add it to a group's"
                         " ollama_models, or roll out another alias")  # fmt: skip
    if not 1 <= canary <= len(targets):
        raise UsageError(f"--canary {canary}", f"must be from 1 to {len(targets)} (the workers"
                         f" that serve {old})", "pick fewer canaries")  # fmt: skip
    if batch < 1:
        raise UsageError(f"--batch {batch}", "must be 1 or more", "pick a batch size")
    matches: Callable[[str], bool] = lambda value: normalize(value) == old  # noqa: E731
    in_alias = list_entries(inventory, ("gateway_aliases", alias), matches)
    if not in_alias:
        raise UsageError(f"gateway_aliases.{alias}", "is not written in a YAML file of the"
                         " inventory (the extra variables or a vault?), so the rollout could"
                         " not move it", "write it in the inventory or its group_vars")  # fmt: skip
    rest = targets[canary:]
    return Plan(alias, old, new, control.name, targets[:canary],
                [rest[i : i + batch] for i in range(0, len(rest), batch)], cases,
                in_alias + list_entries(inventory, ("ollama_models",), matches))  # fmt: skip


def _resolve(control: InventoryHost, inventory: Path, to: str, old: str) -> str:
    """``--to``: a model (``smollm2:360m``), a tag of the old one's (``360m``), or a content
    digest the cluster's model store holds (``sha256:HEX``)."""
    to = to.strip()
    if DIGEST.fullmatch(to):
        from clusterai_runner.usecases.models import store_models

        held = [m["name"] for m in store_models(control, inventory)
                if f"sha256:{m['digest']}" == to]  # fmt: skip
        if not held:
            raise UsageError(f"--to {to}", "is no model the cluster's model store holds",
                             "`clusterai models import` or a model name")  # fmt: skip
        return normalize(held[0])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/@-]*", to):
        raise UsageError(f"--to {to!r}", "is not a model name, tag or sha256 digest",
                         "as in ollama_models: smollm2:360m")  # fmt: skip
    if ":" not in to and "/" not in to:  # a tag of the same model
        return normalize(f"{old.rsplit(':', 1)[0]}:{to}")
    return normalize(to)


class _Failed(Exception):
    """A step failed: roll back, and end the rollout with this reason."""


@dataclass
class Rollout:
    id: int
    status: str  # succeeded, failed
    reason: str
    plan: Plan


def run(
    settings: Settings,
    inventory: Path,
    chosen: Plan,
    *,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
    progress: Callable[[str], None] = lambda line: None,
) -> Rollout:
    """Carry the plan out (see the module's doc); every step recorded in the store."""
    from clusterai_runner.adapters.inventory_edit import replace_entries
    from clusterai_runner.usecases.converge import run_on_targets
    from clusterai_runner.usecases.services import of_inventory

    gateway = of_inventory(settings, inventory, vault, timeout=120.0).gateway
    if gateway is None:
        why = "gives no gateway_admin_key: the rollout drains workers at the gateway"
        raise UsageError(f"inventory {inventory}", why, "set it in the inventory's vault")
    with using_store(settings, store) as opened:
        rollout = opened.start_rollout(chosen.alias, chosen.old, chosen.new, chosen.hosts)

        def step(name: str, hosts: list[str], ok: bool, detail: str = "",
                 record: RunRecord | None = None) -> None:  # fmt: skip
            opened.add_rollout_step(rollout, name, hosts, "succeeded" if ok else "failed",
                                    detail, record.id if record else None)  # fmt: skip
            progress(f"{name} {', '.join(hosts)}: {'ok' if ok else 'failed'}"
                     + (f" ({detail})" if detail else ""))  # fmt: skip

        def playbook(name: str, hosts: list[str], extra: dict[str, object]) -> RunRecord:
            record = run_on_targets(settings, inventory, name, hosts, extra, store=opened,
                                    on_event=on_event, cancel=cancel, vault=vault)  # fmt: skip
            return record

        touched: list[Target] = []  # got (or may have got) the new model
        # A worker that held the new model before keeps it whatever happens.
        had = [t for t in chosen.targets if _holds(t, chosen.new)]
        drained: list[str] = []
        edits: list[Edit] = []
        try:
            groups = [chosen.canaries, *chosen.batches]
            for index, group in enumerate(groups):
                names = [t.name for t in group]
                for name in names:
                    drained.append(name)
                    _drain(gateway, name)
                step("drain", names, True)
                touched += group
                pulled = playbook("models.yml", names, {"ollama_models": [chosen.new],
                                                        "ollama_models_prune": False})  # fmt: skip
                if pulled.outcome.status != "successful":
                    step("pull", names, False, f"models.yml {pulled.outcome.status}", pulled)
                    raise _Failed(f"{chosen.new} could not be put on {', '.join(names)}"
                                  f" (clusterai runs show {pulled.id})")  # fmt: skip
                step("pull", names, True, record=pulled)
                if index == 0:
                    for target in group:
                        _gate(chosen, target, step)
                for name in names:
                    gateway_admin.undrain(gateway, name)
                    drained.remove(name)
                step("undrain", names, True)
            _wait_listed(gateway, chosen.new, chosen.hosts)
            edits = replace_entries(chosen.entries, chosen.new)
            files = sorted({str(e.path) for e in edits})
            step("inventory", [], True, f"{chosen.old} -> {chosen.new} in {', '.join(files)}")
            moved = playbook("gateway.yml", [chosen.control], {})
            if moved.outcome.status != "successful":
                step("alias", [chosen.control], False, f"gateway.yml {moved.outcome.status}",
                     moved)  # fmt: skip
                raise _Failed(f"the gateway's aliases could not be rewritten (run {moved.id})")
            step("alias", [chosen.control], True, f"{chosen.alias} -> {chosen.new}", moved)
        except (_Failed, ClusterAIError) as failure:
            reason = str(failure)
            _roll_back(chosen, [t for t in touched if t not in had], drained, edits, gateway,
                       step)  # fmt: skip
            opened.finish_rollout(rollout, "failed", reason)
            return Rollout(rollout, "failed", reason, chosen)
        opened.finish_rollout(rollout, "succeeded", f"{chosen.alias} -> {chosen.new}")
        return Rollout(rollout, "succeeded", f"{chosen.alias} -> {chosen.new}", chosen)


def _drain(gateway: JsonApi, name: str) -> None:
    answer = gateway_admin.drain(gateway, name, wait_s=60.0)
    if not answer.get("idle", True):
        raise _Failed(f"{name} still had requests in flight after 60 s of draining")


def _gate(chosen: Plan, target: Target, step: Callable[..., None]) -> None:
    old = evaluation.run(target.url, chosen.old, chosen.cases, target.headers)
    new = evaluation.run(target.url, chosen.new, chosen.cases, target.headers)
    why = evaluation.verdict(old, new, chosen.old, chosen.new)
    passed = f"{chosen.new} passed {sum(o.passed for o in new)} of {len(new)} cases" + (
        f", {chosen.old} {sum(o.passed for o in old)}"
    )
    step("evaluate", [target.name], not why, why or passed)
    if why:
        raise _Failed(f"the evaluation gate failed on {target.name}: {why}")


def _wait_listed(gateway: JsonApi, model: str, hosts: list[str]) -> None:
    """Until the gateway lists ``model`` on every host (its probes find new models every
    few seconds): the alias moves only when each can take its requests."""
    deadline = time.monotonic() + LISTED_TIMEOUT_S
    while True:
        found = {b["name"]: b for b in gateway_admin.backends(gateway).get("backends", [])}
        missing = [h for h in hosts if model not in (found.get(h) or {}).get("models", [])]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise _Failed(f"the gateway does not list {model} on {', '.join(missing)} after"
                          f" {LISTED_TIMEOUT_S:.0f} s")  # fmt: skip
        time.sleep(1.0)


def _holds(target: Target, model: str) -> bool:
    """Whether the worker's Ollama lists ``model`` now (not answering: it does not)."""
    api = JsonApi(f"Ollama on {target.name}", target.url, headers=target.headers, timeout=10.0)
    try:
        listed = api.get("/api/tags").get("models") or []
    except (ServiceUnavailable, AttributeError):
        return False
    return any(normalize(str(m.get("name", ""))) == model for m in listed if isinstance(m, dict))


def _roll_back(
    chosen: Plan,
    touched: list[Target],
    drained: list[str],
    edits: list[Edit],
    gateway: JsonApi,
    step: Callable[..., None],
) -> None:
    """Every worker back on the model it had: the new one deleted where it went, the
    drained ones put back, the inventory as it was."""
    for edit in edits:
        edit.undo()
    problems = []
    for target in touched:
        api = JsonApi(f"Ollama on {target.name}", target.url, headers=target.headers,
                      timeout=60.0)  # fmt: skip
        try:
            api.delete("/api/delete", {"model": chosen.new})
        except ServiceUnavailable as exc:
            if "404" not in str(exc):  # it never got there
                problems.append(str(exc))
    for name in drained:
        try:
            gateway_admin.undrain(gateway, name)
        except ClusterAIError as exc:
            problems.append(str(exc))
    names = [t.name for t in touched]
    step("roll back", names, not problems, "; ".join(problems) or
         f"{chosen.new} deleted; {', '.join(drained) or 'no worker'} put back")  # fmt: skip


def history(
    settings: Settings, limit: int = 20, store: Store | None = None
) -> list[tuple[StoredRollout, list[RolloutStep]]]:
    """The last rollouts, newest first, each with its steps in order."""
    with using_store(settings, store) as opened:
        return [(r, opened.rollout_steps(r.id)) for r in opened.rollouts(limit)]
