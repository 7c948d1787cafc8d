"""The gateway's API keys: created (shown once), listed, revoked; kept hashed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import UsageError
from clusterai_runner.gateway.keys import NAME_FORMAT, create_key, new_key

if TYPE_CHECKING:
    from clusterai_runner.store import ApiKey, Store


def create(
    settings: Settings,
    name: str,
    admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
    tenant: bool = False,
    store: Store | None = None,
) -> str:
    """A new key named ``name``; the key is returned once and only its hash is kept."""
    if not NAME_FORMAT.fullmatch(name):
        raise UsageError(f"key name {name!r}", "is not valid", "use letters, digits, . _ -")
    with using_store(settings, store) as opened:
        return create_key(opened, name, admin, rpm, tpm, tenant)


def generate() -> str:
    """A fresh key that is not stored: for a vault file (the gateway role's keys)."""
    return new_key()[0]


def list_keys(settings: Settings, store: Store | None = None) -> list[ApiKey]:
    with using_store(settings, store) as opened:
        return opened.list_keys()


def revoke(settings: Settings, name: str, store: Store | None = None) -> None:
    with using_store(settings, store) as opened:
        revoked = opened.revoke_key(name)
    if not revoked:
        raise UsageError(
            f"key {name}", "no active key of that name", "see `clusterai gateway keys list`"
        )
