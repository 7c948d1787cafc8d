"""The inference-backend catalogue is the one place a backend's facts live: Python and the
Ansible filter read the same file and agree, and each installing role's own defaults
match it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterai_runner import backends
from clusterai_runner.adapters.inventory import InventoryHost
from clusterai_runner.usecases.gateway_backends import worker_backends
from clusterai_runner.usecases.validate import needed_ports, preflight_defaults, settings_for

REPO = Path(__file__).resolve().parents[2]


def _filter() -> Any:
    spec = importlib.util.spec_from_file_location(
        "clusterai_backends", REPO / "plugins/filter/clusterai_backends.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.clusterai_backend


def worker(**variables: Any) -> InventoryHost:
    variables = {"clusterai_address": "192.0.2.21", **variables}
    return InventoryHost(
        "w1", ("workers",), "192.0.2.21", 22, "root", None, (), "192.0.2.21", variables
    )


@pytest.mark.parametrize("kind", sorted(backends.catalogue()))
def test_each_roles_defaults_match_the_catalogue(kind: str) -> None:
    entry = backends.catalogue()[kind]
    defaults = yaml.safe_load((REPO / "roles" / entry.role / "defaults/main.yml").read_text())
    assert defaults[entry.port_variable] == entry.port
    assert entry.models_dir_variable in defaults
    default = defaults[entry.models_variable]
    assert list(entry.models) == ([default] if isinstance(default, str) else default)
    unit = REPO / "roles" / entry.role / "templates" / f"{entry.unit}.service.j2"
    assert unit.is_file(), f"{entry.role} has no template for its unit {entry.unit}"


@pytest.mark.parametrize(
    ("variables", "url", "health"),
    [
        ({"clusterai_inference_backend": "llamacpp"}, "http://192.0.2.21:8080", "/v1/models"),
        (
            {"clusterai_inference_backend": "llamacpp", "llamacpp_server_port": 8181},
            "http://192.0.2.21:8181",
            "/v1/models",
        ),
        (
            {"clusterai_inference_backend": "ollama", "ollama_port": 11500},
            "http://192.0.2.21:11500",
            "/api/version",
        ),
        (
            {"clusterai_inference_backend": "ollama", "clusterai_address": "2001:db8::21"},
            "http://[2001:db8::21]:11434",
            "/api/version",
        ),
    ],
)
def test_python_and_the_filter_agree_on_a_hosts_server(
    variables: dict[str, Any], url: str, health: str
) -> None:
    host = worker(**variables)
    server = backends.of_host(host.variables)
    assert server is not None
    port = server.port_for(host.variables)
    assert backends.url(host.variables["clusterai_address"], port) == url
    resolved = _filter()(host.variables)
    assert (resolved["url"], resolved["health_url"]) == (url, url + health)
    assert resolved["unit"] == server.unit and resolved["api"] == server.api
    assert resolved["models"] == server.models_for(host.variables)
    (entry,) = worker_backends([host])
    assert entry["url"] == backends.url(host.address, port) and entry["api"] == server.api
    settings = settings_for(host, preflight_defaults())
    assert needed_ports(host, settings)[port] == server.unit


@pytest.mark.parametrize(
    ("variables", "models"),
    [
        ({"clusterai_inference_backend": "llamacpp"}, ["smollm2"]),
        ({"clusterai_inference_backend": "llamacpp", "llamacpp_server_model_alias": "m"}, ["m"]),
        ({"clusterai_inference_backend": "ollama"}, []),
        ({"clusterai_inference_backend": "ollama", "ollama_models": ["a", "b"]}, ["a", "b"]),
    ],
)
def test_a_hosts_models_and_a_parked_workers_backend(
    variables: dict[str, Any], models: list[str]
) -> None:
    host = worker(**variables)
    server = backends.of_host(host.variables)
    assert server is not None and server.models_for(host.variables) == models
    assert _filter()(host.variables)["models"] == models
    parked = InventoryHost(
        "w1", ("parked", "workers"), "192.0.2.21", 22, "root", None, (), "192.0.2.21",
        {"clusterai_address": "192.0.2.21", **variables},
    )  # fmt: skip
    found = worker_backends([parked])
    # A parked worker is a standby backend: never sent a request, its models known.
    assert found == ([{**worker_backends([host])[0], "standby": True, "models": models}]
                     if models else [])  # fmt: skip


def test_a_host_without_a_known_backend_has_none() -> None:
    assert _filter()({"clusterai_address": "192.0.2.1"}) == {}
    assert backends.of_host({"clusterai_inference_backend": "vllm"}) is None
    assert worker_backends([worker(clusterai_inference_backend="vllm")]) == []
