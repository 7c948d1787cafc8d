"""The autoscaler's configuration: the inventory's ``autoscale_*`` variables, checked.

Every bad value raises one UsageError naming the variable (``autoscale_pools[0].min``)
and the fix, before anything is read from the cluster or changed; the service refuses to
start on one (exit 2). The variables and their defaults are documented in
``inventories/sample/group_vars/all/autoscale.yml``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time
from typing import Any

from clusterai_runner.autoscaler.policy import DAYS, AutoscaleConfig, PoolConfig, Window
from clusterai_runner.errors import UsageError

POOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WINDOW = re.compile(
    r"^\s*(?P<days>[a-z,*-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$"
)
# Pool kinds this version scales. The desktop, cloud and hosted pools are refused
# with a clear line until they are built.
KINDS = ("standby",)
SECONDS = {
    "autoscale_interval_s": (15.0, 1.0),
    "autoscale_target_queue_wait_s": (2.0, 0.0),
    "autoscale_target_in_flight": (4.0, 0.0),
    "autoscale_scale_out_delay_s": (15.0, 0.0),
    "autoscale_idle_s": (300.0, 0.0),
    "autoscale_cooldown_s": (60.0, 0.0),
    "autoscale_stale_s": (60.0, 1.0),
    "autoscale_backoff_s": (60.0, 1.0),
}
KNOWN = {*SECONDS, "autoscale_pools"}
POOL_KEYS = {"name", "kind", "group", "min", "max", "hourly_usd", "scale_to_zero", "schedules"}


def _bad(source: str, name: str, why: str, fix: str) -> UsageError:
    return UsageError(f"{source}: {name}", why, fix)


def _count(source: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(source, name, f"{value!r} is not a whole number of workers", "e.g. 2")
    return value


def _days(source: str, name: str, text: str) -> frozenset[int]:
    if text in ("*", "daily"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise _bad(
                source, name, f"{part!r} is not a day or a range of days", "e.g. mon-fri or sat,sun"
            )
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        day = first
        while True:
            days.add(day)
            if day == last:
                break
            day = (day + 1) % 7
    return frozenset(days)


def _clock(source: str, name: str, text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    if hours == 24 and minutes == 0:
        return time(23, 59, 59, 999999)
    if hours > 23 or minutes > 59:
        raise _bad(source, name, f"{text!r} is not a time of day", "HH:MM, from 00:00 to 24:00")
    return time(hours, minutes)


def window(source: str, name: str, entry: Any, pool_max: int) -> Window:
    """One ``schedules`` entry: ``{when: "mon-fri 08:00-18:00", min: 2}``."""
    if not isinstance(entry, dict) or set(entry) != {"when", "min"}:
        raise _bad(
            source,
            name,
            f"{entry!r} is not {{when, min}}",
            'e.g. {when: "mon-fri 08:00-18:00", min: 2}',
        )
    text = entry["when"]
    match = WINDOW.match(text) if isinstance(text, str) else None
    if match is None:
        raise _bad(
            source,
            f"{name}.when",
            f"{text!r} does not parse",
            'DAYS HH:MM-HH:MM, e.g. "mon-fri 08:00-18:00" or "* 22:00-06:00"',
        )
    start = _clock(source, f"{name}.when", match["start"])
    end = _clock(source, f"{name}.when", match["end"])
    if start == end:
        raise _bad(source, f"{name}.when", f"{text!r} is empty", "give an end after the start")
    floor = _count(source, f"{name}.min", entry["min"])
    if floor > pool_max:
        raise _bad(
            source,
            f"{name}.min",
            f"{floor} is above the pool's max {pool_max}",
            "lower it or raise max",
        )
    return Window(_days(source, f"{name}.when", match["days"]), start, end, floor, text.strip())


def _pool(source: str, index: int, entry: Any) -> PoolConfig:
    at = f"autoscale_pools[{index}]"
    if not isinstance(entry, dict):
        raise _bad(
            source, at, f"{entry!r} is not a mapping", "e.g. {name: standby, kind: standby, max: 2}"
        )
    unknown = sorted(set(entry) - POOL_KEYS)
    if unknown:
        raise _bad(
            source,
            f"{at}.{unknown[0]}",
            "is not a pool setting",
            f"settings: {', '.join(sorted(POOL_KEYS))}",
        )
    name = entry.get("name")
    if not isinstance(name, str) or not POOL_NAME.match(name):
        raise _bad(
            source,
            f"{at}.name",
            f"{name!r} is not a pool name",
            "lower-case letters, digits, - and _",
        )
    kind = entry.get("kind", "standby")
    if kind not in KINDS:
        raise _bad(
            source,
            f"{at}.kind",
            f"{kind!r} is not a pool kind this version scales",
            f"kinds: {', '.join(KINDS)}",
        )
    group = entry.get("group", kind)
    if (
        not isinstance(group, str)
        or not GROUP_NAME.match(group)
        or group in ("all", "control", "workers", "parked")
    ):
        raise _bad(
            source,
            f"{at}.group",
            f"{group!r} cannot hold a pool's hosts",
            "a group of its own, e.g. standby",
        )
    floor = _count(source, f"{at}.min", entry.get("min", 0))
    ceiling = _count(source, f"{at}.max", entry.get("max", 1))
    if floor > ceiling:
        raise _bad(source, f"{at}.min", f"{floor} is above max {ceiling}", "lower min or raise max")
    price = entry.get("hourly_usd", 0.0)
    if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
        raise _bad(
            source,
            f"{at}.hourly_usd",
            f"{price!r} is not a price",
            "USD per worker-hour, e.g. 0 or 1.2",
        )
    zero = entry.get("scale_to_zero", False)
    if not isinstance(zero, bool):
        raise _bad(source, f"{at}.scale_to_zero", f"{zero!r} is not true or false", "true or false")
    schedules = entry.get("schedules", [])
    if not isinstance(schedules, list):
        raise _bad(
            source,
            f"{at}.schedules",
            "is not a list",
            'e.g. [{when: "mon-fri 08:00-18:00", min: 2}]',
        )
    windows = tuple(
        window(source, f"{at}.schedules[{i}]", w, ceiling) for i, w in enumerate(schedules)
    )
    return PoolConfig(name, "standby", group, floor, ceiling, float(price), zero, windows)


def autoscale_config(variables: Mapping[str, Any], source: str) -> AutoscaleConfig:
    """Check the ``autoscale_*`` variables (``source`` says where they come from)."""
    unknown = sorted(k for k in variables if k.startswith("autoscale_") and k not in KNOWN)
    if unknown:
        raise _bad(
            source,
            unknown[0],
            "is not an autoscaler setting",
            f"settings: {', '.join(sorted(KNOWN))}",
        )
    pools = variables.get("autoscale_pools")
    if not isinstance(pools, list) or not pools:
        raise _bad(
            source,
            "autoscale_pools",
            "is not set" if pools in (None, "", []) else "is not a list",
            "a list of pools in priority order, e.g. [{name: standby, kind: standby, max: 2}]",
        )
    parsed = tuple(_pool(source, i, p) for i, p in enumerate(pools))
    seen: set[str] = set()
    for index, pool in enumerate(parsed):
        if pool.name in seen:
            raise _bad(
                source,
                f"autoscale_pools[{index}].name",
                f"{pool.name!r} is named twice",
                "name each pool once",
            )
        seen.add(pool.name)
    groups = [p.group for p in parsed]
    if len(set(groups)) != len(groups):
        raise _bad(
            source,
            "autoscale_pools",
            "two pools use one group",
            "give each pool a group of its own",
        )
    numbers: dict[str, float] = {}
    for name, (default, low) in SECONDS.items():
        value = variables.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            raise _bad(
                source, name, f"{value!r} is not a number of at least {low:g}", f"e.g. {default:g}"
            )
        numbers[name.removeprefix("autoscale_")] = float(value)
    return AutoscaleConfig(pools=parsed, **numbers)
