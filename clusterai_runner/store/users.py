"""The web app's accounts (a password hash, never the password) and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from clusterai_runner.errors import StoreError
from clusterai_runner.store.base import StoreBase, now
from clusterai_runner.store.schema import audit, users


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    password_hash: str
    created_at: str
    failed_logins: int
    locked_until: str | None
    last_login_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "failed_logins": self.failed_logins,
            "locked_until": self.locked_until,
            "last_login_at": self.last_login_at,
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    user: str
    action: str
    target: str
    outcome: str
    detail: str
    address: str


class UserRecords(StoreBase):
    def add_user(self, name: str, role: str, password_hash: str) -> None:
        with self._begin() as connection:
            taken = connection.execute(sa.select(users.c.id).where(users.c.name == name)).first()
            if taken is not None:
                raise StoreError(f"user {name}", "a user of that name exists", "pick another name")
            connection.execute(
                users.insert().values(
                    name=name, role=role, password_hash=password_hash, created_at=now(),
                    failed_logins=0,
                )
            )  # fmt: skip

    def user(self, name: str) -> User | None:
        with self._begin() as connection:
            row = connection.execute(sa.select(users).where(users.c.name == name)).first()
        return User(**row._asdict()) if row else None

    def users(self) -> list[User]:
        with self._begin() as connection:
            rows = connection.execute(sa.select(users).order_by(users.c.name)).all()
        return [User(**r._asdict()) for r in rows]

    def set_password(self, name: str, password_hash: str) -> bool:
        """A new password hash; it also ends a lockout. False when there is no such user."""
        with self._begin() as connection:
            result = connection.execute(
                users.update()
                .where(users.c.name == name)
                .values(password_hash=password_hash, failed_logins=0, locked_until=None)
            )
        return bool(result.rowcount)

    def set_role(self, name: str, role: str) -> bool:
        with self._begin() as connection:
            result = connection.execute(
                users.update().where(users.c.name == name).values(role=role)
            )
        return bool(result.rowcount)

    def remove_user(self, name: str) -> bool:
        with self._begin() as connection:
            result = connection.execute(users.delete().where(users.c.name == name))
        return bool(result.rowcount)

    def failed_login(self, name: str, lock_after: int, lock_until: str) -> int:
        """Count one wrong password in the same transaction that reads the count; the
        ``lock_after``-th in a row sets ``locked_until``. The new count (0: no such user)."""
        with self._begin() as connection:
            row = connection.execute(
                sa.select(users.c.failed_logins).where(users.c.name == name).with_for_update()
            ).first()
            if row is None:
                return 0
            count = int(row[0]) + 1
            values: dict[str, Any] = {"failed_logins": count}
            if count >= lock_after:
                values.update(failed_logins=0, locked_until=lock_until)
            connection.execute(users.update().where(users.c.name == name).values(**values))
        return count

    def good_login(self, name: str) -> None:
        with self._begin() as connection:
            connection.execute(
                users.update()
                .where(users.c.name == name)
                .values(failed_logins=0, locked_until=None, last_login_at=now())
            )

    def add_audit(
        self,
        user: str,
        action: str,
        target: str = "",
        outcome: str = "ok",
        detail: str = "",
        address: str = "",
    ) -> None:
        with self._begin() as connection:
            connection.execute(
                audit.insert().values(
                    at=now(), user=user, action=action, target=target, outcome=outcome,
                    detail=detail, address=address,
                )
            )  # fmt: skip

    def audit(
        self, limit: int = 200, user: str | None = None, action: str | None = None
    ) -> list[AuditEntry]:
        """The newest entries first."""
        query = sa.select(audit).order_by(audit.c.id.desc()).limit(limit)
        if user:
            query = query.where(audit.c.user == user)
        if action:
            query = query.where(audit.c.action == action)
        with self._begin() as connection:
            rows = connection.execute(query).all()
        return [AuditEntry(**r._asdict()) for r in rows]
