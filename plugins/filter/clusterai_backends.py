# Copyright: Cluster AI contributors
# Apache License 2.0
"""The ``clusterai_backend`` filter: a host's inference server from the catalogue.

``hostvars[host] | clusterai_backend`` gives the entry of ``clusterai_runner/backends.yml``
for the host's ``clusterai_inference_backend``, with what depends on the host worked out:
``port`` (its inventory's port variable, else the catalogue's), ``capabilities`` (with
the optional ones its variables turn on), ``models`` (what it serves: its
``models_variable``, else the catalogue's default), ``listen``
(``address:port``, IPv6 in brackets), ``url`` and ``health_url``. A host without a known
backend gives ``{}``. ``'llamacpp' | clusterai_backend`` gives the bare entry.
The whole catalogue is ``lookup('clusterai_backends')``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

CATALOGUE = Path(__file__).resolve().parents[2] / "clusterai_runner" / "backends.yml"
_loaded: dict[str, dict[str, Any]] = {}


def catalogue() -> dict[str, dict[str, Any]]:
    if not _loaded:
        try:
            _loaded.update(yaml.safe_load(CATALOGUE.read_text()))
        except OSError as exc:
            raise AnsibleFilterError(f"clusterai_backend: cannot read {CATALOGUE}: {exc}") from exc
    return _loaded


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def clusterai_backend(value: Any) -> dict[str, Any]:
    entries = catalogue()
    if isinstance(value, str):
        if value not in entries:
            raise AnsibleFilterError(
                f"clusterai_backend: {value!r} is not a backend (known: {', '.join(entries)})"
            )
        return {"kind": value, **entries[value]}
    if not isinstance(value, Mapping):
        raise AnsibleFilterError("clusterai_backend: give a host's variables or a backend name")
    kind = str(value.get("clusterai_inference_backend", "") or "")
    if kind not in entries:
        return {}
    entry = {"kind": kind, **entries[kind]}
    port = int(value.get(entry["port_variable"], entry["port"]))
    address = _bracketed(str(value.get("clusterai_address", "")))
    base = f"http://{address}:{port}"
    optional = entry["optional_capabilities"]
    models = value.get(entry["models_variable"], entry["models"])
    return {
        **entry,
        "models": [str(models)] if isinstance(models, str) else [str(m) for m in models or []],
        "capabilities": [*entry["capabilities"], *(c for c in optional if value.get(optional[c]))],
        "port": port,
        "listen": f"{address}:{port}",
        "url": base,
        "health_url": base + entry["health_path"],
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"clusterai_backend": clusterai_backend}
