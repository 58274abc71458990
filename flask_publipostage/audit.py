"""Audit trail: who produced which credentials, when, for which selection.

Rows are added to the caller's session so they commit in the same transaction as
the action they record. They never hold an activation code.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, utcnow
from .selection import Selection
from .state import state


class AuditEntry(Base):
    __tablename__ = "publipostage_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200))
    scope_key: Mapped[str] = mapped_column(sa.String(200), index=True)
    #: "pdf", "csv" or "mail".
    action: Mapped[str] = mapped_column(sa.String(20))
    selection: Mapped[str] = mapped_column(sa.Text)
    template: Mapped[str | None] = mapped_column(sa.String(40))
    count: Mapped[int] = mapped_column(default=0)
    result: Mapped[str] = mapped_column(sa.String(200), default="ok")

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))


def record(
    action: str,
    selection: Selection,
    count: int,
    *,
    template: str | None = None,
    result: str = "ok",
) -> AuditEntry:
    """Add an audit row to the current session (the caller commits)."""
    assert selection.scope is not None
    entry = AuditEntry(
        actor=selection.scope.actor,
        scope_key=selection.scope.key,
        action=action,
        selection=json.dumps(selection.to_dict(), sort_keys=True),
        template=template,
        count=count,
        result=result,
    )
    state().session.add(entry)
    return entry


def visible_entries(scope: Any, limit: int = 200) -> sa.Select[Any]:
    stmt = sa.select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
    if not scope.is_global:
        stmt = stmt.where(AuditEntry.scope_key == scope.key)
    return stmt.limit(limit)
