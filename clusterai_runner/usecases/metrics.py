"""A host's figures over time, from Prometheus's HTTP API (``/api/v1/query_range``): CPU
busy, memory used, and each GPU's utilisation, memory and temperature."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from clusterai_runner.adapters.http import JsonApi
from clusterai_runner.errors import UsageError

WINDOWS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
POINTS = 240  # per series: enough for a chart, little to send
HOST_NAME = re.compile(r"[A-Za-z0-9_.:-]+")

# What each chart shows, as PromQL over the host's instance label (its inventory name).
QUERIES = {
    "cpu": ("CPU busy", "%",
            '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle",'
            'instance="{host}"}}[2m])))'),
    "memory": ("Memory used", "%",
               '100 * (1 - node_memory_MemAvailable_bytes{{instance="{host}"}}'
               ' / node_memory_MemTotal_bytes{{instance="{host}"}})'),
    "gpu_utilization": ("GPU utilisation", "%",
                        '100 * nvidia_smi_utilization_gpu_ratio{{instance="{host}"}}'),
    "gpu_memory": ("GPU memory used", "GiB",
                   'nvidia_smi_memory_used_bytes{{instance="{host}"}} / 2^30'),
    "gpu_temperature": ("GPU temperature", "°C",
                        'nvidia_smi_temperature_gpu{{instance="{host}"}}'),
}  # fmt: skip


@dataclass(frozen=True)
class Series:
    label: str  # "" for a host-wide series, else the GPU's uuid or name
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    start: float
    end: float
    series: list[Series]


def host_charts(api: JsonApi, host: str, window: str, now: float | None = None) -> list[Chart]:
    if window not in WINDOWS:
        raise UsageError(f"window {window!r}", "is not known", f"use {', '.join(WINDOWS)}")
    if not HOST_NAME.fullmatch(host):
        raise UsageError(f"host {host!r}", "is not a host name", "see the overview")
    end = now if now is not None else time.time()
    start = end - WINDOWS[window]
    step = max(15, WINDOWS[window] // POINTS)
    charts = []
    for key, (title, unit, template) in QUERIES.items():
        answer = api.get("/api/v1/query_range", {"query": template.format(host=host),
                                                 "start": f"{start:.0f}", "end": f"{end:.0f}",
                                                 "step": str(step)})  # fmt: skip
        series = []
        for result in ((answer or {}).get("data") or {}).get("result") or []:
            metric = result.get("metric") or {}
            points = []
            for at, value in result.get("values") or []:
                try:
                    points.append((float(at), float(value)))
                except (TypeError, ValueError):
                    continue
            label = str(metric.get("name") or metric.get("uuid") or "")
            series.append(Series(label, points))
        charts.append(Chart(key, title, unit, start, end, series))
    return charts


# The gateway's traffic now, over every gateway Prometheus scrapes (job gateway).
GATEWAY_RATES = {
    "requests_per_s": "sum(rate(clusterai_gateway_requests_total[1m]))",
    "tokens_per_s": "sum(rate(clusterai_gateway_tokens_total[1m]))",
    "queue": "sum(clusterai_gateway_queue_waiting)",
    "cache_hit_rate": 'sum(rate(clusterai_gateway_cache_lookups_total{result="hit"}[5m]))'
    " / sum(rate(clusterai_gateway_cache_lookups_total[5m]))",
}


def instant(api: JsonApi, query: str) -> list[tuple[dict[str, str], float]]:
    """Each series of an instant query (``/api/v1/query``): its labels and value; a result
    without a number is skipped."""
    answer = api.get("/api/v1/query", {"query": query}) or {}
    found = []
    for result in (answer.get("data") or {}).get("result") or []:
        try:
            found.append((dict(result.get("metric") or {}), float(result["value"][1])))
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return found


def gateway_rates(api: JsonApi) -> dict[str, float]:
    """Requests and tokens per second, requests waiting, and the cache's hit rate; a figure
    Prometheus has no data for (no traffic yet) is left out."""
    rates = {}
    for name, query in GATEWAY_RATES.items():
        for _, value in instant(api, query):
            if value == value:  # not NaN (0/0 when nothing was looked up)
                rates[name] = value
    return rates


# The serving workers' GPUs over the last minute (the autoscaler's GPU signals): their
# mean utilisation, and the highest share of one GPU's memory in use.
GPU_LOAD = {
    "utilization": "avg(avg_over_time(nvidia_smi_utilization_gpu_ratio{{instance=~{hosts}}}[1m]))",
    "memory": "max(max_over_time(nvidia_smi_memory_used_bytes{{instance=~{hosts}}}[1m])"
    " / max_over_time(nvidia_smi_memory_total_bytes{{instance=~{hosts}}}[1m]))",
}


def gpu_load(api: JsonApi, hosts: list[str]) -> tuple[float, float]:
    """The GPU load of ``hosts`` (inventory names, Prometheus' instance label) over the
    last minute: (mean utilisation, fullest memory), 0 to 1. Raises UsageError when
    Prometheus has no such sample: the hosts' GPU exporters are not scraped, or their
    samples are older than a minute."""
    if not hosts or not all(HOST_NAME.fullmatch(h) for h in hosts):
        raise UsageError(f"hosts {hosts!r}", "are not host names", "see the inventory")
    pattern = '"' + "|".join(re.escape(h).replace("\\", "\\\\") for h in sorted(hosts)) + '"'
    figures = []
    for name, template in GPU_LOAD.items():
        found = [v for _, v in instant(api, template.format(hosts=pattern)) if v == v]
        if not found:
            raise UsageError(
                "Prometheus",
                f"has no GPU {name} of {', '.join(sorted(hosts))} from the last minute",
                "check that their gpu exporters are up (clusterai status), or set "
                "autoscale_target_gpu_utilization and autoscale_target_gpu_memory to 0",
            )
        figures.append(found[0])
    return figures[0], figures[1]
