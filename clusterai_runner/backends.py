"""The inference-backend catalogue (``backends.yml`` beside this file), for Python.

Ansible reads the same file through the ``clusterai_backend`` filter and the
``clusterai_backends`` lookup (``plugins/``): a backend's port, health path, API and unit
are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CATALOGUE = Path(__file__).with_name("backends.yml")
# The inventory variable holding the key that `auth: bearer` servers require, and the
# environment variable the gateway reads it from (roles/gateway writes it there).
KEY_VARIABLE = "clusterai_backend_api_key"
KEY_ENVIRONMENT = "CLUSTERAI_BACKEND_API_KEY"


@dataclass(frozen=True)
class Backend:
    kind: str  # the value of clusterai_inference_backend
    role: str
    api: str  # openai or ollama: what the gateway speaks to it
    auth: str  # bearer (clusterai_backend_api_key) or none
    port: int  # unless the inventory sets port_variable
    port_variable: str
    health_path: str
    models_path: str
    held_path: str
    unit: str
    models_dir_variable: str
    models_variable: str  # the models a host serves: one name or a list
    models: tuple[str, ...]  # the role's default for it
    capabilities: tuple[str, ...]
    optional_capabilities: Mapping[str, str]  # capability: the variable that turns it on
    digest_variable: str = ""  # the fact holding its model's content digest, if any

    def port_for(self, variables: Mapping[str, Any]) -> int:
        """The port of this backend on a host with these inventory variables."""
        return int(variables.get(self.port_variable, self.port))

    def headers_for(self, variables: Mapping[str, Any]) -> dict[str, str]:
        """What a client sends this backend on a host with these variables: the key,
        when the server requires one and the inventory gives it."""
        key = variables.get(KEY_VARIABLE)
        return {"Authorization": f"Bearer {key}"} if self.auth == "bearer" and key else {}

    def capabilities_for(self, variables: Mapping[str, Any]) -> list[str]:
        """What the gateway may send this backend on a host with these variables."""
        optional = [c for c, v in self.optional_capabilities.items() if variables.get(v)]
        return [*self.capabilities, *optional]

    def models_for(self, variables: Mapping[str, Any]) -> list[str]:
        """The models this backend serves on a host with these variables."""
        value = variables.get(self.models_variable)
        if value is None:
            return list(self.models)
        return [str(value)] if isinstance(value, str) else [str(m) for m in value]


@cache
def catalogue() -> dict[str, Backend]:
    entries = yaml.safe_load(CATALOGUE.read_text())
    return {
        kind: Backend(
            kind=kind,
            **{
                **entry,
                "capabilities": tuple(entry["capabilities"]),
                "models": tuple(entry["models"]),
            },
        )
        for kind, entry in entries.items()
    }


def of_host(variables: Mapping[str, Any]) -> Backend | None:
    """The backend a host's ``clusterai_inference_backend`` names, or None."""
    return catalogue().get(str(variables.get("clusterai_inference_backend", "")))


def url(address: str, port: int, path: str = "") -> str:
    literal = f"[{address}]" if ":" in address else address
    return f"http://{literal}:{port}{path}"
