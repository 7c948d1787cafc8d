"""Models, desired against actual: what each worker's group should serve (the inventory's
``ollama_models``, or the llama.cpp server's one model alias), and what it serves now (its
inference server's model list, from ``status``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterai_runner import backends
from clusterai_runner.adapters.inventory import load as load_inventory
from clusterai_runner.adapters.vault import NO_VAULT, Vault
from clusterai_runner.config import REPO

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
        if host.kind != "workers" or server is None:
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


def compare(hosts: list[HostModels], serving: dict[str, list[str] | None]) -> list[HostModels]:
    """Fill in what each host serves (``None``: unknown) and the drift both ways. An Ollama
    tag without a version means ``:latest``."""

    def norm(model: str, backend: str) -> str:
        return model if backend != "ollama" or ":" in model else f"{model}:latest"

    for host in hosts:
        host.actual = serving.get(host.name)
        if host.actual is None:
            continue
        want = {norm(m, host.backend) for m in host.desired}
        have = {norm(m, host.backend) for m in host.actual}
        host.missing = sorted(want - have)
        host.extra = sorted(have - want) if host.backend == "ollama" else []
    return hosts
