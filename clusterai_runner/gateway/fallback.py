"""GPU fallback detection: models that sit in system memory where they should be on a
GPU, and throughput that dropped.

- ``model_on_cpu``: an Ollama backend's ``/api/ps`` gives each loaded model's ``size``
  and ``size_vram``. A model with part of itself out of GPU memory (``0 < size_vram <
  size``), or wholly out of it on a backend the configuration marks ``gpu: true``, is
  flagged: it runs on the CPU, slowly, and says nothing of it.
- ``throughput_drop``: for every backend, API and model, completion tokens per second of
  the generation (a request's time less its time to first token) of each answered,
  uncached request of at least ``MIN_TOKENS`` tokens. The median of the last
  ``recent_s`` against the median of the samples before it (up to ``baseline_s`` back):
  under ``drop_below`` times the baseline, with ``min_samples`` on each side, is
  flagged. A CPU-throttled or thermally limited server, or a model that moved to the
  CPU, shows here whatever its API says. The gateway's usage records in the store seed
  the baseline at start, so a restart does not forget it.

The flags are in ``/admin/backends`` (each backend's ``flags``) and the metrics
(``clusterai_gateway_model_on_cpu``, ``clusterai_gateway_throughput_drop`` and the figures
behind them); the Prometheus role's ``ModelOnCpu`` and ``ThroughputDrop`` alerts fire on
them, and the autoscaler's healing acts on them where the operator allows it.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clusterai_runner.gateway.pool import Backend, Pool

# Shorter answers say more about the prompt's processing than about generation speed.
MIN_TOKENS = 8
# Samples kept per backend and model, the oldest dropped first.
MAX_SAMPLES = 5000


@dataclass(frozen=True)
class Flag:
    kind: str  # model_on_cpu, throughput_drop
    backend: str
    model: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "model": self.model, "detail": self.detail}


def on_cpu(backend: Backend) -> list[Flag]:
    """The models an Ollama backend holds partly or wholly outside GPU memory."""
    found = []
    for model, entry in sorted(backend.running.items()):
        size, vram = entry.get("size"), entry.get("size_vram")
        if not isinstance(size, int) or not isinstance(vram, int) or size <= 0 or vram >= size:
            continue
        if vram == 0 and not backend.config.gpu:
            continue  # a backend without GPUs holds every model in system memory
        share = 1 - vram / size
        detail = f"{share:.0%} of {size / 1e9:.1f} GB in system memory, not on the GPU"
        found.append(Flag("model_on_cpu", backend.name, model, detail))
    return found


def vram_share(entry: dict[str, Any]) -> float | None:
    size, vram = entry.get("size"), entry.get("size_vram")
    if not isinstance(size, int) or not isinstance(vram, int) or size <= 0:
        return None
    return min(vram / size, 1.0)


@dataclass(frozen=True)
class Rates:
    recent: float | None
    baseline: float | None
    recent_samples: int
    baseline_samples: int


class Throughput:
    """Tokens per second per backend and model, and its drops."""

    def __init__(
        self,
        drop_below: float = 0.5,
        recent_s: float = 300.0,
        baseline_s: float = 86400.0,
        min_samples: int = 5,
    ) -> None:
        self.drop_below = drop_below
        self.recent_s = recent_s
        self.baseline_s = baseline_s
        self.min_samples = min_samples
        self.samples: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def observe(
        self, backend: str, model: str, tokens: int, seconds: float, at: float | None = None
    ) -> bool:
        """One answered request: ``tokens`` generated in ``seconds`` (its time to first
        token left out). ``at``: when, on ``time.time()``'s clock (default now). Whether
        it is a sample (long enough an answer to time)."""
        if tokens < MIN_TOKENS or seconds <= 0 or not backend or not model:
            return False
        kept = self.samples.setdefault((backend, model), deque(maxlen=MAX_SAMPLES))
        kept.append((time.time() if at is None else at, tokens / seconds))
        return True

    def seed(self, records: list[dict[str, Any]]) -> int:
        """Samples from the store's usage records (any order); returns how many it took."""
        since = time.time() - self.baseline_s
        taken = []
        for r in records:
            try:
                at = datetime.fromisoformat(str(r["at"])).timestamp()
            except (KeyError, ValueError):
                continue
            if at < since or r.get("status") != 200 or r.get("cache_hit"):
                continue
            seconds = (float(r.get("latency_ms") or 0) - float(r.get("ttft_ms") or 0)) / 1000
            taken.append((at, str(r.get("backend") or ""), str(r.get("model") or ""),
                          int(r.get("completion_tokens") or 0), seconds))  # fmt: skip
        return sum(
            self.observe(b, m, tokens, seconds, at) for at, b, m, tokens, seconds in sorted(taken)
        )

    def rates(self, backend: str, model: str) -> Rates:
        now = time.time()
        kept = self.samples.get((backend, model)) or deque()
        while kept and kept[0][0] < now - self.baseline_s:
            kept.popleft()
        recent = [rate for at, rate in kept if at >= now - self.recent_s]
        before = [rate for at, rate in kept if at < now - self.recent_s]
        return Rates(
            statistics.median(recent) if recent else None,
            statistics.median(before) if before else None,
            len(recent),
            len(before),
        )

    def drops(self) -> list[Flag]:
        found = []
        for backend, model in sorted(self.samples):
            rates = self.rates(backend, model)
            enough = min(rates.recent_samples, rates.baseline_samples) >= self.min_samples
            if not enough or rates.recent is None or not rates.baseline:
                continue
            if rates.recent < self.drop_below * rates.baseline:
                detail = (f"{rates.recent:.1f} tokens/s over the last {self.recent_s:.0f} s,"
                          f" against {rates.baseline:.1f} before"
                          f" (under {self.drop_below:.0%} of it)")  # fmt: skip
                found.append(Flag("throughput_drop", backend, model, detail))
        return found


def flags(pool: Pool, throughput: Throughput) -> dict[str, list[Flag]]:
    """Every flag now, by backend name."""
    found: dict[str, list[Flag]] = {b.name: on_cpu(b) for b in pool.backends}
    for flag in throughput.drops():
        found.setdefault(flag.backend, []).append(flag)
    return found
