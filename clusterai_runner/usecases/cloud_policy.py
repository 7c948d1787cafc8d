"""Cloud burst's rules as pure functions: the configuration's checks, the spend caps,
the accrued cost, and what reconcile does with each instance it finds.

Nothing here calls the cloud or opens the store, so every rule is tested with plain
records and a fixed clock; ``usecases/cloud.py`` applies them through the AWS adapter.
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clusterai_runner.errors import UsageError
from clusterai_runner.store import LIVE_STATES, CloudInstance

REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
SSM_AMI = re.compile(r"^resolve:ssm:(/[A-Za-z0-9_./-]+)$")
SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
TAG_KEY = re.compile(r"^[A-Za-z0-9 _.:/=+@-]{1,128}$")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
# Where a worker asks for its instance metadata.
METADATA_URL = re.compile(r"^https?://([A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(:\d{1,5})?$")
DEFAULT_METADATA_URL = "http://169.254.169.254"
# The tags every instance carries; an inventory's cloud_tags cannot replace them.
OWN_TAG_PREFIX = "clusterai:"
CREATED_BY = "clusterai"
# A launch whose RunInstances call may have reached the cloud is not closed for this
# long after its intent, whatever a listing says: the cloud's list lags behind a create.
GRACE_S = 120.0


@dataclass(frozen=True)
class CloudConfig:
    """The inventory's ``cloud_*`` variables, checked."""

    cluster: str
    region: str
    ami: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    prices: dict[str, float]
    default_type: str
    max_instances: int
    cap_hourly_usd: float
    cap_monthly_usd: float
    ssh_user: str = "admin"
    key_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metadata_url: str = DEFAULT_METADATA_URL  # as the workers reach it

    @property
    def ssm_parameter(self) -> str | None:
        """The SSM public parameter that names the AMI, when ``cloud_ami`` is one."""
        match = SSM_AMI.match(self.ami)
        return match.group(1) if match else None

    def tags_for(self, intent: str, host: str) -> dict[str, str]:
        return {
            **self.tags,
            "Name": f"{self.cluster}-{host}",
            f"{OWN_TAG_PREFIX}cluster": self.cluster,
            f"{OWN_TAG_PREFIX}intent": intent,
            f"{OWN_TAG_PREFIX}role": "worker",
            f"{OWN_TAG_PREFIX}created-by": CREATED_BY,
        }


def _bad(source: str, name: str, why: str, fix: str) -> UsageError:
    return UsageError(f"{source}: {name}", why, fix)


def _number(source: str, name: str, value: Any, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _bad(source, name, f"{value!r} is not a positive number", fix)
    return float(value)


def cloud_config(variables: Mapping[str, Any], source: str, control_host: str) -> CloudConfig:
    """Check the ``cloud_*`` variables an inventory gives its ``cloud`` group; raise one
    UsageError naming the first bad variable (``source`` says where they come from)."""

    def required(name: str, fix: str) -> Any:
        if variables.get(name) in (None, "", [], {}):
            raise _bad(source, name, "is not set", fix)
        return variables[name]

    def matching(name: str, pattern: re.Pattern[str], fix: str) -> str:
        value = required(name, fix)
        if not isinstance(value, str) or not pattern.match(value):
            raise _bad(source, name, f"{value!r} is not valid", fix)
        return value

    region = matching("cloud_region", REGION, "e.g. eu-west-1")
    ami = required("cloud_ami", "an AMI id (ami-...) or resolve:ssm:/aws/service/debian/...")
    if not isinstance(ami, str) or not (AMI.match(ami) or SSM_AMI.match(ami)):
        raise _bad(
            source,
            "cloud_ami",
            f"{ami!r} is neither an AMI id nor resolve:ssm:PARAMETER",
            "e.g. resolve:ssm:/aws/service/debian/release/bookworm/latest/amd64",
        )
    subnet = matching("cloud_subnet_id", SUBNET, "the subnet the workers start in, subnet-...")
    groups = required("cloud_security_group_ids", "a list of security group ids, sg-...")
    if not isinstance(groups, list) or not all(
        isinstance(g, str) and GROUP.match(g) for g in groups
    ):
        raise _bad(
            source,
            "cloud_security_group_ids",
            f"{groups!r} is not a list of sg-... ids",
            "e.g. [sg-0123456789abcdef0]",
        )
    types = required(
        "cloud_instance_types", "a mapping of instance type to its hourly price in USD"
    )
    if not isinstance(types, dict):
        raise _bad(source, "cloud_instance_types", "is not a mapping", "e.g. {g5.xlarge: 1.006}")
    prices: dict[str, float] = {}
    for name, price in types.items():
        if not isinstance(name, str) or not INSTANCE_TYPE.match(name):
            raise _bad(
                source,
                "cloud_instance_types",
                f"{name!r} is not an instance type",
                "e.g. g5.xlarge",
            )
        prices[name] = _number(
            source,
            f"cloud_instance_types.{name}",
            price,
            "its on-demand price per hour in USD, e.g. 1.006",
        )
    default_type = variables.get("cloud_default_instance_type") or next(iter(prices))
    if default_type not in prices:
        raise _bad(
            source,
            "cloud_default_instance_type",
            f"{default_type!r} is not in cloud_instance_types",
            f"one of {', '.join(prices)}",
        )
    maximum = required("cloud_max_instances", "how many cloud workers may run at once, e.g. 4")
    if isinstance(maximum, bool) or not isinstance(maximum, int) or maximum < 1:
        raise _bad(
            source,
            "cloud_max_instances",
            f"{maximum!r} is not a whole number of 1 or more",
            "e.g. 4",
        )
    hourly = _number(
        source,
        "cloud_spend_cap_hourly_usd",
        required("cloud_spend_cap_hourly_usd", "e.g. 10"),
        "e.g. 10",
    )
    monthly = _number(
        source,
        "cloud_spend_cap_monthly_usd",
        required("cloud_spend_cap_monthly_usd", "e.g. 1000"),
        "e.g. 1000",
    )
    tags = variables.get("cloud_tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and TAG_KEY.match(k) and isinstance(v, str) for k, v in tags.items()
    ):
        raise _bad(
            source, "cloud_tags", "is not a mapping of tag names to strings", "e.g. {team: ml}"
        )
    own = [k for k in tags if k.startswith(OWN_TAG_PREFIX) or k == "Name"]
    if own:
        raise _bad(
            source,
            f"cloud_tags.{own[0]}",
            "is a tag clusterai sets itself",
            f"drop it; tags starting with {OWN_TAG_PREFIX} and Name are clusterai's",
        )
    cluster = variables.get("cloud_cluster_name") or control_host.lower()
    if not isinstance(cluster, str) or not NAME.match(cluster):
        raise _bad(
            source,
            "cloud_cluster_name",
            f"{cluster!r} is not a valid name",
            "lower-case letters, digits and '-', up to 40",
        )
    user = variables.get("cloud_ssh_user") or "admin"
    if not isinstance(user, str) or not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", user):
        raise _bad(
            source,
            "cloud_ssh_user",
            f"{user!r} is not a user name",
            "the AMI's login user, e.g. admin for Debian",
        )
    key_name = variables.get("cloud_key_name")
    if key_name is not None and (not isinstance(key_name, str) or not key_name.strip()):
        raise _bad(
            source,
            "cloud_key_name",
            f"{key_name!r} is not a key pair name",
            "leave it out, or name an EC2 key pair",
        )
    metadata = variables.get("cloud_metadata_url") or DEFAULT_METADATA_URL
    if not isinstance(metadata, str) or not METADATA_URL.match(metadata):
        raise _bad(
            source,
            "cloud_metadata_url",
            f"{metadata!r} is not a base URL",
            f"leave it out (EC2's is {DEFAULT_METADATA_URL}), or give http://HOST[:PORT]",
        )
    return CloudConfig(
        cluster=cluster,
        region=region,
        ami=ami,
        subnet_id=subnet,
        security_group_ids=tuple(groups),
        prices=prices,
        default_type=default_type,
        max_instances=maximum,
        cap_hourly_usd=hourly,
        cap_monthly_usd=monthly,
        ssh_user=user,
        key_name=key_name,
        tags=dict(tags),
        metadata_url=metadata,
    )


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def hours_between(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds() / 3600.0)


def instance_cost(record: CloudInstance, now: datetime, since: datetime | None = None) -> float:
    """What an instance has cost from its launch (or ``since``) to its end (or ``now``),
    at its recorded hourly price. An intent that never launched cost nothing."""
    if record.launched_at is None:
        return 0.0
    start = _at(record.launched_at)
    if since is not None and since > start:
        start = since
    end = _at(record.ended_at) if record.ended_at else now
    return round(hours_between(start, end) * record.hourly_usd, 6)


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def hours_left_in_month(now: datetime) -> float:
    days = calendar.monthrange(now.year, now.month)[1]
    end = month_start(now).replace(day=days, hour=23, minute=59, second=59)
    return hours_between(now, end) + 1 / 3600


@dataclass(frozen=True)
class Spend:
    hourly_now: float  # the hourly price of every instance that may be running
    month_to_date: float  # accrued this calendar month (UTC)
    total: float  # accrued over every record


def spend(records: Iterable[CloudInstance], now: datetime) -> Spend:
    records = list(records)
    live = [r for r in records if r.state in LIVE_STATES and r.ended_at is None]
    return Spend(
        hourly_now=round(sum(r.hourly_usd for r in live), 6),
        month_to_date=round(sum(instance_cost(r, now, month_start(now)) for r in records), 6),
        total=round(sum(instance_cost(r, now) for r in records), 6),
    )


def check_launch(
    config: CloudConfig,
    records: Iterable[CloudInstance],
    count: int,
    instance_type: str,
    now: datetime,
) -> float:
    """Refuse a launch of ``count`` more ``instance_type`` workers that passes the maximum
    count or a spend cap, with the figures; return its hourly price."""
    if count < 1:
        raise UsageError("--count", f"{count} is not 1 or more", "e.g. --count 2")
    if instance_type not in config.prices:
        raise UsageError(
            f"--type {instance_type}",
            "is not in the inventory's cloud_instance_types",
            f"one of {', '.join(config.prices)}, or add it with its price",
        )
    records = list(records)
    live = [r for r in records if r.state in LIVE_STATES]
    if len(live) + count > config.max_instances:
        raise UsageError(
            f"--count {count}",
            f"{len(live)} cloud workers exist and cloud_max_instances is {config.max_instances}",
            f"launch at most {max(0, config.max_instances - len(live))}, or raise the maximum",
        )
    price = config.prices[instance_type]
    current = spend(records, now)
    hourly = current.hourly_now + count * price
    if hourly > config.cap_hourly_usd:
        raise UsageError(
            "cloud up",
            f"{count} x {instance_type} at ${price:.4f}/h would make ${hourly:.4f}/h, over "
            f"cloud_spend_cap_hourly_usd ${config.cap_hourly_usd:.2f}/h "
            f"(running now: ${current.hourly_now:.4f}/h)",
            "launch fewer or cheaper workers, or raise the cap",
        )
    projected = current.month_to_date + hourly * hours_left_in_month(now)
    if projected > config.cap_monthly_usd:
        raise UsageError(
            "cloud up",
            f"${current.month_to_date:.2f} spent this month, and ${hourly:.4f}/h until the "
            f"month ends makes ${projected:.2f}, over cloud_spend_cap_monthly_usd "
            f"${config.cap_monthly_usd:.2f}",
            "launch fewer or cheaper workers, or raise the cap",
        )
    return price


@dataclass(frozen=True)
class SeenInstance:
    """An instance the cloud lists with this cluster's tag."""

    instance_id: str
    state: str  # pending, running, shutting-down, terminated, stopping, stopped
    intent: str | None
    address: str | None
    launched_at: str | None


# A record's states between two commands' steps: met by reconcile, the command is gone.
HALF_WAY = ("launched", "running", "draining", "terminating")


@dataclass(frozen=True)
class ReconcileAction:
    kind: str  # terminate, adopt, close, ended
    intent: str | None
    instance_id: str | None
    reason: str


def reconcile_plan(
    records: Iterable[CloudInstance],
    seen: Iterable[SeenInstance],
    now: datetime,
    adopt: bool = False,
    grace_s: float = GRACE_S,
) -> list[ReconcileAction]:
    """What reconcile does: instances tagged for the cluster that the store does not know,
    or knows as failed or ended, are terminated (or adopted); so are those whose record
    stopped half way (launched, running, draining, terminating: reconcile runs only while
    no other cloud command does, so the command that was moving it is gone); records whose
    instance the cloud shows terminated are ended; intents older than ``grace_s`` with no
    instance are closed (their call never created one)."""
    by_intent = {r.intent: r for r in records}
    by_id = {r.instance_id: r for r in by_intent.values() if r.instance_id}
    actions: list[ReconcileAction] = []
    matched: set[str] = set()
    for instance in seen:
        record = by_id.get(instance.instance_id) or (
            by_intent.get(instance.intent) if instance.intent else None
        )
        if record is not None:
            matched.add(record.intent)
        gone = instance.state in ("shutting-down", "terminated")
        if record is None:
            if gone:
                continue
            kind = "adopt" if adopt else "terminate"
            actions.append(
                ReconcileAction(
                    kind,
                    instance.intent,
                    instance.instance_id,
                    "tagged for this cluster, unknown to the store",
                )
            )
            continue
        if gone:
            if record.state not in ("terminated", "closed"):
                actions.append(
                    ReconcileAction(
                        "ended",
                        record.intent,
                        instance.instance_id,
                        f"the cloud shows it {instance.state}",
                    )
                )
            continue
        if record.state in ("failed", "terminated", "closed"):
            reason = f"the store has it {record.state}"
        elif record.state in HALF_WAY or record.instance_id is None:
            reason = f"left {record.state} by a cloud command that is no longer running"
        else:
            continue
        actions.append(ReconcileAction("terminate", record.intent, instance.instance_id, reason))
    for record in by_intent.values():
        if record.intent in matched or record.state not in LIVE_STATES:
            continue
        age = (now - _at(record.created_at)).total_seconds()
        if record.instance_id is None:
            if age >= grace_s:
                actions.append(
                    ReconcileAction("close", record.intent, None, "no instance carries its intent")
                )
        elif age >= grace_s:
            actions.append(
                ReconcileAction(
                    "ended", record.intent, record.instance_id, "the cloud no longer lists it"
                )
            )
    return actions


@dataclass(frozen=True)
class SpotNotice:
    """A spot instance's interruption notice: what EC2 will do to it, and when."""

    action: str  # terminate, stop or hibernate
    time: str  # ISO 8601, UTC

    def __str__(self) -> str:
        return f"spot interruption notice: {self.action} at {self.time}"


def spot_notice(output: str) -> SpotNotice | None:
    """The answer of the metadata's ``spot/instance-action`` as the worker's check prints
    it (the body, then the HTTP status on the last line): None while there is no notice
    (404); ValueError for anything else."""
    body, _, status = output.rstrip("\n").rpartition("\n")
    if status == "404":
        return None
    if status != "200":
        raise ValueError(f"the metadata service answered {status or 'nothing'}")
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        raise ValueError(f"spot/instance-action is not JSON: {body[:80]!r}") from None
    action, when = (
        (document.get("action"), document.get("time"))
        if isinstance(document, dict)
        else (None, None)
    )
    if action not in ("terminate", "stop", "hibernate") or not isinstance(when, str):
        raise ValueError(f"spot/instance-action holds no action and time: {body[:80]!r}")
    return SpotNotice(action, when)


def utc_now() -> datetime:
    return datetime.now(UTC)
