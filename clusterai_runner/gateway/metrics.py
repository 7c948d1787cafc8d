"""The gateway's Prometheus metrics, in the text exposition format."""

from __future__ import annotations

from collections import Counter
from typing import Any

from clusterai_runner.gateway.fallback import Throughput, on_cpu, vram_share
from clusterai_runner.gateway.pool import Pool

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _labels(**values: Any) -> str:
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in values.items()
    )
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.duration_buckets: Counter[tuple[str, float]] = Counter()
        self.duration_sum: dict[str, float] = {}
        self.duration_count: Counter[str] = Counter()
        self.tokens: Counter[tuple[str, str]] = Counter()

    def observe(
        self, route: str, status: int, seconds: float, prompt: int, completion: int
    ) -> None:
        self.requests[(route, status)] += 1
        self.duration_sum[route] = self.duration_sum.get(route, 0.0) + seconds
        self.duration_count[route] += 1
        for bound in BUCKETS:
            if seconds <= bound:
                self.duration_buckets[(route, bound)] += 1
        self.tokens[(route, "prompt")] += prompt
        self.tokens[(route, "completion")] += completion

    def render(
        self, pool: Pool, cache: tuple[int, int] | None, throughput: Throughput | None = None
    ) -> str:
        lines = [
            "# HELP clusterai_gateway_requests_total Model requests by route and HTTP status.",
            "# TYPE clusterai_gateway_requests_total counter",
        ]
        for (route, status), count in sorted(self.requests.items()):
            lines.append(
                f"clusterai_gateway_requests_total{_labels(route=route, status=status)} {count}"
            )
        lines += [
            "# HELP clusterai_gateway_request_duration_seconds Time to the whole answer.",
            "# TYPE clusterai_gateway_request_duration_seconds histogram",
        ]
        for route in sorted(self.duration_count):
            for bound in BUCKETS:
                count = self.duration_buckets[(route, bound)]
                lines.append(
                    "clusterai_gateway_request_duration_seconds_bucket"
                    f"{_labels(route=route, le=bound)} {count}"
                )
            total = self.duration_count[route]
            lines.append(
                "clusterai_gateway_request_duration_seconds_bucket"
                f"{_labels(route=route, le='+Inf')} {total}"
            )
            lines.append(
                "clusterai_gateway_request_duration_seconds_sum"
                f"{_labels(route=route)} {self.duration_sum[route]}"
            )
            lines.append(
                f"clusterai_gateway_request_duration_seconds_count{_labels(route=route)} {total}"
            )
        lines += [
            "# HELP clusterai_gateway_tokens_total Tokens in answered requests.",
            "# TYPE clusterai_gateway_tokens_total counter",
        ]
        for (route, kind), count in sorted(self.tokens.items()):
            lines.append(f"clusterai_gateway_tokens_total{_labels(route=route, kind=kind)} {count}")
        gauges = {
            "clusterai_gateway_backend_up": ("1 when the backend takes new requests.", "gauge"),
            "clusterai_gateway_backend_outstanding": ("Requests in flight.", "gauge"),
            "clusterai_gateway_backend_requests_total": ("Requests sent.", "counter"),
        }
        for name, (text, kind) in gauges.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for b in pool.backends:
                value = {
                    "clusterai_gateway_backend_up": int(b.healthy and not b.draining),
                    "clusterai_gateway_backend_outstanding": b.outstanding,
                    "clusterai_gateway_backend_requests_total": b.requests,
                }[name]
                lines.append(f"{name}{_labels(backend=b.name)} {value}")
        lines += [
            "# HELP clusterai_gateway_queue_waiting Requests waiting for a backend.",
            "# TYPE clusterai_gateway_queue_waiting gauge",
            f"clusterai_gateway_queue_waiting {pool.waiting}",
            "# HELP clusterai_gateway_queue_wait_p95_seconds 95th percentile of the time"
            " requests of the last minute waited for a backend.",
            "# TYPE clusterai_gateway_queue_wait_p95_seconds gauge",
            f"clusterai_gateway_queue_wait_p95_seconds {pool.queue_wait()[0]}",
            "# HELP clusterai_gateway_wanted_waiting Requests waiting for a model whose"
            " workers are all parked.",
            "# TYPE clusterai_gateway_wanted_waiting gauge",
        ]
        lines += [
            f"clusterai_gateway_wanted_waiting{_labels(model=model)} {count}"
            for model, count in sorted(pool.wanted().items())
        ]
        lines += _fallback(pool, throughput or Throughput())
        if cache is not None:
            lines += [
                "# HELP clusterai_gateway_cache_lookups_total Answer cache lookups by result.",
                "# TYPE clusterai_gateway_cache_lookups_total counter",
                f'clusterai_gateway_cache_lookups_total{{result="hit"}} {cache[0]}',
                f'clusterai_gateway_cache_lookups_total{{result="miss"}} {cache[1]}',
            ]
        return "\n".join(lines) + "\n"


def _fallback(pool: Pool, throughput: Throughput) -> list[str]:
    """GPU fallback (fallback.py): each loaded model's share in GPU memory and whether it
    is flagged on the CPU (Ollama backends, which say); each backend's and model's tokens
    per second, recent and baseline, and whether it dropped."""
    lines = [
        "# HELP clusterai_gateway_model_vram_share Share of a loaded model in GPU memory.",
        "# TYPE clusterai_gateway_model_vram_share gauge",
    ]
    flagged = {(f.backend, f.model) for b in pool.backends for f in on_cpu(b)}
    shown = []
    for b in pool.backends:
        for model, entry in sorted(b.running.items()):
            share = vram_share(entry)
            if share is not None:
                shown.append((b.name, model))
                lines.append(f"clusterai_gateway_model_vram_share"
                             f"{_labels(backend=b.name, model=model)} {share:.4f}")  # fmt: skip
    lines += [
        "# HELP clusterai_gateway_model_on_cpu 1 when a loaded model is partly or wholly"
        " in system memory where it should be on a GPU.",
        "# TYPE clusterai_gateway_model_on_cpu gauge",
    ]
    lines += [
        f"clusterai_gateway_model_on_cpu{_labels(backend=b, model=m)} {int((b, m) in flagged)}"
        for b, m in shown
    ]
    lines += [
        "# HELP clusterai_gateway_tokens_per_second Median generation speed of a backend and"
        " model: over the recent window, and the baseline before it.",
        "# TYPE clusterai_gateway_tokens_per_second gauge",
    ]
    dropped = {(f.backend, f.model) for f in throughput.drops()}
    tracked = sorted(throughput.samples)
    for backend, model in tracked:
        rates = throughput.rates(backend, model)
        for window, rate in (("recent", rates.recent), ("baseline", rates.baseline)):
            if rate is not None:
                labels = _labels(backend=backend, model=model, window=window)
                lines.append(f"clusterai_gateway_tokens_per_second{labels} {rate:.3f}")
    lines += [
        "# HELP clusterai_gateway_throughput_drop 1 when a backend's recent speed for a model"
        " is under the configured share of its baseline.",
        "# TYPE clusterai_gateway_throughput_drop gauge",
    ]
    lines += [
        f"clusterai_gateway_throughput_drop{_labels(backend=b, model=m)} {int((b, m) in dropped)}"
        for b, m in tracked
    ]
    return lines
