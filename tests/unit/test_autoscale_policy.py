"""The autoscaler's policy on recorded traces with a fake clock, and its configuration's
checks. A trace is a load over time (requests wanting an answer at once); ``simulate``
turns it into the gateway's signals every evaluation interval, asks the policy, and
applies each action at once to the pools, as the loop would."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from clusterai_runner.autoscaler.config import autoscale_config
from clusterai_runner.autoscaler.policy import (
    Action,
    AutoscaleConfig,
    Memory,
    PoolState,
    Signals,
    after_start,
    decide,
)
from clusterai_runner.errors import UsageError

# A Monday, in UTC (schedules read the local time of the datetime given).
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SLOTS = 8  # requests one worker answers at once (the gateway's max_concurrency)
BASE = 2  # workers outside every pool, always serving


def config(**overrides: Any) -> AutoscaleConfig:
    variables: dict[str, Any] = {
        "autoscale_pools": [{"name": "standby", "kind": "standby", "min": 0, "max": 2}],
        "autoscale_interval_s": 15,
        "autoscale_target_in_flight": 4,
        "autoscale_target_queue_wait_s": 2,
        "autoscale_scale_out_delay_s": 15,
        "autoscale_idle_s": 300,
        "autoscale_cooldown_s": 60,
    }
    variables.update(overrides)
    return autoscale_config(variables, "test")


@dataclass
class Run:
    actions: list[tuple[float, Action, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    serving: list[int] = field(default_factory=list)


def simulate(
    load: Callable[[float], float],
    seconds: float,
    cfg: AutoscaleConfig,
    parked: tuple[str, ...] = ("s1", "s2"),
    signals_ok: Callable[[float], bool] = lambda t: True,
    fails: set[str] | None = None,
) -> Run:
    active: list[str] = []
    waiting_hosts = list(parked)
    memory = Memory()
    run = Run()
    t = 0.0
    while t <= seconds:
        now = START + timedelta(seconds=t)
        serving = BASE + len(active)
        demand = load(t)
        in_flight = min(demand, serving * SLOTS)
        waiting = demand - in_flight
        signals = (
            Signals(now.timestamp(), 3.0 if waiting else 0.0, int(waiting), int(in_flight), serving)
            if signals_ok(t)
            else None
        )
        pools = [PoolState("standby", tuple(active), tuple(waiting_hosts))]
        decision = decide(signals, pools, now, cfg, memory)
        memory = decision.memory
        run.reasons.append(decision.reason)
        action = decision.action
        if action is not None:
            run.actions.append((t, action, decision.reason))
            if action.kind == "scale-out":
                ok = action.host not in (fails or set())
                memory = after_start(memory, action.host, ok, now.timestamp(), cfg.backoff_s)
                if ok:
                    waiting_hosts.remove(action.host)
                    active.append(action.host)
            else:
                active.remove(action.host)
                waiting_hosts.append(action.host)
        run.serving.append(BASE + len(active))
        t += cfg.interval_s
    return run


def test_a_step_up_in_load_scales_out_within_two_evaluation_intervals() -> None:
    cfg = config()
    step = 600.0
    run = simulate(lambda t: 30 if t >= step else 4, 900, cfg)
    first = run.actions[0]
    assert first[1].kind == "scale-out" and first[1].pool == "standby"
    assert step < first[0] <= step + 2 * cfg.interval_s
    assert "queue wait" in first[2] or "in flight" in first[2]


def test_load_gone_scales_in_after_the_idle_time_and_not_before() -> None:
    cfg = config()
    run = simulate(lambda t: 30 if t < 300 else 0, 3600, cfg)
    outs = [a for a in run.actions if a[1].kind == "scale-out"]
    ins = [a for a in run.actions if a[1].kind == "scale-in"]
    assert [a[1].host for a in outs] == ["s1", "s2"]
    assert len(ins) == 2
    # The load went at 300 s: the first scale-in waits the idle time from then.
    assert ins[0][0] >= 300 + cfg.idle_s
    assert ins[0][0] <= 300 + cfg.idle_s + 2 * cfg.interval_s
    # Each scale-in starts the idle time again.
    assert ins[1][0] - ins[0][0] >= cfg.idle_s
    assert run.serving[-1] == BASE
    assert "quiet for" in ins[0][2]


@pytest.mark.parametrize("period_s", [30, 120, 600, 1200, 2400])
def test_a_load_hovering_around_the_threshold_for_an_hour_acts_at_most_twice(
    period_s: int,
) -> None:
    cfg = config()
    threshold = BASE * cfg.target_in_flight  # 8 requests over two workers

    def hovering(t: float) -> float:
        return threshold + (1 if (t // (period_s / 2)) % 2 == 0 else -1)

    run = simulate(hovering, 3600, cfg)
    assert len(run.actions) <= 2, run.actions


def test_a_noisy_load_around_the_threshold_does_not_flap() -> None:
    cfg = config()
    noise = [1, -1, 2, -2, 0, 1, -1, -2, 2, 0, 1, 1, -1, -1, 2, -2]

    def noisy(t: float) -> float:
        return 8 + noise[int(t // cfg.interval_s) % len(noise)]

    run = simulate(noisy, 3600, cfg)
    assert len(run.actions) <= 2, run.actions


def test_schedules_move_min_at_the_window_edges() -> None:
    # From 08:00 to 18:00 on weekdays the standby pool keeps two workers, at night none.
    cfg = config(
        autoscale_pools=[
            {
                "name": "standby",
                "kind": "standby",
                "min": 0,
                "max": 2,
                "schedules": [{"when": "mon-fri 08:00-18:00", "min": 2}],
            }
        ]
    )
    pool = cfg.pool("standby")
    assert pool.min_at(START.replace(hour=7, minute=59))[0] == 0
    assert pool.min_at(START.replace(hour=8))[0] == 2
    assert pool.min_at(START.replace(hour=17, minute=59))[0] == 2
    assert pool.min_at(START.replace(hour=18))[0] == 0
    assert pool.min_at(START.replace(hour=9) + timedelta(days=5))[0] == 0  # Saturday
    # The simulated day from 07:00: no load at all. Both start at 08:00, one right after
    # the other (bounds wait for no delay), and go after 18:00 once idle.
    run = simulate(lambda t: 0, 12 * 3600, cfg)
    outs = [a for a in run.actions if a[1].kind == "scale-out"]
    ins = [a for a in run.actions if a[1].kind == "scale-in"]
    assert [a[0] for a in outs] == [3600, 3615]
    assert all("schedule mon-fri 08:00-18:00" in a[2] for a in outs)
    assert len(ins) == 2
    # Idle all day: the first goes at the window's end, the next an idle time later.
    assert ins[0][0] == 11 * 3600
    assert ins[1][0] - ins[0][0] >= cfg.idle_s
    assert run.serving[-1] == BASE


def test_a_window_past_midnight_covers_the_morning_after() -> None:
    cfg = config(
        autoscale_pools=[
            {"name": "standby", "max": 1, "schedules": [{"when": "fri 22:00-06:00", "min": 1}]}
        ]
    )
    pool = cfg.pool("standby")
    friday = START + timedelta(days=4)
    assert pool.min_at(friday.replace(hour=21, minute=59))[0] == 0
    assert pool.min_at(friday.replace(hour=23))[0] == 1
    assert pool.min_at(friday.replace(hour=5, minute=59) + timedelta(days=1))[0] == 1
    assert pool.min_at(friday.replace(hour=6) + timedelta(days=1))[0] == 0
    assert pool.min_at(friday.replace(hour=5) - timedelta(days=1))[0] == 0  # Thursday night


def test_missing_or_stale_signals_cause_no_action() -> None:
    cfg = config()
    run = simulate(lambda t: 30, 3600, cfg, signals_ok=lambda t: False)
    assert run.actions == []
    assert set(run.reasons) == {"holding: the signals could not be read"}
    # A gap in the signals starts the delay again: pressure seen, then nothing, then
    # pressure again acts only after a full delay.
    gap = simulate(lambda t: 30, 120, cfg, signals_ok=lambda t: t not in (15.0, 30.0))
    assert gap.actions[0][0] >= 45 + cfg.scale_out_delay_s
    stale = Signals(START.timestamp() - 61, 3.0, 10, 16, 2)
    decision = decide(stale, [PoolState("standby", (), ("s1",))], START, cfg, Memory())
    assert decision.action is None and "61 s old" in decision.reason


def test_a_failed_start_backs_off_and_the_next_host_is_chosen() -> None:
    cfg = config()
    run = simulate(lambda t: 30, 600, cfg, fails={"s1"})
    hosts = [a[1].host for a in run.actions]
    assert hosts[:2] == ["s1", "s2"]
    assert hosts.count("s1") >= 2  # retried once its backoff ended
    retry = [a[0] for a in run.actions if a[1].host == "s1"]
    assert retry[1] - retry[0] >= cfg.backoff_s
    memory = after_start(Memory(), "s1", False, 1000.0, 60.0)
    memory = after_start(memory, "s1", False, 2000.0, 60.0)
    assert memory.failures["s1"] == (2, 2120.0)
    assert after_start(memory, "s1", True, 3000.0, 60.0).failures == {}
    assert Memory.from_json(memory.to_json()) == memory


def test_never_above_max_nor_below_min_and_the_last_worker_stays_unless_allowed() -> None:
    cfg = config()
    run = simulate(lambda t: 1000, 3600, cfg)
    assert max(run.serving) == BASE + 2
    assert "every pool is at its max" in run.reasons[-1]
    # Above max (an operator started one by hand): one goes, whatever the load.
    pools = [PoolState("standby", ("s1", "s2", "s3"), ())]
    busy = Signals(START.timestamp(), 5.0, 40, 40, 5)
    decision = decide(busy, pools, START, cfg, Memory())
    assert decision.action == Action("scale-in", "standby", "s3")
    # The only worker serving is the pool's: quiet keeps it unless scale_to_zero.
    alone = Signals(START.timestamp(), 0.0, 0, 0, 1)
    quiet_since = Memory(quiet_since=START.timestamp() - 3600)
    kept = decide(alone, [PoolState("standby", ("s1",), ("s2",))], START, cfg, quiet_since)
    assert kept.action is None and "scale_to_zero is off" in kept.reason
    zero = config(autoscale_pools=[{"name": "standby", "max": 2, "scale_to_zero": True}])
    gone = decide(alone, [PoolState("standby", ("s1",), ("s2",))], START, zero, quiet_since)
    assert gone.action == Action("scale-in", "standby", "s1")


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({}, "autoscale_pools"),
        ({"autoscale_pools": "standby"}, "autoscale_pools"),
        ({"autoscale_pools": [{"name": "a", "min": 3, "max": 2}]}, "autoscale_pools[0].min"),
        ({"autoscale_pools": [{"name": "a", "kind": "moon"}]}, "autoscale_pools[0].kind"),
        ({"autoscale_pools": [{"name": "A b"}]}, "autoscale_pools[0].name"),
        ({"autoscale_pools": [{"name": "a", "group": "workers"}]}, "autoscale_pools[0].group"),
        ({"autoscale_pools": [{"name": "a", "size": 2}]}, "autoscale_pools[0].size"),
        ({"autoscale_pools": [{"name": "a"}, {"name": "a", "group": "b"}]}, "[1].name"),
        (
            {"autoscale_pools": [{"name": "a", "schedules": [{"when": "mon 8-18", "min": 1}]}]},
            "autoscale_pools[0].schedules[0].when",
        ),
        (
            {
                "autoscale_pools": [
                    {"name": "a", "schedules": [{"when": "moon 08:00-18:00", "min": 1}]}
                ]
            },
            "autoscale_pools[0].schedules[0].when",
        ),
        (
            {
                "autoscale_pools": [
                    {"name": "a", "schedules": [{"when": "mon 08:00-25:00", "min": 1}]}
                ]
            },
            "autoscale_pools[0].schedules[0].when",
        ),
        (
            {
                "autoscale_pools": [
                    {"name": "a", "max": 1, "schedules": [{"when": "* 08:00-18:00", "min": 2}]}
                ]
            },
            "autoscale_pools[0].schedules[0].min",
        ),
        ({"autoscale_pools": [{"name": "a"}], "autoscale_idle_s": -1}, "autoscale_idle_s"),
        ({"autoscale_pools": [{"name": "a"}], "autoscale_cooldown": 5}, "autoscale_cooldown"),
    ],
)
def test_bad_configuration_names_the_field(variables: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError) as caught:
        autoscale_config(variables, "inventory x")
    assert field in str(caught.value)
    assert str(caught.value).startswith("inventory x: ")
    assert "(" in str(caught.value)  # a fix


def test_a_request_for_a_parked_model_starts_a_worker_that_serves_it_at_once() -> None:
    cfg = config(autoscale_pools=[{"name": "night", "max": 2, "scale_to_zero": True}])
    models = {"n1": ("smollm2",), "n2": ("qwen",)}
    pool = [PoolState("night", (), ("n1", "n2"), models)]
    waiting = Signals(START.timestamp(), 0.0, 1, 0, 0, wanted=("qwen",))
    # Right after another action (cooling down), with no delay: a client is waiting.
    memory = Memory(last_action_at=START.timestamp() - 1)
    decision = decide(waiting, pool, START, cfg, memory)
    assert decision.action == Action("scale-out", "night", "n2")
    assert "a request waits for qwen" in decision.reason
    # A model no parked worker serves, or a pool at its max, or no signals: no wake.
    other = Signals(START.timestamp(), 0.0, 1, 0, 0, wanted=("llama",))
    assert decide(other, pool, START, cfg, memory).action is None
    full = [PoolState("night", ("n1", "n3"), ("n2",), models)]
    assert decide(waiting, full, START, cfg, memory).action is None
    assert decide(None, pool, START, cfg, memory).action is None
    # The worker whose start just failed waits its backoff, whoever asks.
    failed = after_start(memory, "n2", False, START.timestamp(), cfg.backoff_s)
    assert decide(waiting, pool, START, cfg, failed).action is None


def test_the_metrics_count_decisions_and_show_the_pools() -> None:
    from clusterai_runner.autoscaler.metrics import AutoscaleMetrics

    metrics = AutoscaleMetrics()
    assert "clusterai_autoscale_signals_up 0" in metrics.render()
    signals = Signals(START.timestamp(), 0.84, 4, 8, 2)
    metrics.evaluated(START.timestamp(), signals, [PoolState("standby", ("s1",), ("s2", "s3"))],
                      {"standby": 1})  # fmt: skip
    metrics.decided("scale-out", "succeeded", "standby")
    metrics.decided("scale-out", "succeeded", "standby")
    metrics.decided("scale-in", "failed", "standby")
    text = metrics.render()
    assert (
        'clusterai_autoscale_decisions_total{action="scale-out",outcome="succeeded",'
        'pool="standby"} 2'
    ) in text
    assert (
        'clusterai_autoscale_decisions_total{action="scale-in",outcome="failed",pool="standby"} 1'
        in text
    )
    assert 'clusterai_autoscale_pool_serving{pool="standby"} 1' in text
    assert 'clusterai_autoscale_pool_parked{pool="standby"} 2' in text
    assert 'clusterai_autoscale_pool_min{pool="standby"} 1' in text
    assert "clusterai_autoscale_queue_wait_p95_seconds 0.84" in text
    assert "clusterai_autoscale_signals_up 1" in text


def desktops(**pool: Any) -> AutoscaleConfig:
    return config(
        autoscale_pools=[
            {"name": "standby", "max": 1},
            {"name": "desk", "kind": "desktop", "max": 2, **pool},
        ]
    )


def test_a_desktop_outside_its_window_is_parked_and_returns_inside_it() -> None:
    from clusterai_runner.usecases.autoscale import outside_windows

    cfg = desktops(available=["mon-fri 19:00-07:00", "sat,sun 00:00-24:00"], timezone="UTC")
    pool = cfg.pool("desk")
    evening, noon = START.replace(hour=20), START.replace(hour=12)  # a Monday
    assert outside_windows(pool, {}, "d1", evening.timestamp()) is None
    why = outside_windows(pool, {}, "d1", noon.timestamp())
    assert why == "outside its windows (mon-fri 19:00-07:00, sat,sun 00:00-24:00)"
    # A host's own windows and time zone: 20:00 UTC is 09:00 the next day in Auckland.
    own = {"desktop_windows": ["* 08:00-10:00"], "desktop_timezone": "Pacific/Auckland"}
    assert outside_windows(pool, own, "d2", evening.timestamp()) is None
    assert outside_windows(pool, own, "d2", noon.timestamp()) is not None

    signals = Signals(noon.timestamp(), 0.0, 0, 0, 3)
    # Serving at noon, outside its window: drained and stopped at once, whatever the load.
    serving = [PoolState("standby", (), ("s1",)), PoolState("desk", ("d1",), (), {}, {"d1": why})]
    decision = decide(signals, serving, noon, cfg, Memory(last_action_at=noon.timestamp()))
    assert (
        decision.action == Action("scale-in", "desk", "d1")
        and "outside its windows" in decision.reason
    )
    # Parked in the evening, inside it: returned (its pool's min counts it), no load needed.
    parked = [PoolState("standby", (), ("s1",)), PoolState("desk", (), ("d1",))]
    decision = decide(Signals(evening.timestamp(), 0.0, 0, 0, 1), parked, evening, cfg, Memory())
    assert decision.action == Action("scale-out", "desk", "d1")
    assert "below its desktops available 1" in decision.reason
    # Parked at noon: it stays parked, even under pressure (the standby pool goes instead).
    away = [PoolState("standby", (), ("s1",)), PoolState("desk", (), ("d1",), {}, {"d1": why})]
    busy = Signals(noon.timestamp(), 5.0, 9, 8, 1)
    pressed = Memory(pressure_since=noon.timestamp() - 60)
    assert decide(busy, away, noon, cfg, pressed).action == Action("scale-out", "standby", "s1")


def test_the_owner_at_a_desktop_drains_it_within_one_interval_and_it_returns_after() -> None:
    cfg = desktops()
    active, parked = ["d1"], []
    actions = []
    memory = Memory()
    for step in range(40):  # every interval for ten minutes
        t = START + timedelta(seconds=step * cfg.interval_s)
        busy = 10 <= step < 20  # the owner sits down at step 10, leaves at 20
        unavailable = {"d1": "its owner is using it: claimed by ada"} if busy else {}
        pools = [
            PoolState("standby", (), ()),
            PoolState("desk", tuple(active), tuple(parked), {}, unavailable),
        ]
        decision = decide(Signals(t.timestamp(), 0.0, 0, 2, 2), pools, t, cfg, memory)
        memory = decision.memory
        if decision.action is not None:
            actions.append((step, decision.action.kind))
            if decision.action.kind == "scale-in":
                active.remove("d1"), parked.append("d1")
            else:
                parked.remove("d1"), active.append("d1")
    # Drained at the first evaluation that saw the owner; back at the first after they left.
    assert actions == [(10, "scale-in"), (20, "scale-out")]


def test_hosted_providers_come_on_only_when_no_worker_can_start_and_go_off_first() -> None:
    cfg = config(
        autoscale_pools=[
            {"name": "standby", "max": 1},
            {"name": "hosted", "kind": "hosted", "backends": ["openai"]},
        ],
        autoscale_slow_start_s=120,
    )
    now = START.timestamp()
    busy = Signals(now, 5.0, 9, 8, 2)
    pressed = Memory(pressure_since=now - 60)
    provider_off = PoolState("hosted", (), ("openai",))
    # A standby worker can start: it goes first.
    pools = [PoolState("standby", (), ("s1",)), provider_off]
    assert decide(busy, pools, START, cfg, pressed).action == Action("scale-out", "standby", "s1")
    # None can: the provider comes on.
    full = [PoolState("standby", ("s1",), ()), provider_off]
    assert decide(busy, full, START, cfg, pressed).action == Action("scale-out", "hosted", "openai")
    # The standby workers start slower than slow_start_s: the provider first, the burst may
    # be over before a worker is ready.
    slow = [PoolState("standby", (), ("s1",), start_s=300.0), provider_off]
    assert decide(busy, slow, START, cfg, pressed).action == Action("scale-out", "hosted", "openai")
    # Quiet: the provider goes off before any worker is parked.
    calm = Signals(now, 0.0, 0, 0, 3)
    both_on = [PoolState("standby", ("s1",), ()), PoolState("hosted", ("openai",), ())]
    idle = Memory(quiet_since=now - 3600)
    assert decide(calm, both_on, START, cfg, idle).action == Action("scale-in", "hosted", "openai")


@pytest.mark.parametrize(
    ("pool", "field"),
    [
        ({"name": "h", "kind": "hosted"}, "autoscale_pools[0].backends: is not set"),
        ({"name": "h", "backends": ["x"]}, "autoscale_pools[0].backends: is a hosted pool's"),
        ({"name": "h", "kind": "hosted", "backends": ["x"], "max": 2}, "2 is above its 1 backends"),
        ({"name": "h", "kind": "hosted", "backends": ["x"], "group": "g"}, "has no hosts"),
        ({"name": "h", "kind": "hosted", "backends": "x"}, "'x' is not a list of backend names"),
    ],
)
def test_a_bad_hosted_pool_names_the_field(pool: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=re.escape(field)):
        autoscale_config({"autoscale_pools": [pool]}, "inventory x")


def test_a_short_burst_goes_to_the_hosted_tier_and_a_long_one_to_workers() -> None:
    """The growth order weighs each pool's start time against the burst: a burst is
    expected to last as long again as it has, so a pool whose workers start later than
    that is passed over for the provider; once the burst has outlasted that start time,
    a worker starts to take over from the provider, and quiet turns the provider off
    first."""
    cfg = config(
        autoscale_pools=[
            {"name": "standby", "max": 2},
            {"name": "hosted", "kind": "hosted", "backends": ["openai"]},
        ],
        autoscale_scale_out_delay_s=15,
        autoscale_cooldown_s=60,
    )
    now = START.timestamp()
    busy = Signals(now, 5.0, 9, 8, 2)
    pools = [
        PoolState("standby", (), ("s1", "s2"), start_s=120.0),
        PoolState("hosted", (), ("openai",)),
    ]
    # 20 s into the burst, a standby worker would be ready after 120 s: the provider.
    early = decide(busy, pools, START, cfg, Memory(pressure_since=now - 20, burst_since=now - 20))
    assert early.action == Action("scale-out", "hosted", "openai")
    assert "standby's workers take 120 s, the burst has lasted 20 s" in early.reason
    # The burst goes on (the provider keeps the queue down: no pressure now, not quiet):
    # it has lasted longer than a worker takes to start, so one starts to take over.
    carried = [
        PoolState("standby", (), ("s1", "s2"), start_s=120.0),
        PoolState("hosted", ("openai",), ()),
    ]
    within = Signals(now, 0.5, 0, 6, 2)
    memory = replace(early.memory, last_action_at=now - 100)
    later = START + timedelta(seconds=130)
    takeover = decide(replace(within, sampled_at=later.timestamp()), carried, later, cfg, memory)
    assert takeover.action == Action("scale-out", "standby", "s1"), takeover.reason
    assert "hosted has carried a burst for 150 s, longer than standby's workers" in takeover.reason
    # Not before the worker's start time has passed.
    sooner = START + timedelta(seconds=60)
    assert (
        decide(replace(within, sampled_at=sooner.timestamp()), carried, sooner, cfg, memory).action
        is None
    )
    # A worker dearer than the provider does not take over.
    dear = config(
        autoscale_pools=[
            {"name": "standby", "max": 2, "hourly_usd": 3.0},
            {"name": "hosted", "kind": "hosted", "backends": ["openai"], "hourly_usd": 1.0},
        ]
    )
    assert (
        decide(replace(within, sampled_at=later.timestamp()), carried, later, dear, memory).action
        is None
    )
    # A long burst from the start: the worker pool is in time and goes first.
    long = decide(busy, pools, START, cfg, Memory(pressure_since=now - 200, burst_since=now - 200))
    assert long.action == Action("scale-out", "standby", "s1")
    # Quiet ends the burst, and the provider goes off first.
    calm = Signals(now, 0.0, 0, 0, 3)
    both = [PoolState("standby", ("s1",), ("s2",)), PoolState("hosted", ("openai",), ())]
    off = decide(calm, both, START, cfg, Memory(quiet_since=now - 3600, burst_since=now - 4000))
    assert off.action == Action("scale-in", "hosted", "openai")
    assert off.memory.burst_since is None


def test_a_pools_configured_start_time_counts_until_one_is_measured() -> None:
    cfg = config(
        autoscale_pools=[
            {"name": "standby", "max": 1, "start_s": 300},
            {"name": "hosted", "kind": "hosted", "backends": ["openai"]},
        ]
    )
    now = START.timestamp()
    busy = Signals(now, 5.0, 9, 8, 2)
    pressed = Memory(pressure_since=now - 30, burst_since=now - 30)
    provider = PoolState("hosted", (), ("openai",))
    unmeasured = [PoolState("standby", (), ("s1",)), provider]
    assert decide(busy, unmeasured, START, cfg, pressed).action == Action(
        "scale-out", "hosted", "openai"
    )
    measured = [PoolState("standby", (), ("s1",), start_s=20.0), provider]
    assert decide(busy, measured, START, cfg, pressed).action == Action(
        "scale-out", "standby", "s1"
    )


def test_among_pools_in_time_the_cheapest_starts_first_and_the_dearest_goes_first() -> None:
    cfg = config(
        autoscale_pools=[
            {"name": "cloud", "kind": "cloud", "max": 2, "hourly_usd": 1.0},
            {"name": "standby", "max": 2, "hourly_usd": 0.1},
        ]
    )
    now = START.timestamp()
    busy = Signals(now, 5.0, 9, 8, 2)
    pressed = Memory(pressure_since=now - 60, burst_since=now - 60)
    pools = [PoolState("cloud", (), (), launchable=2), PoolState("standby", (), ("s1",))]
    grow = decide(busy, pools, START, cfg, pressed)
    assert grow.action == Action("scale-out", "standby", "s1")
    calm = Signals(now, 0.0, 0, 0, 4)
    both = [PoolState("cloud", ("cloud-a",), (), launchable=1), PoolState("standby", ("s1",), ())]
    shrink = decide(calm, both, START, cfg, Memory(quiet_since=now - 3600))
    assert shrink.action == Action("scale-in", "cloud", "cloud-a")


def test_a_cloud_pool_launches_within_its_caps_and_backs_off_after_a_failed_launch() -> None:
    cfg = config(autoscale_pools=[{"name": "burst", "kind": "cloud", "max": 2}])
    now = START.timestamp()
    busy = Signals(now, 5.0, 9, 8, 2)
    pressed = Memory(pressure_since=now - 60)
    room = [PoolState("burst", (), (), launchable=1)]
    decision = decide(busy, room, START, cfg, pressed)
    assert decision.action == Action("scale-out", "burst", "")  # a new instance
    # The caps leave no room: hold, and say so.
    capped = [PoolState("burst", (), (), launchable=0, capped="over the hourly cap")]
    held = decide(busy, capped, START, cfg, pressed)
    assert held.action is None and "no host to start" in held.reason
    # A failed launch keeps the pool out for the backoff, then lets it try again.
    failed = after_start(decision.memory, Action("scale-out", "burst", "").key, False, now, 60)
    assert failed.failures == {"pool:burst": (1, now + 60)}
    soon = START + timedelta(seconds=30)
    again = replace(failed, pressure_since=now - 60, last_action_at=None)
    assert decide(replace(busy, sampled_at=soon.timestamp()), room, soon, cfg, again).action is None
    after = START + timedelta(seconds=61)
    assert decide(
        replace(busy, sampled_at=after.timestamp()), room, after, cfg, again
    ).action == Action("scale-out", "burst", "")
    # Below its min it launches; above its max it terminates the last.
    floor = config(autoscale_pools=[{"name": "burst", "kind": "cloud", "min": 1, "max": 1}])
    calm = Signals(now, 0.0, 0, 0, 2)
    assert decide(calm, room, START, floor, Memory()).action == Action("scale-out", "burst", "")
    over = [PoolState("burst", ("cloud-a", "cloud-b"), ())]
    assert decide(calm, over, START, floor, Memory()).action == Action(
        "scale-in", "burst", "cloud-b"
    )


def test_gpu_signals_add_pressure_and_keep_a_busy_gpu_from_being_parked() -> None:
    cfg = config(autoscale_target_gpu_utilization=0.9, autoscale_target_gpu_memory=0.95)
    now = START.timestamp()
    pools = [PoolState("standby", ("s1",), ("s2",))]
    pressed = Memory(pressure_since=now - 60)
    hot = Signals(now, 0.0, 0, 2, 3, gpu_utilization=0.97, gpu_memory=0.5)
    decision = decide(hot, pools, START, cfg, pressed)
    assert decision.action == Action("scale-out", "standby", "s2")
    assert decision.reason.startswith("GPU utilisation 97% above the target 90%")
    full = Signals(now, 0.0, 0, 2, 3, gpu_utilization=0.2, gpu_memory=0.99)
    assert "GPU memory 99% in use" in decide(full, pools, START, cfg, pressed).reason
    # Every signal above its target is named, not only the first.
    both = Signals(now, 2.5, 2, 15, 3, gpu_utilization=0.97, gpu_memory=0.99)
    assert decide(both, pools, START, cfg, pressed).reason.split("; ") == [
        "queue wait p95 2.50 s above the target 2 s",
        "5.0 requests in flight per worker, above the target 4",
        "GPU utilisation 97% above the target 90%",
        "GPU memory 99% in use, above the target 95%, for 60 s",
    ]
    # Not quiet while the GPUs work above a third of their target, whatever the queue.
    idle = Memory(quiet_since=now - 3600)
    busy_gpu = Signals(now, 0.0, 0, 0, 3, gpu_utilization=0.5, gpu_memory=0.2)
    assert decide(busy_gpu, pools, START, cfg, idle).reason == "load within the targets"
    cool = Signals(now, 0.0, 0, 0, 3, gpu_utilization=0.1, gpu_memory=0.2)
    assert decide(cool, pools, START, cfg, idle).action == Action("scale-in", "standby", "s1")
    # Targets left at 0: the GPU figures are not looked at.
    plain = config()
    assert decide(hot, pools, START, plain, Memory(quiet_since=now - 3600)).action is not None


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        (
            {"autoscale_target_gpu_utilization": 1.5},
            "autoscale_target_gpu_utilization: 1.5 is not a share",
        ),
        ({"autoscale_target_gpu_memory": -0.1}, "autoscale_target_gpu_memory: -0.1 is not a share"),
        (
            {"autoscale_pools": [{"name": "c", "kind": "cloud", "group": "gpu"}]},
            "autoscale_pools[0].group: 'gpu' is not where cloud workers go",
        ),
        (
            {"autoscale_pools": [{"name": "s", "instance_type": "t3.large"}]},
            "autoscale_pools[0].instance_type: is a cloud pool's setting",
        ),
        (
            {"autoscale_pools": [{"name": "s", "start_s": -1}]},
            "autoscale_pools[0].start_s: -1 is not a number of seconds",
        ),
        (
            {"autoscale_healing": ["reload", "reboot"]},
            "autoscale_healing: ['reload', 'reboot'] is not a list of healing steps",
        ),
        ({"autoscale_healing": "reload"}, "autoscale_healing: 'reload' is not a list"),
        ({"autoscale_healing_wait_s": 0}, "autoscale_healing_wait_s: 0 is not a number"),
    ],
)
def test_bad_gpu_targets_and_cloud_pools_name_the_field(
    variables: dict[str, Any], field: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(field)):
        config(**variables)


def test_healing_steps_are_kept_in_their_order() -> None:
    cfg = config(autoscale_healing=["drain", "reload"], autoscale_healing_wait_s=60)
    assert (cfg.healing, cfg.healing_wait_s) == (("reload", "drain"), 60.0)
    assert config().healing == ()
