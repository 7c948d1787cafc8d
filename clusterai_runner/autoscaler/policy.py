"""The autoscaler's policy: one pure function from what it sees to what it does.

``decide(signals, pools, now, config, memory)`` looks at one snapshot of the gateway's load,
the pools' hosts, the wall clock and what it remembers from earlier evaluations, and
returns at most one action with its reason, and the memory for the next evaluation.
Nothing here reads a clock, a network or the store, so every rule is tested with recorded
traces and a fake clock (tests/unit/test_autoscale_policy.py).

The rules, in the order they are tried:

1. Signals missing or older than ``stale_s``: hold. Never act on what is not known.
   A desktop serving that may not now (outside its availability windows, or its owner
   using it) is drained and stopped at once.
   A request waits for a model that only parked workers serve (the gateway's ``wanted``):
   the first pool in priority order with room and a parked host serving it starts one, at
   once (scale to zero, and waking).
2. A pool below its ``min`` (a schedule may raise it; a desktop pool's is at least its
   desktops that may serve, so they come back when their window opens or their owner
   leaves) gets a worker; one above its ``max``
   gives one back. Bounds do not wait for delays or the cooldown.
3. Pressure (queue wait p95 above its target, or requests in flight per serving worker
   above theirs) that has lasted ``scale_out_delay_s``: the first pool in priority order
   with room and a host to start gets one.
   Hosted pools (the gateway's providers) come after every pool of workers, except those
   whose workers start slower than ``slow_start_s``, which come last.
4. Quiet (nothing waiting, queue wait p95 under a tenth of its target, and the workers
   left after one goes would carry what is in flight at half their target) that has
   lasted ``idle_s``: a hosted pool above its ``min`` first, then the last pool in priority
   order above its ``min`` gives one back,
   unless that would leave no worker serving and the pool may not scale to zero.

Pressure and quiet are far apart (hysteresis) and each action starts a ``cooldown_s`` and
both timers again, so a load that hovers around a threshold cannot make the cluster flap.
A host whose start failed waits ``backoff_s`` (doubled on each failure, an hour at most)
before it is chosen again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time
from typing import Literal

MAX_BACKOFF_S = 3600.0
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """A weekly window (local time) in which a pool's ``min`` is ``min``: days of the week
    (0 is Monday), from ``start`` to ``end``; an ``end`` before ``start`` runs past
    midnight into the next day."""

    days: frozenset[int]
    start: time
    end: time
    min: int
    text: str = ""  # as written, for reasons

    def covers(self, when: datetime) -> bool:
        moment = when.time().replace(tzinfo=None)
        day = when.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= moment < self.end
        # Past midnight: the evening of a listed day, or the morning after one.
        return (day in self.days and moment >= self.start) or (
            (day - 1) % 7 in self.days and moment < self.end
        )


@dataclass(frozen=True)
class PoolConfig:
    name: str
    kind: Literal["standby", "desktop", "hosted"]
    group: str  # hosted: none (its backends are the gateway's providers)
    min: int = 0
    max: int = 1
    hourly_usd: float = 0.0
    scale_to_zero: bool = False
    windows: tuple[Window, ...] = ()  # schedules: a different min in weekly windows
    # Desktops: when its hosts may serve (none: always; a host's desktop_windows replace
    # them), in which time zone (empty: the controller's), and where Wake-on-LAN's magic
    # packet goes.
    available: tuple[Window, ...] = ()
    timezone: str = ""
    wol_address: str = "255.255.255.255"
    wol_port: int = 9
    # Hosted: the gateway's fallback backends (providers) it turns on and off.
    backends: tuple[str, ...] = ()

    def min_at(self, when: datetime) -> tuple[int, Window | None]:
        """The ``min`` in force at ``when`` and the window that sets it (None: the pool's)."""
        covering = [w for w in self.windows if w.covers(when)]
        if not covering:
            return self.min, None
        window = max(covering, key=lambda w: w.min)
        return min(max(self.min, window.min), self.max), window


@dataclass(frozen=True)
class AutoscaleConfig:
    pools: tuple[PoolConfig, ...]
    interval_s: float = 15.0
    target_queue_wait_s: float = 2.0
    target_in_flight: float = 4.0
    scale_out_delay_s: float = 15.0
    idle_s: float = 300.0
    cooldown_s: float = 60.0
    stale_s: float = 60.0
    backoff_s: float = 60.0
    # A pool whose workers took longer than this to start (its mean) is tried after the
    # hosted pools: a burst is over before it is ready. 0: none is too slow.
    slow_start_s: float = 0.0

    def pool(self, name: str) -> PoolConfig:
        return next(p for p in self.pools if p.name == name)


@dataclass(frozen=True)
class Signals:
    """The gateway's load at ``sampled_at`` (seconds since the epoch)."""

    sampled_at: float
    queue_wait_p95_s: float  # over the gateway's recent window; 0 when nothing waited
    waiting: int  # requests in the queue now
    in_flight: int  # requests being answered now, over every backend
    serving: int  # workers taking requests (healthy, not draining)
    # Models asked for lately that only parked workers serve (the gateway holds them).
    wanted: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolState:
    name: str
    active: tuple[str, ...]  # its hosts serving now
    parked: tuple[str, ...]  # its hosts that could be started
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # host: what it serves
    # host: why it may not serve now (a desktop outside its windows, or its owner using it)
    unavailable: Mapping[str, str] = field(default_factory=dict)
    start_s: float | None = None  # its workers' mean start time, from past scale-outs


@dataclass(frozen=True)
class Memory:
    """What one evaluation leaves for the next (seconds since the epoch)."""

    pressure_since: float | None = None
    quiet_since: float | None = None
    last_action_at: float | None = None
    # host -> (failed starts in a row, not before)
    failures: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "pressure_since": self.pressure_since,
            "quiet_since": self.quiet_since,
            "last_action_at": self.last_action_at,
            "failures": {h: list(f) for h, f in sorted(self.failures.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Memory:
        def stamp(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        failures: dict[str, tuple[int, float]] = {}
        raw = data.get("failures")
        if isinstance(raw, dict):
            for host, entry in raw.items():
                if isinstance(entry, list) and len(entry) == 2:
                    failures[str(host)] = (int(entry[0]), float(entry[1]))
        return cls(stamp("pressure_since"), stamp("quiet_since"), stamp("last_action_at"), failures)


@dataclass(frozen=True)
class Action:
    kind: Literal["scale-out", "scale-in"]
    pool: str
    host: str


@dataclass(frozen=True)
class Decision:
    action: Action | None
    reason: str
    memory: Memory
    mins: Mapping[str, int]  # each pool's min in force


def _pressure(signals: Signals, config: AutoscaleConfig) -> str | None:
    if signals.queue_wait_p95_s > config.target_queue_wait_s:
        return (
            f"queue wait p95 {signals.queue_wait_p95_s:.2f} s above the target "
            f"{config.target_queue_wait_s:g} s"
        )
    per_worker = signals.in_flight / max(signals.serving, 1)
    if signals.in_flight and per_worker > config.target_in_flight:
        return (
            f"{per_worker:.1f} requests in flight per worker, above the target "
            f"{config.target_in_flight:g}"
        )
    return None


def _quiet(signals: Signals, config: AutoscaleConfig) -> bool:
    # Every request waits a little (microseconds to pick a backend): a tenth of the target
    # counts as none.
    if signals.waiting or signals.queue_wait_p95_s > config.target_queue_wait_s / 10:
        return False
    remaining = max(signals.serving - 1, 0)
    return signals.in_flight <= remaining * config.target_in_flight / 2


def _startable(state: PoolState, memory: Memory, now: float) -> list[str]:
    """The pool's parked hosts that may serve and whose backoff is over, those that never
    failed first."""
    ready = [
        h
        for h in state.parked
        if memory.failures.get(h, (0, 0.0))[1] <= now and h not in state.unavailable
    ]
    return sorted(ready, key=lambda h: memory.failures.get(h, (0, 0.0))[0])


def decide(
    signals: Signals | None,
    pools: Sequence[PoolState],
    now: datetime,
    config: AutoscaleConfig,
    memory: Memory,
) -> Decision:
    """At most one action, its reason, and the memory for the next evaluation. ``pools``
    are in ``config``'s priority order; ``now`` is an aware datetime (schedules read
    its local time)."""
    clock = now.timestamp()
    states = {s.name: s for s in pools}
    mins: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for pool in config.pools:
        floor, window = pool.min_at(now)
        mins[pool.name] = floor
        reasons[pool.name] = f"schedule {window.text}" if window is not None else "min"
        state = states.get(pool.name)
        if pool.kind == "desktop" and state is not None:
            # Desktops serve whenever they may: each available one counts toward min.
            free = [h for h in (*state.active, *state.parked) if h not in state.unavailable]
            if min(len(free), pool.max) > floor:
                mins[pool.name] = min(len(free), pool.max)
                reasons[pool.name] = "desktops available"

    def hold(reason: str, kept: Memory) -> Decision:
        return Decision(None, reason, kept, mins)

    def act(kind: Literal["scale-out", "scale-in"], pool: str, host: str, why: str) -> Decision:
        kept = replace(memory, pressure_since=None, quiet_since=None, last_action_at=clock)
        return Decision(Action(kind, pool, host), why, kept, mins)

    if signals is None:
        return hold(
            "holding: no signals from the gateway",
            replace(memory, pressure_since=None, quiet_since=None),
        )
    age = clock - signals.sampled_at
    if age > config.stale_s:
        return hold(
            f"holding: the gateway's signals are {age:.0f} s old "
            f"(stale after {config.stale_s:g} s)",
            replace(memory, pressure_since=None, quiet_since=None),
        )

    # 1. The owners first: a desktop that may not serve now (outside its windows, its
    # owner at it) is drained and stopped at once, whatever the load.
    for pool in config.pools:
        state = states.get(pool.name, PoolState(pool.name, (), ()))
        for host in state.active:
            if host in state.unavailable:
                return act("scale-in", pool.name, host, f"{host}: {state.unavailable[host]}")

    # 2. Waking: a request waits for a model only parked workers serve.
    for model in signals.wanted:
        for pool in config.pools:
            state = states.get(pool.name, PoolState(pool.name, (), ()))
            if len(state.active) >= pool.max:
                continue
            hosts = [
                h for h in _startable(state, memory, clock) if model in state.models.get(h, ())
            ]
            if hosts:
                why = f"a request waits for {model}, which only parked workers serve"
                return act("scale-out", pool.name, hosts[0], why)

    # 3. Bounds.
    for pool in config.pools:
        state = states.get(pool.name, PoolState(pool.name, (), ()))
        floor = mins[pool.name]
        if len(state.active) < floor:
            hosts = _startable(state, memory, clock)
            if hosts:
                why = (
                    f"{pool.name}: {len(state.active)} serving, "
                    f"below its {reasons[pool.name]} {floor}"
                )
                return act("scale-out", pool.name, hosts[0], why)
        if len(state.active) > pool.max:
            why = f"{pool.name}: {len(state.active)} serving, above its max {pool.max}"
            return act("scale-in", pool.name, sorted(state.active)[-1], why)

    pressure = _pressure(signals, config)
    quiet = pressure is None and _quiet(signals, config)
    since = replace(
        memory,
        pressure_since=(memory.pressure_since or clock) if pressure else None,
        quiet_since=(memory.quiet_since or clock) if quiet else None,
    )
    cooling = (
        memory.last_action_at is not None and clock - memory.last_action_at < config.cooldown_s
    )

    # 4. Pressure.
    if pressure is not None:
        lasted = clock - (since.pressure_since or clock)
        if lasted < config.scale_out_delay_s:
            return hold(f"{pressure}, for {lasted:.0f} s of {config.scale_out_delay_s:g} s", since)
        if cooling:
            return hold(f"{pressure}; cooling down after the last action", since)
        for pool in _growth_order(config, states):
            state = states.get(pool.name, PoolState(pool.name, (), ()))
            if len(state.active) >= pool.max:
                continue
            hosts = _startable(state, memory, clock)
            if hosts:
                return act("scale-out", pool.name, hosts[0], f"{pressure}, for {lasted:.0f} s")
        return hold(f"{pressure}; every pool is at its max or has no host to start", since)

    # 5. Quiet.
    if quiet:
        lasted = clock - (since.quiet_since or clock)
        if lasted < config.idle_s:
            return hold(f"quiet for {lasted:.0f} s of {config.idle_s:g} s", since)
        if cooling:
            return hold("quiet; cooling down after the last action", since)
        hosted = [p for p in config.pools if p.kind == "hosted"]
        for pool in [*hosted, *(p for p in reversed(config.pools) if p.kind != "hosted")]:
            state = states.get(pool.name, PoolState(pool.name, (), ()))
            if len(state.active) <= mins[pool.name]:
                continue
            if signals.serving <= 1 and not pool.scale_to_zero and pool.kind != "hosted":
                return hold(
                    f"quiet for {lasted:.0f} s; {pool.name} keeps the last serving worker "
                    "(scale_to_zero is off)",
                    since,
                )
            host = sorted(state.active)[-1]
            return act("scale-in", pool.name, host, f"quiet for {lasted:.0f} s")
        return hold(f"quiet for {lasted:.0f} s; every pool is at its min", since)
    return hold("load within the targets", since)


def _growth_order(config: AutoscaleConfig, states: Mapping[str, PoolState]) -> list[PoolConfig]:
    """Where pressure adds capacity: the pools of workers in priority order, then the
    hosted pools (turned on only when no worker can start, or only slow ones), then the
    pools whose workers start slower than ``slow_start_s``."""

    def slow(pool: PoolConfig) -> bool:
        start = states[pool.name].start_s if pool.name in states else None
        return bool(config.slow_start_s) and start is not None and start > config.slow_start_s

    workers = [p for p in config.pools if p.kind != "hosted"]
    hosted = [p for p in config.pools if p.kind == "hosted"]
    return [*(p for p in workers if not slow(p)), *hosted, *(p for p in workers if slow(p))]


def after_start(memory: Memory, host: str, succeeded: bool, now: float, backoff_s: float) -> Memory:
    """The memory after a scale-out of ``host`` ended: a failure keeps the host out of
    the choice for ``backoff_s`` doubled on each failure in a row (an hour at most)."""
    failures = dict(memory.failures)
    if succeeded:
        failures.pop(host, None)
    else:
        count = failures.get(host, (0, 0.0))[0] + 1
        failures[host] = (count, now + min(backoff_s * 2 ** (count - 1), MAX_BACKOFF_S))
    return replace(memory, failures=failures)
