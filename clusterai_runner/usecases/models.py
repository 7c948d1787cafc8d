"""Models, desired against actual: what each worker's group should serve (the inventory's
``ollama_models``, or the llama.cpp server's one model alias), and what it serves now (its
inference server's model list, with each model's digest, size and whether it is loaded,
from ``status``); pulling a model onto the workers that should hold it, and syncing every
worker that drifted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from clusterai_runner import backends, model_store
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import REPO, Settings
from clusterai_runner.errors import UsageError
from clusterai_runner.usecases.status import HeldModel
from clusterai_runner.usecases.status import status as cluster_status

# Running a playbook loads ansible-runner: imported where a pull starts, so that the
# comparison also serves the web app where Ansible is not installed (the control host).
if TYPE_CHECKING:
    from clusterai_runner.adapters.http import JsonApi
    from clusterai_runner.adapters.inventory import InventoryHost
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
    # Each model it holds: name, digest and size (None where its server does not say),
    # loaded (in memory now), desired (its inventory asks for it).
    models: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Not as the inventory says, or not known (its server does not answer)."""
        return self.actual is None or bool(self.missing or self.extra)


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


def compare(
    hosts: list[HostModels],
    serving: dict[str, list[str] | None],
    details: dict[str, list[HeldModel]] | None = None,
) -> list[HostModels]:
    """Fill in what each host serves (``None``: unknown), the drift both ways and, from
    ``details``, each held model's digest, size and whether it is loaded."""
    for host in hosts:
        host.actual = serving.get(host.name)
        if host.actual is None:
            continue
        want = {_norm(m, host.backend) for m in host.desired}
        have = {_norm(m, host.backend) for m in host.actual}
        host.missing = sorted(want - have)
        host.extra = sorted(have - want) if host.backend == "ollama" else []
        host.models = [
            {**asdict(m), "desired": _norm(m.name, host.backend) in want}
            for m in (details or {}).get(host.name) or []
        ]
    return hosts


def status(
    settings: Settings,
    inventory: Path,
    vault: Vault = NO_VAULT,
    warn: Callable[[str], None] = lambda _message: None,
    timeout: float = 3.0,
) -> list[HostModels]:
    """Every worker's models, desired against what its server holds now."""
    wanted = desired(inventory, vault)
    found = cluster_status(settings, inventory, None, timeout, warn, vault)
    serving = {s.name: s.held for s in found}
    details = {s.name: s.held_models for s in found if s.held_models is not None}
    return compare(wanted, serving, details)


def sync_targets(
    hosts: list[HostModels], names: list[str] | None = None, prune: bool = False
) -> list[HostModels]:
    """The workers a sync converges: of ``names`` (every worker when None), those missing
    a model, holding one their inventory does not list (with ``prune``), or whose server
    does not answer."""
    by_name = {h.name: h for h in hosts}
    unknown = [n for n in names or [] if n not in by_name]
    if unknown:
        raise UsageError(f"host {unknown[0]!r}", "is not a worker of the inventory",
                         f"one of: {', '.join(sorted(by_name)) or 'none'}")  # fmt: skip
    chosen = [by_name[n] for n in dict.fromkeys(names)] if names else hosts
    return [h for h in chosen if h.actual is None or h.missing or (prune and h.extra)]


def sync(
    settings: Settings,
    inventory: Path,
    targets: list[HostModels],
    prune: bool = False,
    *,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """Converge ``targets`` (``sync_targets``) to their inventory's models with
    playbooks/models.yml: Ollama workers pull what they miss (and with ``prune`` remove
    what their group does not list), llama.cpp workers get their server's model. Stored
    as a run like any other."""
    names = [h.name for h in targets]
    if not names:
        raise UsageError("models sync", "no worker to sync", "each is as its inventory says")
    from clusterai_runner.usecases.converge import run_on_targets

    return run_on_targets(settings, inventory, "models.yml", names, {"ollama_models_prune": prune},
                          store=store, on_event=on_event, cancel=cancel, vault=vault)  # fmt: skip


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
    from clusterai_runner.usecases.converge import run_on_targets

    targets = [h.name for h in pull_targets(inventory, model, hosts, vault)]
    # This one model, whatever else the group lists; never a removal.
    extravars: dict[str, object] = {"ollama_models": [model.strip()], "ollama_models_prune": False}
    return run_on_targets(settings, inventory, "models.yml", targets, extravars, store=store,
                          on_event=on_event, cancel=cancel, vault=vault)  # fmt: skip


def import_into_store(
    settings: Settings,
    inventory: Path,
    source: Path,
    name: str | None = None,
    *,
    store: Store | None = None,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel: CancelToken | None = None,
    vault: Vault = NO_VAULT,
) -> RunRecord:
    """Seed the cluster's model store on the control host from ``source`` on this machine
    (an Ollama models directory or a GGUF file) with playbooks/models_import.yml, for
    sites the registry cannot reach. Checked here first: the inventory runs a store, and
    ``source`` is what it says (its manifests parse, their blobs are there and each one's
    SHA-256 is its name: a bad one is refused before anything is copied); the control
    host hashes every blob again before it writes. Stored as a run like any other."""
    source = source.expanduser().absolute()
    if not source.exists():
        raise UsageError(str(source), "no such file or directory",
                         "give an Ollama models directory or a GGUF file")  # fmt: skip
    control = next((h for h in load_inventory(inventory, None, vault) if h.kind == "control"),
                   None)  # fmt: skip
    _needs_store(control, inventory)
    assert control is not None
    try:  # last: it reads every blob
        model_store.plan_import(source, name, hashed=True)
    except model_store.StoreError as exc:
        fix = "give an Ollama models directory (manifests/, blobs/ named by their SHA-256)"
        raise UsageError("models import", str(exc), fix + " or a GGUF file") from exc
    from clusterai_runner.usecases.converge import run_on_targets

    extravars: dict[str, object] = {"model_store_import_path": str(source),
                                    "model_store_import_name": name or ""}  # fmt: skip
    return run_on_targets(settings, inventory, "models_import.yml", [control.name], extravars,
                          store=store, on_event=on_event, cancel=cancel, vault=vault)  # fmt: skip


def store_models(control: InventoryHost | None, inventory: Path) -> list[dict[str, Any]]:
    """What the cluster's model store on ``control`` (``inventory``'s control host) holds:
    name, manifest digest, size, blobs, complete. An inventory without a store is refused."""
    found: list[dict[str, Any]] = (
        _needs_store(control, inventory).get("/clusterai/v1/models").get("models", [])
    )
    return found


def store_knows(control: InventoryHost | None, model: str) -> bool | None:
    """Whether the cluster's model store has ``model`` or its registry knows it (a HEAD of
    the manifest: nothing is fetched); None where the inventory runs no store, or the
    name has a registry of its own (Ollama pulls it itself)."""
    api = _store_api(control)
    if api is None or model.count("/") >= 2:
        return None
    from clusterai_runner.adapters.http import ServiceUnavailable

    name = model_store.ModelName.parse(model)
    try:
        api.head(f"/v2/{name.repository}/manifests/{name.tag}")  # no blob is fetched
    except ServiceUnavailable as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _store_api(control: InventoryHost | None) -> JsonApi | None:
    """The API of the model store on the control host, asked with the backend key; None
    where the inventory runs no store."""
    from clusterai_runner.adapters.http import JsonApi

    if control is None or not _truthy(control.variables.get("clusterai_model_store")):
        return None
    variables = control.variables
    key = variables.get(backends.KEY_VARIABLE)
    where = backends.url(control.address, int(variables.get("model_store_port", 8095)))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return JsonApi("the model store", where, headers=headers, timeout=30.0)


def _needs_store(control: InventoryHost | None, inventory: Path) -> JsonApi:
    """``_store_api``, or one line saying the inventory runs no store (exit 2)."""
    api = _store_api(control)
    if api is None:
        raise UsageError(f"inventory {inventory}", "runs no model store",
                         "set clusterai_model_store: true in group_vars/all and run"
                         " `clusterai up` first")  # fmt: skip
    return api


def _truthy(value: object) -> bool:
    """An inventory switch as Ansible's ``bool`` filter reads it."""
    return str(value).strip().lower() in {"true", "yes", "on", "1", "y", "t"}
