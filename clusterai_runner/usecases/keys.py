"""The gateway's API keys: created (shown once), listed, revoked; kept hashed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterai_runner.config import Settings, open_store
from clusterai_runner.errors import UsageError
from clusterai_runner.gateway.keys import NAME_FORMAT, create_key, new_key

if TYPE_CHECKING:
    from clusterai_runner.store import ApiKey


def create(
    settings: Settings,
    name: str,
    admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
) -> str:
    """A new key named ``name``; the key is returned once and only its hash is kept."""
    if not NAME_FORMAT.fullmatch(name):
        raise UsageError(f"key name {name!r}", "is not valid", "use letters, digits, . _ -")
    return create_key(open_store(settings), name, admin, rpm, tpm)


def generate() -> str:
    """A fresh key that is not stored: for a vault file (the gateway role's keys)."""
    return new_key()[0]


def list_keys(settings: Settings) -> list[ApiKey]:
    return open_store(settings).list_keys()


def revoke(settings: Settings, name: str) -> None:
    if not open_store(settings).revoke_key(name):
        raise UsageError(
            f"key {name}", "no active key of that name", "see `clusterai gateway keys list`"
        )
