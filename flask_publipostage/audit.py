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

from .i18n import lazy_gettext as _l
from .models import Base, utcnow
from .selection import Selection
from .state import state


class AuditEntry(Base):
    __tablename__ = "publipostage_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200))
    #: How the admin is named to people (``Scope.actor_name``); NULL: ``actor``.
    actor_name: Mapped[str | None] = mapped_column(sa.String(200))
    scope_key: Mapped[str] = mapped_column(sa.String(200), index=True)
    #: One of :data:`OUTPUTS`.
    action: Mapped[str] = mapped_column(sa.String(20))
    selection: Mapped[str] = mapped_column(sa.Text)
    template: Mapped[str | None] = mapped_column(sa.String(40))
    count: Mapped[int] = mapped_column(default=0)
    #: "ok", "sample", or "run <id>" for a PDF, a campaign or a CSV export.
    result: Mapped[str] = mapped_column(sa.String(200), default="ok")

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))

    @property
    def who(self) -> str:
        return self.actor_name or self.actor

    @property
    def output(self) -> str:
        """What was produced, in words ("Lettres, 1 par page")."""
        label = OUTPUTS.get(self.action)
        if self.action == "pdf":
            label = PDF_TEMPLATES.get(self.template or "", label)
        return str(label or self.action)

    @property
    def run_id(self) -> int | None:
        kind, _, number = self.result.partition(" ")
        return int(number) if kind == "run" and number.isdigit() else None

    @property
    def outcome(self) -> str:
        """The result, in words."""
        if self.run_id is not None and self.action == "mail":
            return str(_l("Campaign %(id)d", id=self.run_id))
        if self.run_id is not None and self.action == "pdf":
            return str(_l("File prepared"))
        if self.run_id is not None:
            return str(RESULTS["ok"])  # a CSV export, recorded as a run (its items)
        return str(RESULTS.get(self.result, self.result))


#: The outputs the journal records, as the admin reads them.
OUTPUTS = {
    "pdf": _l("PDF"),
    "csv": _l("CSV export"),
    "mail": _l("Email campaign"),
    "mail_sample": _l("Email sample"),
}
PDF_TEMPLATES = {"letter": _l("Letters, 1 per page"), "cards": _l("Cards, 8 per page")}
RESULTS = {"ok": _l("Done"), "sample": _l("Sent to yourself")}


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
        actor_name=selection.scope.actor_name[:200] or None,
        scope_key=selection.scope.key,
        action=action,
        selection=json.dumps(selection.to_dict(), sort_keys=True),
        template=template,
        count=count,
        result=result,
    )
    state().session.add(entry)
    return entry


def visible_entries(
    scope: Any, *, action: str | None = None, since: datetime | None = None, until: datetime | None = None
) -> sa.Select[Any]:
    """The rows the admin of ``scope`` may read, newest first: their perimeter's
    (every row for a super admin), of one output and between two moments if asked."""
    stmt = sa.select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
    if not scope.is_global:
        stmt = stmt.where(AuditEntry.scope_key == scope.key)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if since is not None:
        stmt = stmt.where(AuditEntry.created_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.created_at < until)
    return stmt
