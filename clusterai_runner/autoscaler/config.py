"""The autoscaler's configuration: the inventory's ``autoscale_*`` variables, checked.

Every bad value raises one UsageError naming the variable (``autoscale_pools[0].min``)
and the fix, before anything is read from the cluster or changed; the service refuses to
start on one (exit 2). The variables and their defaults are documented in
``inventories/sample/group_vars/all/autoscale.yml``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import time
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clusterai_runner.autoscaler.policy import DAYS, AutoscaleConfig, PoolConfig, Window
from clusterai_runner.errors import UsageError

POOL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WINDOW = re.compile(
    r"^\s*(?P<days>[a-z,*-]+)\s+(?P<start>\d{1,2}:\d{2})-(?P<end>\d{1,2}:\d{2})\s*$"
)
# Pool kinds: standby workers, desktops (availability windows, Wake-on-LAN, their owner
# first), cloud workers (launched and terminated through `clusterai cloud`'s use cases,
# within its caps) and hosted providers (the gateway's fallback backends, turned on and
# off).
KINDS = ("standby", "desktop", "cloud", "hosted")
MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
SECONDS = {
    "autoscale_interval_s": (15.0, 1.0),
    "autoscale_target_queue_wait_s": (2.0, 0.0),
    "autoscale_target_in_flight": (4.0, 0.0),
    "autoscale_scale_out_delay_s": (15.0, 0.0),
    "autoscale_idle_s": (300.0, 0.0),
    "autoscale_cooldown_s": (60.0, 0.0),
    "autoscale_stale_s": (60.0, 1.0),
    "autoscale_backoff_s": (60.0, 1.0),
    "autoscale_slow_start_s": (0.0, 0.0),
    "autoscale_healing_wait_s": (300.0, 1.0),
}
# The healing steps, in the order they are tried (usecases/healing.py).
HEALING = ("reload", "restart", "drain")
# Shares of a GPU (0 to 1) above which there is pressure; 0: Prometheus is not asked.
SHARES = ("autoscale_target_gpu_utilization", "autoscale_target_gpu_memory")
KNOWN = {*SECONDS, *SHARES, "autoscale_pools", "autoscale_healing"}
POOL_KEYS = {"name", "kind", "group", "min", "max", "hourly_usd", "start_s", "scale_to_zero",
             "schedules", "available", "timezone", "wol", "backends", "instance_type"}  # fmt: skip
# The group `clusterai cloud` puts its workers in.
CLOUD_GROUP = "cloud"
BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# A desktop host's own variables (host_vars), checked by check_desktop_host.
DESKTOP_VARIABLES = ("desktop_mac", "desktop_windows", "desktop_timezone")


def _bad(source: str, name: str, why: str, fix: str) -> UsageError:
    return UsageError(f"{source}: {name}", why, fix)


def _count(source: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(source, name, f"{value!r} is not a whole number of workers", "e.g. 2")
    return value


def _amount(source: str, name: str, value: Any, what: str, fix: str) -> float:
    """A number of at least 0 (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _bad(source, name, f"{value!r} is not {what}", fix)
    return float(value)


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
    raw_backends = entry.get("backends")
    if (kind == "hosted") != (raw_backends is not None):
        raise _bad(
            source,
            f"{at}.backends",
            "is not set" if kind == "hosted" else "is a hosted pool's setting",
            "the gateway's provider backends it turns on and off, e.g. [openai]"
            if kind == "hosted"
            else "set kind: hosted, or drop it",
        )
    backends: list[str] = raw_backends if isinstance(raw_backends, list) else []
    if kind == "hosted" and (
        not backends or not all(isinstance(b, str) and BACKEND_NAME.match(b) for b in backends)
    ):
        raise _bad(
            source,
            f"{at}.backends",
            f"{raw_backends!r} is not a list of backend names",
            "e.g. [openai]",
        )
    group = entry.get("group", "" if kind == "hosted" else str(kind))
    if kind == "hosted" and "group" in entry:
        raise _bad(
            source, f"{at}.group", "a hosted pool has no hosts", "drop it; list its backends"
        )
    if kind == "cloud" and group != CLOUD_GROUP:
        raise _bad(
            source,
            f"{at}.group",
            f"{group!r} is not where cloud workers go",
            f"drop it: a cloud pool's workers are `clusterai cloud`'s, in group {CLOUD_GROUP}",
        )
    instance_type = entry.get("instance_type", "")
    if "instance_type" in entry and kind != "cloud":
        raise _bad(
            source,
            f"{at}.instance_type",
            "is a cloud pool's setting",
            "set kind: cloud, or drop it",
        )
    if not isinstance(instance_type, str):
        raise _bad(
            source,
            f"{at}.instance_type",
            f"{instance_type!r} is not an instance type",
            "one of cloud_instance_types, e.g. g5.xlarge",
        )
    if kind != "hosted" and (
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
    ceiling = _count(
        source, f"{at}.max", entry.get("max", len(backends) if kind == "hosted" else 1)
    )
    if kind == "hosted" and ceiling > len(backends):
        raise _bad(
            source,
            f"{at}.max",
            f"{ceiling} is above its {len(backends)} backends",
            "list more backends or lower max",
        )
    if floor > ceiling:
        raise _bad(source, f"{at}.min", f"{floor} is above max {ceiling}", "lower min or raise max")
    price = _amount(
        source, f"{at}.hourly_usd", entry.get("hourly_usd", 0.0), "a price",
        "USD per worker-hour, e.g. 0 or 1.2",
    )  # fmt: skip
    start = _amount(
        source, f"{at}.start_s", entry.get("start_s", 0.0), "a number of seconds",
        "how long one of its workers takes to start until one is measured, e.g. 300",
    )  # fmt: skip
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
    desktop = {k: entry[k] for k in ("available", "timezone", "wol") if k in entry}
    if desktop and kind != "desktop":
        first = sorted(desktop)[0]
        raise _bad(
            source, f"{at}.{first}", "is a desktop pool's setting", "set kind: desktop, or drop it"
        )
    available = availability(source, f"{at}.available", entry.get("available", []))
    zone = timezone(source, f"{at}.timezone", entry.get("timezone", ""))
    wol = entry.get("wol", {})
    if not isinstance(wol, dict) or set(wol) - {"address", "port"}:
        raise _bad(
            source,
            f"{at}.wol",
            f"{wol!r} is not {{address, port}}",
            "e.g. {address: 192.0.2.255, port: 9}",
        )
    address = wol.get("address", "255.255.255.255")
    try:
        address = str(ipaddress.IPv4Address(address))
    except ValueError:
        raise _bad(
            source,
            f"{at}.wol.address",
            f"{address!r} is not an IPv4 address",
            "the LAN's broadcast address, e.g. 192.0.2.255",
        ) from None
    port = wol.get("port", 9)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _bad(source, f"{at}.wol.port", f"{port!r} is not a port", "9 (discard) or 7 (echo)")
    checked = cast(Literal["standby", "desktop", "cloud", "hosted"], kind)  # one of KINDS
    return PoolConfig(
        name=name,
        kind=checked,
        group=group,
        min=floor,
        max=ceiling,
        hourly_usd=price,
        start_s=start,
        scale_to_zero=zero,
        windows=windows,
        available=available,
        timezone=zone,
        wol_address=address,
        wol_port=port,
        backends=tuple(backends),
        instance_type=instance_type,
    )


def availability(source: str, name: str, entries: Any) -> tuple[Window, ...]:
    """A desktop's availability windows: a list of ``"DAYS HH:MM-HH:MM"``."""
    if not isinstance(entries, list):
        raise _bad(
            source, name, "is not a list", 'e.g. ["mon-fri 19:00-07:00", "sat,sun 00:00-24:00"]'
        )
    return tuple(
        window(source, f"{name}[{i}]", {"when": w, "min": 0}, 0) for i, w in enumerate(entries)
    )


def timezone(source: str, name: str, value: Any) -> str:
    """An IANA time zone name ("" for the controller's own)."""
    if value in ("", None):
        return ""
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad(
            source, name, f"{value!r} is not a time zone", "an IANA name, e.g. Europe/Lisbon"
        ) from None
    return str(value)


def check_desktop_host(
    host: str, variables: Mapping[str, Any]
) -> tuple[str | None, tuple[Window, ...] | None, str]:
    """A desktop host's desktop_mac, desktop_windows (None: the pool's) and
    desktop_timezone, checked; errors name the host and the variable."""
    source = f"host {host}"
    mac = variables.get("desktop_mac")
    if mac is not None and (not isinstance(mac, str) or not MAC.match(mac)):
        raise _bad(source, "desktop_mac", f"{mac!r} is not a MAC address", "e.g. 3c:7c:3f:12:34:56")
    windows = variables.get("desktop_windows")
    parsed = availability(source, "desktop_windows", windows) if windows is not None else None
    zone = timezone(source, "desktop_timezone", variables.get("desktop_timezone", ""))
    return (mac.lower().replace("-", ":") if isinstance(mac, str) else None), parsed, zone


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
    groups = [p.group for p in parsed if p.kind != "hosted"]
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
    for name in SHARES:
        value = variables.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise _bad(
                source,
                name,
                f"{value!r} is not a share from 0 to 1",
                "e.g. 0.9, or 0 to not read it",
            )
        numbers[name.removeprefix("autoscale_")] = float(value)
    healing = variables.get("autoscale_healing") or []
    if (
        not isinstance(healing, list)
        or not set(healing) <= set(HEALING)
        or len(set(healing)) != len(healing)
    ):
        raise _bad(source, "autoscale_healing", f"{healing!r} is not a list of healing steps",
                   f"some of {', '.join(HEALING)}, each once, e.g. [reload, restart]")  # fmt: skip
    ordered = tuple(step for step in HEALING if step in healing)
    return AutoscaleConfig(pools=parsed, healing=ordered, **numbers)
