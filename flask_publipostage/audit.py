"""Audit trail: who produced which credentials, when, for which selection, and
what became of each run (stopped, resumed, taken over, its file downloaded).

Rows are written in the same transaction as the action they record: outputs
started in a request add theirs to the caller's session (:func:`record`), the
lifecycle of a run (:mod:`flask_publipostage.runs.core`, :mod:`~flask_publipostage.runs.files`)
writes on the connection of its own change (:func:`record_run`). They never hold
an activation code.

Who reads a row: the admins of the perimeter it was recorded in (``scope_key``),
every row for a super admin, and an admin of another perimeter whose accounts it
concerns (a super admin's or a class teacher's print for a school shows in that
school's journal, marked as such): the accounts are the run's items, or, for a
CSV export or a sample, the row's own :class:`AuditAccount` rows. A class teacher
reads their own rows only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .access import TEACHER, Scope
from .i18n import lazy_gettext as _l
from .models import Base, utcnow
from .runs.models import Run, RunItem
from .selection import Selection
from .state import state

#: Who acts when no admin does: the command line (``flask publipostage resume``,
#: ``cancel``), or a process taking over a run whose driver went silent.
COMMAND_LINE = "command-line"
AUTOMATIC = "automatic"


class AuditEntry(Base):
    __tablename__ = "publipostage_audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: ``Scope.actor``, or :data:`COMMAND_LINE` / :data:`AUTOMATIC`.
    actor: Mapped[str] = mapped_column(sa.String(200))
    #: How the admin is named to people (``Scope.actor_name``); NULL: ``actor``.
    actor_name: Mapped[str | None] = mapped_column(sa.String(200))
    scope_key: Mapped[str] = mapped_column(sa.String(200), index=True)
    #: ``Scope.audience`` of the admin (``"teacher"``: a class teacher); NULL: none.
    audience: Mapped[str | None] = mapped_column(sa.String(20))
    #: One of :data:`ACTIONS`.
    action: Mapped[str] = mapped_column(sa.String(20))
    selection: Mapped[str] = mapped_column(sa.Text)
    template: Mapped[str | None] = mapped_column(sa.String(40))
    count: Mapped[int] = mapped_column(default=0)
    #: "ok", or "sample" for a sample sent to the admin.
    result: Mapped[str] = mapped_column(sa.String(200), default="ok")
    #: The run (a PDF file, a campaign) the row is about.
    run_id: Mapped[int | None] = mapped_column(index=True)
    #: The PDF file's name, for a row about a PDF run (its download, say).
    file_name: Mapped[str | None] = mapped_column(sa.String(200))

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))

    @property
    def who(self) -> str:
        if self.actor in ACTORS:
            return str(ACTORS[self.actor])
        return self.actor_name or self.actor

    @property
    def output(self) -> str:
        """What was done, in words ("Lettres, 1 par page", "Téléchargement du PDF")."""
        label = ACTIONS.get(self.action)
        if self.action == "pdf":
            label = PDF_TEMPLATES.get(self.template or "", label)
        return str(label or self.action)

    @property
    def is_campaign(self) -> bool:
        return self.run_id is not None and (self.action == "mail" or self.template == "mail")

    @property
    def outcome(self) -> str:
        """The result, in words: the campaign, the file."""
        if self.is_campaign:
            return str(_l("Campaign %(id)d", id=self.run_id))
        if self.run_id is not None and self.action == "csv":
            return str(RESULTS["ok"])  # a CSV export, recorded as a run (its items)
        if self.run_id is not None:
            return self.file_name if self.file_name and self.action != "pdf" else str(_l("File prepared"))
        return str(RESULTS.get(self.result, self.result))

    def mark(self, viewer: Scope) -> str:
        """Why a row of another perimeter shows in the viewer's journal ("super
        administrateur", "enseignant"); empty for the viewer's own rows."""
        if viewer.is_global or self.scope_key == viewer.key:
            return ""
        if self.scope_key == "*":
            return str(_l("super admin"))
        if self.audience == TEACHER:
            return str(_l("class teacher"))
        return str(_l("another perimeter"))


class AuditAccount(Base):
    """An account a row without a run concerns (a CSV export, a sample): what
    shows the row to the admins of that account's perimeter."""

    __tablename__ = "publipostage_audit_account"

    audit_id: Mapped[int] = mapped_column(sa.ForeignKey("publipostage_audit.id", ondelete="CASCADE"), primary_key=True)
    #: The host's user id, as text (no foreign key to the host's tables).
    user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)


audit_t = cast(sa.Table, AuditEntry.__table__)
account_t = cast(sa.Table, AuditAccount.__table__)

#: What the journal records, as the admin reads it (also its filter ``output``).
ACTIONS = {
    "pdf": _l("PDF"),
    "csv": _l("CSV export"),
    "mail": _l("Email campaign"),
    "mail_sample": _l("Email sample"),
    "download": _l("PDF download"),
    "cancel": _l("Stop"),
    "resume": _l("Resumption"),
    "takeover": _l("Take-over after an interruption"),
}
PDF_TEMPLATES = {"letter": _l("Letters, 1 per page"), "cards": _l("Cards, 8 per page")}
RESULTS = {"ok": _l("Done"), "sample": _l("Sent to yourself")}
ACTORS = {COMMAND_LINE: _l("Command line"), AUTOMATIC: _l("Automatic")}


def record(
    action: str,
    selection: Selection,
    count: int,
    *,
    template: str | None = None,
    result: str = "ok",
    run_id: int | None = None,
    accounts: sa.Select[Any] | None = None,
) -> AuditEntry:
    """Add an audit row to the current session (the caller commits).
    ``accounts``: the host user ids (text) a row without a run concerns."""
    scope = selection.scope
    assert scope is not None
    session = state().session
    entry = AuditEntry(
        **_who(scope, scope.key),
        action=action,
        selection=json.dumps(selection.to_dict(), sort_keys=True),
        template=template,
        count=count,
        result=result,
        run_id=run_id,
    )
    session.add(entry)
    if accounts is not None:
        session.flush()
        ids = accounts.subquery()
        session.execute(
            sa.insert(AuditAccount).from_select(
                ["audit_id", "user_id"], sa.select(sa.literal(entry.id, sa.Integer), ids.c[0]).distinct()
            )
        )
    return entry


def selected_accounts(selection: Selection) -> sa.Select[Any]:
    """The host user ids (text) of ``selection``, for :func:`record`'s ``accounts``."""
    host = state().host
    return sa.select(sa.cast(host.user_id, sa.String)).select_from(host.user_model).where(*selection.conditions(host))


def record_run(conn: sa.Connection, action: str, run: Run, by: Scope | str) -> None:
    """A row about ``run`` (stopped, resumed, taken over, downloaded) on ``conn``,
    in the transaction of the change it records. ``by``: the admin's scope, or
    :data:`COMMAND_LINE` / :data:`AUTOMATIC` (then filed under the run's perimeter)."""
    # Accounts, not sheets: with a bundle for every class an account has several.
    items = RunItem.__table__.c
    count = conn.execute(sa.select(sa.func.count(sa.distinct(items.user_id))).where(items.run_id == run.id)).scalar()
    options = run.options_dict
    conn.execute(
        sa.insert(audit_t).values(
            created_at=utcnow(),
            **_who(by, run.scope_key),
            action=action,
            selection=run.selection,
            template=options.get("template", run.kind),
            count=int(count or 0),
            result="ok",
            run_id=run.id,
            file_name=None if run.kind == "mail" else run.file_name[:200],
        )
    )


def _who(by: Scope | str, scope_key: str) -> dict[str, Any]:
    if isinstance(by, str):
        return {"actor": by, "actor_name": None, "scope_key": scope_key, "audience": None}
    return {"actor": by.actor, "actor_name": by.actor_name[:200] or None, "scope_key": by.key,
            "audience": by.audience}


def visible_to(scope: Scope) -> Any:
    """The condition on rows the admin of ``scope`` reads: their perimeter's, and,
    for an admin, those of other perimeters concerning accounts of theirs."""
    own = AuditEntry.scope_key == scope.key
    if scope.audience == TEACHER or scope.users is None:
        return own
    host = state().host
    theirs = sa.select(sa.cast(host.user_id, sa.String)).select_from(host.user_model).where(scope.users)
    item = RunItem.__table__.c
    by_run = sa.select(item.id).where(item.run_id == AuditEntry.run_id, item.user_id.in_(theirs)).exists()
    by_account = sa.select(account_t.c.audit_id).where(
        account_t.c.audit_id == AuditEntry.id, account_t.c.user_id.in_(theirs)
    ).exists()
    return sa.or_(own, sa.and_(AuditEntry.run_id.is_not(None), by_run), by_account)


def visible_entries(
    scope: Any, *, action: str | None = None, since: datetime | None = None, until: datetime | None = None
) -> sa.Select[Any]:
    """The rows the admin of ``scope`` may read (:func:`visible_to`; every row for
    a super admin), newest first, of one action and between two moments if asked."""
    stmt = sa.select(AuditEntry).order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
    if not scope.is_global:
        stmt = stmt.where(visible_to(scope))
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if since is not None:
        stmt = stmt.where(AuditEntry.created_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.created_at < until)
    return stmt
