"""Models, desired against actual: what each worker's group should serve (the inventory's
``ollama_models``, or the llama.cpp server's one model alias), and what it serves now (its
inference server's model list, from ``status``); and pulling a model onto the workers that
should hold it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from clusterai_runner import backends
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import REPO, Settings, using_store
from clusterai_runner.errors import UsageError

# Running a playbook loads ansible-runner: imported where a pull starts, so that the
# comparison also serves the web app where Ansible is not installed (the control host).
if TYPE_CHECKING:
    from clusterai_runner.store import Store
    from clusterai_runner.usecases.converge import CancelToken, RunRecord, TaskEvent

ROLE_DEFAULTS = {
    "llamacpp": REPO / "roles/llamacpp_server/defaults/main.yml",
    "ollama": REPO / "roles/ollama/defaults/main.yml",
}


@dataclass
class HostModels:
    name: str
    groups: list[str]
    backend: str
    desired: list[str]
    actual: list[str] | None = None  # None: not known (the server did not answer)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def _defaults(backend: str) -> dict[str, Any]:
    path = ROLE_DEFAULTS.get(backend)
    if path is None or not path.is_file():
        return {}
    loaded: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return loaded


def desired(inventory: Path, vault: Vault = NO_VAULT) -> list[HostModels]:
    """Every worker with the models its inventory variables (else its role's defaults) ask for."""
    found = []
    for host in load_inventory(inventory, None, vault):
        server = backends.of_host(host.variables)
        if not host.serving or server is None:
            continue
        kind = str(host.variables.get("clusterai_inference_backend", ""))
        merged = {**_defaults(kind), **host.variables}
        if kind == "ollama":
            wanted = [str(m) for m in merged.get("ollama_models") or []]
        else:
            alias = merged.get("llamacpp_server_model_alias")
            wanted = [str(alias)] if alias else []
        groups = [g for g in host.groups if g not in ("all", "workers")] or ["workers"]
        found.append(HostModels(host.name, groups, kind, wanted))
    return found


def _norm(model: str, backend: str) -> str:
    """An Ollama model named without a tag is its ``:latest``."""
    return model if backend != "ollama" or ":" in model else f"{model}:latest"


def compare(hosts: list[HostModels], serving: dict[str, list[str] | None]) -> list[HostModels]:
    """Fill in what each host serves (``None``: unknown) and the drift both ways."""
    for host in hosts:
        host.actual = serving.get(host.name)
        if host.actual is None:
            continue
        want = {_norm(m, host.backend) for m in host.desired}
        have = {_norm(m, host.backend) for m in host.actual}
        host.missing = sorted(want - have)
        host.extra = sorted(have - want) if host.backend == "ollama" else []
    return hosts


def pull_targets(
    inventory: Path, model: str, hosts: list[str] | None = None, vault: Vault = NO_VAULT
) -> list[HostModels]:
    """The workers a pull of ``model`` goes to: ``hosts`` (all of them workers whose inventory
    asks for ``model``), or every worker that asks for it. A model no named worker asks for
    is refused: the inventory stays what each worker should hold (add the model to the
    group's ``ollama_models`` first), so the pull never makes drift of its own."""
    model = model.strip()
    if not model or any(c.isspace() or c in "\"'<>;&|`$" for c in model):
        raise UsageError(
            f"model {model!r}", "is not a model name", "as in ollama_models: llama3.2:1b"
        )
    workers = desired(inventory, vault)
    by_name = {h.name: h for h in workers}
    unknown = [n for n in hosts or [] if n not in by_name]
    if unknown:
        raise UsageError(f"host {unknown[0]!r}", f"is not a worker of {inventory}",
                         f"one of: {', '.join(sorted(by_name)) or 'none'}")  # fmt: skip

    def asks(host: HostModels) -> bool:
        return _norm(model, host.backend) in {_norm(m, host.backend) for m in host.desired}

    named = list(dict.fromkeys(hosts or []))  # each once, in the order given
    chosen = [by_name[n] for n in named] if named else [h for h in workers if asks(h)]
    if not chosen:
        raise UsageError(f"model {model!r}", f"no worker in {inventory} asks for it",
                         "add it to a group's ollama_models first")  # fmt: skip
    refused = [h for h in chosen if not asks(h)]
    if refused:
        host = refused[0]
        raise UsageError(f"model {model!r}",
                         f"is not in {host.name}'s models ({', '.join(host.desired) or 'none'})",
                         "add it to ollama_models of its group first")  # fmt: skip
    return chosen


def pull(
    settings: Settings,
    inventory: Path,
    model: str,
    hosts: list[str] | None = None,
    *,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """Put ``model`` on the workers that should hold it (``pull_targets``) with
    playbooks/models.yml: an Ollama worker pulls it (and removes nothing), a llama.cpp
    worker gets its server's model file. Stored as a run like any other."""
    from clusterai_runner.usecases.converge import check_inventory_rules, run_and_record

    targets = [h.name for h in pull_targets(inventory, model, hosts, vault)]
    check_inventory_rules(inventory, targets, cancel, vault)
    with using_store(settings, store) as opened:
        return run_and_record(
            settings,
            opened,
            "models.yml",
            inventory,
            extravars={
                "clusterai_targets": ",".join(targets),
                # This one model, whatever else the group lists; never a removal.
                "ollama_models": [model.strip()],
                "ollama_models_prune": False,
            },
            on_event=on_event,
            cancel=cancel,
            vault=vault,
        )
