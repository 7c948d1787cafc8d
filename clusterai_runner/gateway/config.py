"""The gateway's configuration file: where it listens, its backends and model aliases.

    listen: 127.0.0.1:8000
    backends:
      - name: worker1
        url: http://192.0.2.21:8080        # a llama.cpp server: speaks the OpenAI API
        api: openai
        max_concurrency: 4
      - name: gpu2
        url: http://192.0.2.22:11434       # an Ollama server
        api: ollama
        gpu: true                          # it has GPUs: a model wholly in system memory
                                           # there is flagged (fallback.py)
      - name: hosted
        url: https://api.example.com/v1     # any OpenAI-compatible provider
        api: openai
        capabilities: [chat, completions, stream_usage]  # what it may be sent (unset:
                                           # learned from answers); see CAPABILITIES
        api_key_env: HOSTED_API_KEY        # the key comes from the environment, never the file
        fallback: true                     # used only when no worker can take the request
        digests: {gpt-x: "sha256:<hex>"}   # each model's content digest, for the answer
                                           # cache's keys (Ollama's: from /api/tags)
    aliases:
      chat: [smollm2, qwen2.5:0.5b]        # one public name, the backend models behind it
    backends_file: backends.yml            # more backends and aliases (relative to this
                                           # file); SIGHUP re-reads both files' backends
    queue: {size: 256, timeout_s: 30,      # wake_retry_after_s: 60, the Retry-After of a
            wake_retry_after_s: 60,        # request whose model's workers are all parked;
            wait_window_s: 60}             # the queue wait's p95 (the autoscaler's) is of
                                           # the requests of the last wait_window_s
    health: {interval_s: 5, eject_after: 3}
    cache: {path: /var/lib/clusterai/gateway-cache.db, ttl_s: 3600, max_entries: 10000,
            scope: tenant}                 # tenant (--tenant keys apart), key or shared
    # or, shared by every gateway replica (answers and per-key limits):
    #     cache: {redis_url: redis://192.0.2.10:6379/0}
    # and, opt-in per route, answers for prompts that mean the same (semantic.py):
    #     cache: {semantic: {routes: [/v1/chat/completions], model: nomic-embed-text,
    #                        threshold: 0.95, max_entries: 256}}
    auth: {enabled: true, refresh_s: 5,    # keys: `clusterai gateway keys create NAME`
           max_stale_s: 60}                # keys not reloaded this long: 503 until they are
    metrics: {listen: 192.0.2.10:8001,     # /metrics for Prometheus only there, over TLS
              web_config: metrics-web.yml} # with a login (see monitoring.py)
    routing: {affinity: true,              # a conversation's turns to the backend of its
              affinity_ttl_s: 600}         # earlier ones (its prompt cache) when as free
    throughput: {drop_below: 0.5,          # tokens/s of the last recent_s under this share
                 recent_s: 300,            # of those before it (up to baseline_s back),
                 baseline_s: 86400,        # with min_samples on each side: a drop
                 min_samples: 5}           # (fallback.py)

Errors name the file and the field and say how to fix it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from clusterai_runner.errors import UsageError

APIS = ("openai", "ollama")
# What a backend may be sent: the three kinds of request, and stream_usage, the token
# counts in a stream's last chunk when the client asks (OpenAI's stream_options.include_usage).
CAPABILITIES = ("chat", "completions", "embeddings", "stream_usage")
CACHE_SCOPES = ("tenant", "key", "shared")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DIGEST = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
# The routes the cache's semantic layer may answer (semantic.py), and the body fields
# that hold their prompt. Here, not there: the web app reads this module without aiohttp.
PROMPT_FIELDS = {
    "/v1/chat/completions": ("messages",),
    "/v1/completions": ("prompt",),
    "/api/chat": ("messages",),
    "/api/generate": ("prompt", "system"),
}


@dataclass(frozen=True)
class BackendConfig:
    name: str
    url: str  # without a trailing slash; for api openai, the part before /v1
    api: str  # openai or ollama
    max_concurrency: int = 4
    api_key: str | None = field(default=None, repr=False)
    fallback: bool = False
    # What it may be sent (chat, completions, embeddings); None: every one, and what it
    # cannot serve is learned from its answers (see pool.py).
    capabilities: tuple[str, ...] | None = None
    # A parked worker (its server stopped by the autoscaler): never sent a request nor
    # probed; a request for one of its ``models`` that no other backend serves waits in
    # the queue while the autoscaler starts a worker (see pool.py, "waking").
    standby: bool = False
    models: tuple[str, ...] = ()
    # It has GPUs: a model it holds wholly in system memory is on the CPU (fallback.py).
    gpu: bool = False
    # The content digest (SHA-256) of each model it serves, where its API does not say
    # (Ollama's /api/tags does): part of the answer cache's keys, so a new version of a
    # model never gets the old one's answers.
    digests: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    backends: tuple[BackendConfig, ...] = ()
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    queue_size: int = 256
    queue_timeout_s: float = 30.0
    # What a 503 for a model whose workers are all parked tells the client to wait.
    wake_retry_after_s: float = 60.0
    # How far back the queue wait's p95 (the autoscaler's signal) and the models wanted
    # are counted.
    wait_window_s: float = 60.0
    health_interval_s: float = 5.0
    eject_after: int = 3
    max_body_bytes: int = 4 * 1024 * 1024
    cache_enabled: bool = True
    cache_path: str | None = None  # None: the caller's default (the state directory)
    cache_ttl_s: float = 3600.0
    cache_max_entries: int = 10000
    cache_redis_url: str | None = None
    # Whose requests share cached answers: "tenant" (keys created with --tenant each keep
    # theirs apart, the others share), "key" (every key its own) or "shared" (everyone).
    cache_scope: str = "tenant"
    auth_enabled: bool = True
    auth_refresh_s: float = 5.0
    # Keys the gateway could not reload for this long are not trusted: requests get 503.
    auth_max_stale_s: float = 60.0
    # /metrics on a listener of its own, with TLS and a login (monitoring.py); None: on
    # the client listener, open.
    metrics_host: str | None = None
    metrics_port: int = 0
    metrics_web_config: str | None = None
    # The cache's semantic layer (semantic.py): the routes where it answers, the
    # cluster's embedding model, the similarity it needs, the answers kept per model
    # and parameters. No routes: off.
    semantic_routes: tuple[str, ...] = ()
    semantic_model: str = ""
    semantic_threshold: float = 0.95
    semantic_max_entries: int = 256
    # A conversation's turns go to the backend of its earlier turns (pool.Affinity),
    # remembered this long after its last turn.
    affinity: bool = True
    affinity_ttl_s: float = 600.0
    # Throughput drops (fallback.py): the last recent_s against up to baseline_s before.
    throughput_drop_below: float = 0.5
    throughput_recent_s: float = 300.0
    throughput_baseline_s: float = 86400.0
    throughput_min_samples: int = 5


def _where(path: Path | str, key: str) -> str:
    return f"gateway config {path}: {key}"


def _int(path: Path | str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(_where(path, key), f"{value!r} is not a number from {low} to {high}")
    return value


def _choice(path: Path | str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(_where(path, key), f"{value!r} is not one of {', '.join(choices)}")
    return str(value)


def _semantic(source: Path | str, section: Any) -> dict[str, Any]:
    """cache.semantic: {routes: [...], model: NAME, threshold: 0.95, max_entries: 256}."""
    if not section:
        return {}
    where = _where(source, "cache.semantic")
    if not isinstance(section, dict):
        raise UsageError(where, "is not a mapping", "e.g. {routes: [...], model: NAME}")
    unknown = set(section) - {"routes", "model", "threshold", "max_entries"}
    if unknown:
        raise UsageError(f"{where}.{sorted(unknown)[0]}", "is not a setting",
                         "use routes, model, threshold and max_entries")  # fmt: skip
    routes = section.get("routes") or []
    if not isinstance(routes, list) or not set(routes) <= set(PROMPT_FIELDS):
        raise UsageError(f"{where}.routes", f"{routes!r} is not a list of routes",
                         f"some of {', '.join(PROMPT_FIELDS)}")  # fmt: skip
    model = section.get("model")
    if routes and (not isinstance(model, str) or not model):
        raise UsageError(f"{where}.model", "is not set",
                         "name an embedding model the cluster serves")  # fmt: skip
    threshold = section.get("threshold", 0.95)
    number = isinstance(threshold, int | float) and not isinstance(threshold, bool)
    if not number or not 0 < threshold <= 1:
        raise UsageError(f"{where}.threshold", f"{threshold!r} is not a similarity in (0, 1]",
                         "e.g. 0.95")  # fmt: skip
    limit = _int(source, "cache.semantic.max_entries", section.get("max_entries", 256), 1,
                 100_000)  # fmt: skip
    return {
        "semantic_routes": tuple(dict.fromkeys(routes)),
        "semantic_model": str(model or ""),
        "semantic_threshold": float(threshold),
        "semantic_max_entries": limit,
    }


def _flag(path: Path | str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UsageError(_where(path, key), f"{value!r} is not true or false")
    return value


def _fraction(path: Path | str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise UsageError(_where(path, key), f"{value!r} is not a fraction between 0 and 1",
                         "e.g. 0.5: under half the baseline")  # fmt: skip
    return float(value)


def _number(path: Path | str, key: str, value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise UsageError(_where(path, key), f"{value!r} is not a number of at least {low}")
    return float(value)


def parse_listen(where: str, value: str) -> tuple[str, int]:
    host, _, port = str(value).rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(where, f"{value!r} is not HOST:PORT", "e.g. 127.0.0.1:8000")
    return host, int(port)


def _backend(path: Path | str, index: int, raw: Any, env: dict[str, str] | None) -> BackendConfig:
    key = f"backends[{index}]"
    if not isinstance(raw, dict):
        raise UsageError(_where(path, key), "is not a mapping", "give name, url and api")
    settings = ("name", "url", "api", "max_concurrency", "api_key_env", "fallback",
                "capabilities", "standby", "models", "digests", "gpu")  # fmt: skip
    unknown = set(raw) - set(settings)
    if unknown:
        raise UsageError(
            _where(path, f"{key}.{sorted(unknown)[0]}"),
            "is not a backend setting",
            f"use {', '.join(settings)}",
        )
    name = str(raw.get("name", ""))
    if not NAME.match(name):
        raise UsageError(_where(path, f"{key}.name"), f"{name!r} is not a valid name")
    url = str(raw.get("url", "")).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            _where(path, f"{key}.url"), f"{url!r} is not an http(s) URL", "e.g. http://host:8080"
        )
    api = str(raw.get("api", "openai"))
    if api not in APIS:
        raise UsageError(_where(path, f"{key}.api"), f"{api!r} is not one of {', '.join(APIS)}")
    if api == "openai" and url.endswith("/v1"):
        url = url[: -len("/v1")]
    api_key = None
    if "api_key_env" in raw:
        variable = str(raw["api_key_env"])
        api_key = env.get(variable) if env is not None else None
        if not api_key and env is not None:
            raise UsageError(
                _where(path, f"{key}.api_key_env"),
                f"the environment variable {variable} is not set",
                "export it before starting the gateway",
            )
    concurrency = _int(path, f"{key}.max_concurrency", raw.get("max_concurrency", 4), 1, 4096)
    fallback = raw.get("fallback", False)
    if not isinstance(fallback, bool):
        raise UsageError(_where(path, f"{key}.fallback"), f"{fallback!r} is not true or false")
    capabilities = raw.get("capabilities")
    if capabilities is not None and (
        not isinstance(capabilities, list) or not set(capabilities) <= set(CAPABILITIES)
    ):
        raise UsageError(
            _where(path, f"{key}.capabilities"),
            f"{capabilities!r} is not a list of {', '.join(CAPABILITIES)}",
        )
    declared = tuple(dict.fromkeys(capabilities)) if capabilities is not None else None
    standby = raw.get("standby", False)
    if not isinstance(standby, bool):
        raise UsageError(_where(path, f"{key}.standby"), f"{standby!r} is not true or false")
    models = raw.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise UsageError(_where(path, f"{key}.models"), f"{models!r} is not a list of model names")
    if standby and not models:
        raise UsageError(
            _where(path, f"{key}.models"),
            "a standby backend needs the models it would serve",
            "list them, e.g. [smollm2]",
        )
    digests = raw.get("digests") or {}
    if not isinstance(digests, dict) or not all(
        isinstance(m, str) and isinstance(d, str) and DIGEST.match(d) for m, d in digests.items()
    ):
        raise UsageError(_where(path, f"{key}.digests"), "is not a mapping of model names to"
                         " SHA-256 digests", "e.g. {smollm2: sha256:<64 hex digits>}")  # fmt: skip
    by_model = tuple(sorted((m, d.removeprefix("sha256:")) for m, d in digests.items()))
    gpu = raw.get("gpu", False)
    if not isinstance(gpu, bool):
        raise UsageError(_where(path, f"{key}.gpu"), f"{gpu!r} is not true or false")
    return BackendConfig(name, url, api, concurrency, api_key, fallback, declared, standby,
                         tuple(models), gpu, by_model)  # fmt: skip


def _redis_url(source: Path | str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise UsageError(
            _where(source, "cache.redis_url"),
            f"{value!r} is not a Redis URL",
            "e.g. redis://host:6379/0",
        )
    return value


def _read(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"gateway config {path}", exc.strerror or "unreadable") from exc
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise UsageError(f"gateway config {path}:{line}", f"YAML error: {exc.problem}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise UsageError(f"gateway config {path}", "is not a mapping")
    return loaded or {}


def _backends_and_aliases(
    source: Path | str, raw: dict[str, Any], env: dict[str, str] | None
) -> tuple[list[BackendConfig], dict[Any, Any]]:
    """A file's ``backends`` (checked) and ``aliases`` (checked to be a mapping)."""
    entries = raw.get("backends") or []
    if not isinstance(entries, list):
        raise UsageError(_where(source, "backends"), "is not a list")
    backends = [_backend(source, i, b, env) for i, b in enumerate(entries)]
    aliases = raw.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise UsageError(_where(source, "aliases"), "is not a mapping of name to model list")
    return backends, aliases


def read_backends_file(
    listed: Path, env: dict[str, str] | None = None
) -> tuple[list[BackendConfig], dict[Any, Any]]:
    """A backends file's backends and aliases, checked; ``env`` None skips the check that
    each ``api_key_env`` is set (``python -m clusterai_runner.gateway check``)."""
    more = _read(listed)
    extra = set(more) - {"backends", "aliases"}
    if extra:
        raise UsageError(_where(listed, sorted(extra)[0]), "is not a setting",
                         "a backends file holds backends and aliases only")  # fmt: skip
    return _backends_and_aliases(listed, more, env)


def load(path: Path | None, extra_backends: tuple[str, ...] = (), listen: str | None = None,
         env: dict[str, str] | None = None,
         workers: list[dict[str, Any]] | None = None, *, relative_to: Path | None = None,
         require_env: bool = True) -> GatewayConfig:  # fmt: skip
    """The configuration in ``path`` (when given), plus the cluster's ``workers`` (entries
    of name, url and api, from the inventory) and backends given as URLs on the command
    line (``api=url`` or a bare URL for the OpenAI API). A relative ``backends_file`` is
    found beside ``path``, or in ``relative_to``. ``require_env`` False leaves the
    providers' keys unread (for checking a file before it is installed)."""
    env_or_none = dict(os.environ if env is None else env) if require_env else None
    raw: dict[str, Any] = _read(path) if path is not None else {}
    source: Path | str = path or "(command line)"
    known = {"listen", "backends", "backends_file", "aliases", "queue", "health",
             "max_body_bytes", "cache", "auth", "metrics", "throughput",
             "routing"}  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise UsageError(
            _where(source, sorted(unknown)[0]),
            "is not a setting",
            f"use {', '.join(sorted(known))}",
        )
    host, port = parse_listen(
        _where(source, "listen"), listen or raw.get("listen", "127.0.0.1:8000")
    )
    backends, aliases_raw = _backends_and_aliases(source, raw, env_or_none)
    if raw.get("backends_file"):
        # Backends and aliases that change with the cluster, in a file of their own:
        # SIGHUP re-reads it (see app.serve).
        listed = Path(str(raw["backends_file"]))
        if not listed.is_absolute():
            base = relative_to or (path.parent if path is not None else Path.cwd())
            listed = base / listed
        listed_backends, listed_aliases = read_backends_file(listed, env_or_none)
        backends += listed_backends
        aliases_raw = {**aliases_raw, **listed_aliases}
    for i, entry in enumerate(workers or []):
        backends.append(_backend("(inventory)", i, entry, env_or_none))
    for i, text in enumerate(extra_backends):
        api, _, url = text.rpartition("=")
        entry = {"name": f"backend{len(backends) + 1}", "url": url, "api": api or "openai"}
        backends.append(_backend("(command line)", i, entry, env_or_none))
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[0]
        raise UsageError(_where(source, "backends"), f"the name {twice!r} is used twice")
    if not backends and not raw.get("backends_file"):
        # A backends file may be empty for a while: a cluster whose last worker left.
        raise UsageError(
            "gateway", "no backends", "list them in the config file or give --backend URL"
        )
    aliases = {}
    for alias, targets in aliases_raw.items():
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets:
            raise UsageError(_where(source, f"aliases.{alias}"), "is not a list of model names")
        aliases[str(alias)] = tuple(str(t) for t in targets)
    queue = raw.get("queue") or {}
    health = raw.get("health") or {}
    cache = raw.get("cache") or {}
    auth = raw.get("auth") or {}
    monitoring = raw.get("metrics") or {}
    throughput = raw.get("throughput") or {}
    routing = raw.get("routing") or {}
    sections = (("queue", queue), ("health", health), ("cache", cache), ("auth", auth),
                ("metrics", monitoring), ("throughput", throughput),
                ("routing", routing))  # fmt: skip
    for name, section in sections:
        if not isinstance(section, dict):
            raise UsageError(_where(source, name), "is not a mapping")
    enabled = cache.get("enabled", True)
    if not isinstance(enabled, bool):
        raise UsageError(_where(source, "cache.enabled"), f"{enabled!r} is not true or false")
    auth_enabled = auth.get("enabled", True)
    if not isinstance(auth_enabled, bool):
        raise UsageError(_where(source, "auth.enabled"), f"{auth_enabled!r} is not true or false")
    refresh_s = _number(source, "auth.refresh_s", auth.get("refresh_s", 5), 0.1)
    metrics_host, metrics_port, metrics_web_config = _metrics(
        source, monitoring, relative_to or (path.parent if path is not None else Path.cwd())
    )
    if (metrics_host, metrics_port) == (host, port):
        raise UsageError(_where(source, "metrics.listen"), "is the client listener too",
                         "give the metrics a port of their own")  # fmt: skip
    return GatewayConfig(
        host=host,
        port=port,
        backends=tuple(backends),
        aliases=aliases,
        queue_size=_int(source, "queue.size", queue.get("size", 256), 0, 1_000_000),
        queue_timeout_s=_number(source, "queue.timeout_s", queue.get("timeout_s", 30), 0),
        wake_retry_after_s=_number(
            source, "queue.wake_retry_after_s", queue.get("wake_retry_after_s", 60), 1
        ),
        wait_window_s=_number(source, "queue.wait_window_s", queue.get("wait_window_s", 60), 1),
        health_interval_s=_number(source, "health.interval_s", health.get("interval_s", 5), 0.1),
        eject_after=_int(source, "health.eject_after", health.get("eject_after", 3), 1, 1000),
        max_body_bytes=_int(
            source, "max_body_bytes", raw.get("max_body_bytes", 4 * 1024 * 1024), 1024, 2**31
        ),
        cache_enabled=enabled,
        cache_path=str(cache["path"]) if cache.get("path") else None,
        cache_ttl_s=_number(source, "cache.ttl_s", cache.get("ttl_s", 3600), 0),
        cache_max_entries=_int(
            source, "cache.max_entries", cache.get("max_entries", 10000), 1, 10**8
        ),
        cache_redis_url=_redis_url(source, cache.get("redis_url")),
        cache_scope=_choice(source, "cache.scope", cache.get("scope", "tenant"), CACHE_SCOPES),
        auth_enabled=auth_enabled,
        auth_refresh_s=refresh_s,
        auth_max_stale_s=_number(
            source, "auth.max_stale_s", auth.get("max_stale_s", max(60, refresh_s)), refresh_s
        ),
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        metrics_web_config=metrics_web_config,
        **_semantic(source, cache.get("semantic")),
        affinity=_flag(source, "routing.affinity", routing.get("affinity", True)),
        affinity_ttl_s=_number(
            source, "routing.affinity_ttl_s", routing.get("affinity_ttl_s", 600), 1
        ),
        throughput_drop_below=_fraction(
            source, "throughput.drop_below", throughput.get("drop_below", 0.5)
        ),
        throughput_recent_s=_number(
            source, "throughput.recent_s", throughput.get("recent_s", 300), 1
        ),
        throughput_baseline_s=_number(
            source, "throughput.baseline_s", throughput.get("baseline_s", 86400), 1
        ),
        throughput_min_samples=_int(
            source, "throughput.min_samples", throughput.get("min_samples", 5), 1, 10_000
        ),
    )


def _metrics(
    source: Path | str, section: dict[str, Any], base: Path
) -> tuple[str | None, int, str | None]:
    """The metrics listener's host, port and web configuration file (relative to ``base``)."""
    if not section:
        return None, 0, None
    unknown = set(section) - {"listen", "web_config"}
    if unknown:
        raise UsageError(_where(source, f"metrics.{sorted(unknown)[0]}"), "is not a setting",
                         "use listen and web_config")  # fmt: skip
    if not section.get("listen") or not section.get("web_config"):
        raise UsageError(_where(source, "metrics"), "needs listen and web_config",
                         "e.g. {listen: 192.0.2.10:8001, web_config: metrics-web.yml}")  # fmt: skip
    host, port = parse_listen(_where(source, "metrics.listen"), section["listen"])
    web_config = Path(str(section["web_config"]))
    return host, port, str(web_config if web_config.is_absolute() else base / web_config)
