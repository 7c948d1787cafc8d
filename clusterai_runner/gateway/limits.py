"""Per-key limits: requests and tokens per minute, over a sliding minute.

One gateway counts in its own memory (``Limiter``). Replicas that share a Redis
(``cache.redis_url``) count there together (``SharedLimiter``), so a key's limit holds for
the cluster, not once per replica: per key, one hash of counters by second (``r:<s>``
requests, ``t:<s>`` tokens), read, trimmed to the last 60 seconds and added to by a script
that Redis runs atomically, on Redis's clock (the replicas' clocks do not matter). A
request is admitted or not by one round trip before it goes to a backend; its tokens are
added when it ends.

Redis is never waited on for long: short timeouts through the asyncio client, and after a
failure each replica counts alone, in memory, for ``RETRY_S`` (saying so in its log), then
tries Redis again. An outage loosens the limit to once per replica; it never fails a
request.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from clusterai_runner.store import ApiKey

log = logging.getLogger("clusterai.gateway")

WINDOW_S = 60


@dataclass
class Window:
    """What one key did in the last minute."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)

    def trim(self, now: float) -> None:
        while self.requests and self.requests[0] <= now - WINDOW_S:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW_S:
            self.tokens.popleft()


def reached(key: ApiKey, requests: int, tokens: int) -> str | None:
    """Which of the key's limits these counts of the last minute reach, if any."""
    if key.rpm is not None and requests >= key.rpm:
        return f"{key.rpm} requests per minute"
    if key.tpm is not None and tokens >= key.tpm:
        return f"{key.tpm} tokens per minute"
    return None


class Limiter:
    """The limits counted in this process's memory."""

    def __init__(self) -> None:
        self.windows: dict[int, Window] = {}

    async def admit(self, key: ApiKey) -> str | None:
        """None when the key may send a request now (it is counted), else which limit it
        reached."""
        now = time.monotonic()
        window = self.windows.setdefault(key.id, Window())
        window.trim(now)
        limit = reached(key, len(window.requests), sum(n for _, n in window.tokens))
        if limit is None:
            window.requests.append(now)
        return limit

    async def spent(self, key: ApiKey, tokens: int) -> None:
        if tokens:
            self.windows.setdefault(key.id, Window()).tokens.append((time.monotonic(), tokens))

    async def close(self) -> None:
        pass


# KEYS[1]: the key's hash. ARGV: requests per minute, tokens per minute (-1: no limit),
# the window's seconds. Returns {requests, tokens} of the last minute; the request is
# counted when both are under their limits.
_ADMIT = """
local now = tonumber(redis.call('TIME')[1])
local counts = {r = 0, t = 0}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local kind, second = string.sub(fields[i], 1, 1), tonumber(string.sub(fields[i], 3))
  if second == nil or second <= now - tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    counts[kind] = (counts[kind] or 0) + tonumber(fields[i + 1])
  end
end
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if (rpm < 0 or counts.r < rpm) and (tpm < 0 or counts.t < tpm) then
  redis.call('HINCRBY', KEYS[1], 'r:' .. now, 1)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]) + 1)
end
return {counts.r, counts.t}
"""

# KEYS[1]: the key's hash. ARGV: tokens the key's request spent, the window's seconds.
_SPENT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('HINCRBY', KEYS[1], 't:' .. now, tonumber(ARGV[1]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1)
return 0
"""


class SharedLimiter:
    """The limits counted in Redis, together with every replica that uses it."""

    PREFIX = "clusterai:limits:"
    RETRY_S = 5.0
    TIMEOUT_S = 0.5

    def __init__(self, url: str) -> None:
        import redis
        import redis.asyncio

        self._redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=self.TIMEOUT_S, socket_connect_timeout=self.TIMEOUT_S
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._spent = self._redis.register_script(_SPENT)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)
        self._down_until = 0.0
        self.local = Limiter()  # while Redis cannot be reached

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, doing: str, exc: BaseException) -> None:
        if self._usable():
            log.warning(
                "the Redis of the shared key limits is unreachable (%s: %s); this replica"
                " counts alone for %.0f s",
                doing, type(exc).__name__, self.RETRY_S,
            )  # fmt: skip
        self._down_until = time.monotonic() + self.RETRY_S

    async def admit(self, key: ApiKey) -> str | None:
        if key.rpm is None and key.tpm is None:
            return None
        if self._usable():
            limits = [-1 if n is None else n for n in (key.rpm, key.tpm)] + [WINDOW_S]
            try:
                counts: Any = await self._admit(keys=[f"{self.PREFIX}{key.id}"], args=limits)
                return reached(key, int(counts[0]), int(counts[1]))
            except self._errors as exc:
                self._failed("admitting a request", exc)
        return await self.local.admit(key)

    async def spent(self, key: ApiKey, tokens: int) -> None:
        if not tokens or (key.rpm is None and key.tpm is None):
            return
        if self._usable():
            try:
                await self._spent(keys=[f"{self.PREFIX}{key.id}"], args=[tokens, WINDOW_S])
                return
            except self._errors as exc:
                self._failed("counting tokens", exc)
        await self.local.spent(key, tokens)

    async def close(self) -> None:
        await self._redis.aclose()
