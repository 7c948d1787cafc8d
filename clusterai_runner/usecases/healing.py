"""Healing the GPU fallback flags the gateway raises (``gateway/fallback.py``: a model out
of GPU memory, a throughput drop), where the operator allows it.

``autoscale_healing`` lists the steps allowed, in the order they are tried: ``reload``
(the model unloaded and loaded again through Ollama's API, so it can find its GPU again;
a llama.cpp server has no such call and goes on to the next step), ``restart``
(``playbooks/restart.yml``: the worker drained at the gateway, its inference server
restarted, put back once healthy) and ``drain`` (no new requests go there; it stays
drained until the operator puts it back: ``clusterai gateway undrain``). Empty, the
default: the flags only raise their alerts.

The autoscaler takes one step per evaluation when it has nothing to scale: for the first
flagged worker and model, the first allowed step; the next one only when the flag is still
there ``autoscale_healing_wait_s`` after the last step (time for the flag to clear:
the gateway's recent window is 5 minutes). A flag that comes back later than twice that
starts again from the first step. Each step is an autoscaler decision in the store
(action ``heal``, pool ``healing``, host the worker; its flag, model and step in the
inputs), shown by ``autoscale history`` and the web app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import Settings
from clusterai_runner.errors import ClusterAIError
from clusterai_runner.store import AutoscaleDecision, Store
from clusterai_runner.usecases.converge import CancelToken, RunRecord, TaskEvent

STEPS = ("reload", "restart", "drain")
POOL = "healing"


@dataclass(frozen=True)
class Heal:
    backend: str
    model: str
    flag: str  # model_on_cpu, throughput_drop
    detail: str
    step: str
    url: str  # the backend's, as the gateway has it
    api: str

    @property
    def reason(self) -> str:
        return f"{self.flag} for {self.model} on {self.backend} ({self.detail}): {self.step}"

    def inputs(self) -> dict[str, Any]:
        return {"flag": self.flag, "model": self.model, "detail": self.detail,
                "step": self.step}  # fmt: skip


def _seconds(decision: AutoscaleDecision) -> float:
    return datetime.fromisoformat(decision.at).timestamp()


def next_step(
    at_gateway: dict[str, dict[str, Any]],
    allowed: tuple[str, ...],
    history: list[AutoscaleDecision],
    wait_s: float,
    now: float,
) -> Heal | None:
    """The step to take now for the first flagged backend and model that has one left
    (``history``: the healing decisions, newest first), or None."""
    for name, backend in sorted(at_gateway.items()):
        for flag in backend.get("flags") or []:
            if not isinstance(flag, dict):
                continue
            model = str(flag.get("model", ""))
            mine = [d for d in history if d.host == name and d.inputs.get("model") == model]
            steps = [s for s in allowed if s != "reload" or backend.get("api") == "ollama"]
            step: str | None = steps[0] if steps else None
            if mine:
                since = now - _seconds(mine[0])
                if since < wait_s:
                    return None  # one step at a time: this one's effect is not known yet
                last = str(mine[0].inputs.get("step", ""))
                if since < 2 * wait_s and last in steps:  # the flag outlived the step
                    later = steps[steps.index(last) + 1 :]
                    step = later[0] if later else None
            if step is None:
                continue
            return Heal(name, model, str(flag.get("kind", "")), str(flag.get("detail", "")),
                        step, str(backend.get("url", "")), str(backend.get("api", "")))  # fmt: skip
    return None


def plan(
    store: Store,
    at_gateway: dict[str, dict[str, Any]],
    allowed: tuple[str, ...],
    wait_s: float,
    now: float,
) -> Heal | None:
    history = [d for d in store.decisions(limit=200, pool=POOL) if d.action == "heal"]
    return next_step(at_gateway, allowed, history, wait_s, now)


def reload_model(heal: Heal, timeout: float = 300.0) -> None:
    """Ollama: the model unloaded (``keep_alive: 0``), then loaded again (an empty
    generate), so that it is placed anew, on the GPU where it fits."""
    api = JsonApi(f"Ollama on {heal.backend}", heal.url, timeout=timeout)
    api.post("/api/generate", {"model": heal.model, "keep_alive": 0})
    api.post("/api/generate", {"model": heal.model})


def carry_out(
    heal: Heal,
    settings: Settings,
    inventory: Path,
    gateway: JsonApi,
    store: Store,
    *,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> tuple[bool, str, int | None]:
    """Take the step: (ok, error, the run it made)."""
    from clusterai_runner.usecases import gateway_admin

    try:
        if heal.step == "reload":
            reload_model(heal)
            return True, "", None
        if heal.step == "drain":
            gateway_admin.drain(gateway, heal.backend, wait_s=30.0)
            return True, "", None
        record = restart(settings, inventory, [heal.backend], store=store, on_event=on_event,
                         cancel=cancel, vault=vault)  # fmt: skip
    except ClusterAIError as error:
        return False, str(error), None
    if record.outcome.status != "successful":
        return False, f"restart.yml {record.outcome.status} (run {record.id})", record.id
    return True, "", record.id


def restart(
    settings: Settings,
    inventory: Path,
    hosts: list[str],
    *,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """``playbooks/restart.yml`` on ``hosts`` (workers): each drained at the gateway, its
    inference server restarted, put back once healthy; stored as a run."""
    from clusterai_runner.usecases.converge import run_on_targets

    return run_on_targets(settings, inventory, "restart.yml", hosts, {}, store=store,
                          on_event=on_event, cancel=cancel, vault=vault)  # fmt: skip
