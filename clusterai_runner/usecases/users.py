"""The web app's accounts: added, listed, removed, and a login checked against them.

Passwords are hashed with Argon2id (argon2-cffi's defaults: 64 MiB, 3 passes), a
memory-hard KDF. Ten wrong passwords in a row lock the account for 15 minutes; a login
during the lock is refused without checking the password, so guessing gains nothing.
Every login, good or bad, goes to the audit table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from clusterai_runner.config import Settings, using_store
from clusterai_runner.errors import UsageError

if TYPE_CHECKING:
    from clusterai_runner.store import Store, User

ROLES = ("admin", "viewer")
NAME_FORMAT = re.compile(r"[a-z][a-z0-9._-]{0,63}")
MIN_PASSWORD = 12
LOCK_AFTER = 10
LOCK_FOR = timedelta(minutes=15)

_hasher = PasswordHasher()
# A hash to check a password against when the name is unknown, so that an unknown name
# takes as long to refuse as a wrong password.
_DUMMY = _hasher.hash("clusterai: no such user")


def check_new(name: str, role: str, password: str) -> None:
    if not NAME_FORMAT.fullmatch(name):
        raise UsageError(
            f"user name {name!r}", "is not valid", "use lower-case letters, digits, . _ -"
        )
    if role not in ROLES:
        raise UsageError(f"--role {role}", "is not a role", f"use one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UsageError(
            f"the password of {name}",
            f"is shorter than {MIN_PASSWORD} characters",
            "choose a longer one",
        )


def add(
    settings: Settings, name: str, role: str, password: str, store: Store | None = None
) -> None:
    check_new(name, role, password)
    with using_store(settings, store) as opened:
        opened.add_user(name, role, _hasher.hash(password))


def set_password(settings: Settings, name: str, password: str, store: Store | None = None) -> None:
    if len(password) < MIN_PASSWORD:
        raise UsageError(
            f"the password of {name}",
            f"is shorter than {MIN_PASSWORD} characters",
            "choose a longer one",
        )
    with using_store(settings, store) as opened:
        if not opened.set_password(name, _hasher.hash(password)):
            raise UsageError(f"user {name}", "no such user", "see `clusterai web users list`")


def list_users(settings: Settings, store: Store | None = None) -> list[User]:
    with using_store(settings, store) as opened:
        return opened.users()


def remove(settings: Settings, name: str, store: Store | None = None) -> None:
    with using_store(settings, store) as opened:
        if not opened.remove_user(name):
            raise UsageError(f"user {name}", "no such user", "see `clusterai web users list`")


@dataclass(frozen=True)
class Login:
    """How a login ended: ``user`` when it passed, else why not (for the page)."""

    user: User | None
    reason: str = ""


def login(store: Store, name: str, password: str, address: str = "") -> Login:
    """Check ``password`` for ``name``, counting failures and honouring a lock."""
    user = store.user(name)
    moment = datetime.now(UTC)
    if (
        user is not None
        and user.locked_until
        and moment < datetime.fromisoformat(user.locked_until)
    ):
        store.add_audit(name, "login", outcome="refused", detail="locked", address=address)
        return Login(None, f"too many wrong passwords: try again after {user.locked_until}")
    try:
        _hasher.verify(user.password_hash if user else _DUMMY, password)
        good = user is not None
    except (VerificationError, InvalidHashError):
        good = False
    if not good or user is None:
        detail = "wrong password" if user else "no such user"
        if user is not None:
            lock_until = (moment + LOCK_FOR).isoformat(timespec="seconds")
            count = store.failed_login(name, LOCK_AFTER, lock_until)
            if count >= LOCK_AFTER:
                detail += f"; locked until {lock_until}"
        store.add_audit(name, "login", outcome="refused", detail=detail, address=address)
        return Login(None, "wrong user name or password")
    store.good_login(name)
    if _hasher.check_needs_rehash(user.password_hash):
        store.set_password(name, _hasher.hash(password))
    store.add_audit(name, "login", address=address)
    return Login(user)


def ensure(
    settings: Settings, name: str, role: str, password: str, store: Store | None = None
) -> bool:
    """Make ``name`` an account with this role and password (the web role's admin, from
    the vault); False when it already was one. A login's lockout is left as it is."""
    check_new(name, role, password)
    with using_store(settings, store) as opened:
        user = opened.user(name)
        if user is None:
            opened.add_user(name, role, _hasher.hash(password))
            return True
        try:
            same: bool = _hasher.verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            same = False
        if same and user.role == role:
            return False
        if not same:
            opened.set_password(name, _hasher.hash(password))
        if user.role != role:
            opened.set_role(name, role)
        return True
