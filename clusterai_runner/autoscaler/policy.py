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
3. Pressure (queue wait p95 above its target, requests in flight per serving worker
   above theirs, or, when they are set, the serving workers' GPU utilisation or memory
   above theirs) that has lasted ``scale_out_delay_s``: the first pool in the growth
   order with room and a host to start gets one. The growth order weighs what each pool
   costs and how long its workers take to start (measured from its past scale-outs, else
   its configured ``start_s``) against the burst: a burst is expected to go on about as
   long as it has lasted so far, so a pool whose workers would be ready only after that
   is late. Pools of workers in time come first, the cheapest first (ties in priority
   order); then the hosted pools (the gateway's providers, paid per request and ready at
   once); then the late pools in priority order (and those slower than ``slow_start_s``).
   A burst that has lasted longer than a pool's start time while a hosted pool carries
   it starts one of that pool's workers (not dearer than the provider) to take over.
4. Quiet (nothing waiting, queue wait p95 under a tenth of its target, GPUs under a third
   of theirs, and the workers left after one goes would carry what is in flight at half
   their target) that has lasted ``idle_s``: a hosted pool above its ``min`` first, then
   the dearest pool of workers above its ``min`` (ties: the last in priority order) gives
   one back, unless that would leave no worker serving and the pool may not scale to zero.

A cloud pool has no parked hosts: a scale-out launches a new instance (the action's host
is empty) when the cloud's caps leave room (``PoolState.launchable``), and a scale-in
terminates one after its drain.

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
    kind: Literal["standby", "desktop", "cloud", "hosted"]
    group: str  # hosted: none (its backends are the gateway's providers)
    min: int = 0
    max: int = 1
    hourly_usd: float = 0.0
    # Seconds a worker takes to start until one has been measured (0: not known).
    start_s: float = 0.0
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
    # Cloud: the instance type it launches (empty: cloud_default_instance_type).
    instance_type: str = ""

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
    # A pool whose workers took longer than this to start (its mean) is always tried
    # after the hosted pools, however long the burst. 0: only the burst decides.
    slow_start_s: float = 0.0
    # The serving workers' mean GPU utilisation and their fullest GPU's memory (0 to 1)
    # above which there is pressure; 0: not read.
    target_gpu_utilization: float = 0.0
    target_gpu_memory: float = 0.0
    # The healing steps allowed for the gateway's GPU fallback flags, in order (reload,
    # restart, drain; usecases/healing.py), and how long a step has to clear its flag.
    healing: tuple[str, ...] = ()
    healing_wait_s: float = 300.0

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
    # From Prometheus, when its targets are set: the serving workers' mean GPU
    # utilisation and the highest share of a GPU's memory in use (0 to 1; None: no GPU).
    gpu_utilization: float | None = None
    gpu_memory: float | None = None
    # Requests per second over the gateway's window (shown; no rule reads it).
    requests_per_s: float = 0.0


@dataclass(frozen=True)
class PoolState:
    name: str
    active: tuple[str, ...]  # its hosts serving now
    parked: tuple[str, ...]  # its hosts that could be started
    models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # host: what it serves
    # host: why it may not serve now (a desktop outside its windows, or its owner using it)
    unavailable: Mapping[str, str] = field(default_factory=dict)
    start_s: float | None = None  # its workers' mean start time, from past scale-outs
    # Cloud: new instances the caps let it launch now, and why none when 0.
    launchable: int = 0
    capped: str = ""


@dataclass(frozen=True)
class Memory:
    """What one evaluation leaves for the next (seconds since the epoch)."""

    pressure_since: float | None = None
    quiet_since: float | None = None
    last_action_at: float | None = None
    # When the load last rose above the targets, kept across actions until it is quiet:
    # how long the burst has lasted.
    burst_since: float | None = None
    # host -> (failed starts in a row, not before)
    failures: Mapping[str, tuple[int, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "pressure_since": self.pressure_since,
            "quiet_since": self.quiet_since,
            "last_action_at": self.last_action_at,
            "burst_since": self.burst_since,
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
        return cls(
            stamp("pressure_since"),
            stamp("quiet_since"),
            stamp("last_action_at"),
            stamp("burst_since"),
            failures,
        )


@dataclass(frozen=True)
class Action:
    kind: Literal["scale-out", "scale-in"]
    pool: str
    host: str  # empty: a new cloud instance

    @property
    def key(self) -> str:
        """What a failed start's backoff is kept under: the host, or a cloud pool."""
        return self.host or f"pool:{self.pool}"


@dataclass(frozen=True)
class Decision:
    action: Action | None
    reason: str
    memory: Memory
    mins: Mapping[str, int]  # each pool's min in force


def _pressure(signals: Signals, config: AutoscaleConfig) -> str | None:
    """Every signal above its target, in one line; None when none is."""
    above: list[str] = []
    if signals.queue_wait_p95_s > config.target_queue_wait_s:
        above.append(
            f"queue wait p95 {signals.queue_wait_p95_s:.2f} s above the target "
            f"{config.target_queue_wait_s:g} s"
        )
    per_worker = signals.in_flight / max(signals.serving, 1)
    if signals.in_flight and per_worker > config.target_in_flight:
        above.append(
            f"{per_worker:.1f} requests in flight per worker, above the target "
            f"{config.target_in_flight:g}"
        )
    used = signals.gpu_utilization
    if config.target_gpu_utilization and used is not None and used > config.target_gpu_utilization:
        above.append(
            f"GPU utilisation {used:.0%} above the target {config.target_gpu_utilization:.0%}"
        )
    full = signals.gpu_memory
    if config.target_gpu_memory and full is not None and full > config.target_gpu_memory:
        above.append(
            f"GPU memory {full:.0%} in use, above the target {config.target_gpu_memory:.0%}"
        )
    return "; ".join(above) or None


def _quiet(signals: Signals, config: AutoscaleConfig) -> bool:
    # Every request waits a little (microseconds to pick a backend): a tenth of the target
    # counts as none.
    if signals.waiting or signals.queue_wait_p95_s > config.target_queue_wait_s / 10:
        return False
    for figure, target in (
        (signals.gpu_utilization, config.target_gpu_utilization),
        (signals.gpu_memory, config.target_gpu_memory),
    ):
        if target and figure is not None and figure > target / 3:
            return False
    remaining = max(signals.serving - 1, 0)
    return signals.in_flight <= remaining * config.target_in_flight / 2


def _startable(pool: PoolConfig, state: PoolState, memory: Memory, now: float) -> list[str]:
    """The pool's parked hosts that may serve and whose backoff is over, those that never
    failed first; a cloud pool's one new instance ("") when its caps and backoff allow."""
    if pool.kind == "cloud":
        wait = memory.failures.get(Action("scale-out", pool.name, "").key, (0, 0.0))[1]
        return [""] if state.launchable > 0 and wait <= now else []
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

    def act(
        kind: Literal["scale-out", "scale-in"],
        pool: str,
        host: str,
        why: str,
        base: Memory = memory,
    ) -> Decision:
        kept = replace(base, pressure_since=None, quiet_since=None, last_action_at=clock)
        return Decision(Action(kind, pool, host), why, kept, mins)

    if signals is None:
        return hold(
            "holding: the signals could not be read",
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
                h
                for h in _startable(pool, state, memory, clock)
                if model in state.models.get(h, ())
            ]
            if hosts:
                why = f"a request waits for {model}, which only parked workers serve"
                return act("scale-out", pool.name, hosts[0], why)

    # 3. Bounds.
    for pool in config.pools:
        state = states.get(pool.name, PoolState(pool.name, (), ()))
        floor = mins[pool.name]
        if len(state.active) < floor:
            hosts = _startable(pool, state, memory, clock)
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
    # The burst starts with the first pressure and ends only when it is quiet: load
    # within the targets after an action (a provider on, a worker started) goes on with it.
    burst_since = memory.burst_since
    if quiet:
        burst_since = None
    elif pressure:
        burst_since = burst_since or clock
    since = replace(
        memory,
        pressure_since=(memory.pressure_since or clock) if pressure else None,
        quiet_since=(memory.quiet_since or clock) if quiet else None,
        burst_since=burst_since,
    )
    burst = clock - since.burst_since if since.burst_since is not None else 0.0
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
        ready = []  # (pool, why it is late, the host to start), in the growth order
        for pool, late in _growth_order(config, states, burst):
            state = states.get(pool.name, PoolState(pool.name, (), ()))
            hosts = _startable(pool, state, memory, clock)
            if len(state.active) < pool.max and hosts:
                ready.append((pool, late, hosts[0]))
        if ready:
            pool, _late, host = ready[0]
            why = f"{pressure}, for {lasted:.0f} s"
            passed = [late for p, late, _h in ready[1:] if late and p.kind != "hosted"]
            if pool.kind == "hosted" and passed:
                why += f"; the hosted tier first: {'; '.join(passed)}"
            return act("scale-out", pool.name, host, why, since)
        return hold(f"{pressure}; every pool is at its max or has no host to start", since)

    # 5. Taking over from the providers: a hosted pool has carried a burst for longer
    # than a pool's workers take to start; one of them (not dearer) takes over.
    if not quiet and since.burst_since is not None and not cooling:
        carrying = [
            p
            for p in config.pools
            if p.kind == "hosted"
            and len(states.get(p.name, PoolState(p.name, (), ())).active) > mins[p.name]
        ]
        if carrying:
            price = max(p.hourly_usd for p in carrying)
            for pool, late in _growth_order(config, states, burst):
                state = states.get(pool.name, PoolState(pool.name, (), ()))
                if pool.kind == "hosted" or late or pool.hourly_usd > price:
                    continue
                if len(state.active) >= pool.max:
                    continue
                hosts = _startable(pool, state, memory, clock)
                if hosts:
                    start = _start_s(pool, state)
                    took = f"{start:.0f} s" if start is not None else "an unmeasured time"
                    why = (
                        f"{carrying[0].name} has carried a burst for {burst:.0f} s, longer "
                        f"than {pool.name}'s workers take to start ({took}): one takes over"
                    )
                    return act("scale-out", pool.name, hosts[0], why, since)

    # 6. Quiet.
    if quiet:
        lasted = clock - (since.quiet_since or clock)
        if lasted < config.idle_s:
            return hold(f"quiet for {lasted:.0f} s of {config.idle_s:g} s", since)
        if cooling:
            return hold("quiet; cooling down after the last action", since)
        hosted = [p for p in config.pools if p.kind == "hosted"]
        workers = sorted(
            (p for p in reversed(config.pools) if p.kind != "hosted"), key=lambda p: -p.hourly_usd
        )  # the dearest first; among equal prices the last in priority order
        for pool in [*hosted, *workers]:
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
            return act("scale-in", pool.name, host, f"quiet for {lasted:.0f} s", since)
        return hold(f"quiet for {lasted:.0f} s; every pool is at its min", since)
    return hold("load within the targets", since)


def _start_s(pool: PoolConfig, state: PoolState | None) -> float | None:
    """How long the pool's workers take to start: measured, else configured, else None."""
    if state is not None and state.start_s is not None:
        return state.start_s
    return pool.start_s or None


def _growth_order(
    config: AutoscaleConfig, states: Mapping[str, PoolState], burst: float
) -> list[tuple[PoolConfig, str]]:
    """Where pressure adds capacity, each pool with why it is late ("": in time). A burst
    is expected to last about as long again as it has (``burst`` seconds): the pools of
    workers that start within that, the cheapest first (ties in priority order); then the
    hosted pools; then the late pools (slower than the burst so far, or than
    ``slow_start_s``) in priority order."""

    def late(pool: PoolConfig) -> str:
        start = _start_s(pool, states.get(pool.name))
        if start is None:
            return ""
        if config.slow_start_s and start > config.slow_start_s:
            return f"{pool.name}'s workers take {start:.0f} s, over slow_start_s"
        if start > burst:
            return f"{pool.name}'s workers take {start:.0f} s, the burst has lasted {burst:.0f} s"
        return ""

    workers = [(p, late(p)) for p in config.pools if p.kind != "hosted"]
    in_time = sorted(
        (w for w in workers if not w[1]), key=lambda w: w[0].hourly_usd
    )  # stable: priority order among equal prices
    hosted = [(p, "") for p in config.pools if p.kind == "hosted"]
    return [*in_time, *hosted, *(w for w in workers if w[1])]


def after_start(memory: Memory, host: str, succeeded: bool, now: float, backoff_s: float) -> Memory:
    """The memory after a scale-out of ``host`` (an ``Action.key``) ended: a failure keeps
    the host (a cloud pool) out of the choice for ``backoff_s`` doubled on each failure in
    a row (an hour at most)."""
    failures = dict(memory.failures)
    if succeeded:
        failures.pop(host, None)
    else:
        count = failures.get(host, (0, 0.0))[0] + 1
        failures[host] = (count, now + min(backoff_s * 2 ** (count - 1), MAX_BACKOFF_S))
    return replace(memory, failures=failures)
