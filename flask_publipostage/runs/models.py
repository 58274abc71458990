"""The tables of runs: one row per distribution, one per account it concerns.

A *run* is a PDF file or an email campaign started by an admin: its selection and
the admin's perimeter frozen when it started, its options, its state. Its *items*
are what it does for the accounts, in print order: one per account, or, in a PDF
with a bundle for every class, one per account and class (a teacher of two classes
has a sheet in both bundles); a campaign never sends an account twice. They
outlive the run, as each account's distribution history (printed, emailed, failed,
when; never a code). A run's counters are always counted from its items.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, utcnow

# Run states.
QUEUED = "queued"
RUNNING = "running"
#: Running, but an outside service (the mail server) does not answer.
WAITING = "waiting"
DONE = "done"
FAILED = "failed"
#: Stopped at once because its settings are wrong (the mail server refused the
#: login): retrying could only lock the account, and nothing was done for any item
#: because of it. It goes on, like a failed run, once resumed.
SUSPENDED = "suspended"
CANCELLED = "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING, WAITING)
#: Stopped, with work left that :func:`~flask_publipostage.runs.core.resume` starts again.
RESUMABLE_STATES = (FAILED, SUSPENDED)

# Item states. ``pending`` and ``sending`` are work left; the others are outcomes.
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
#: Rendered into the run's chunk file; ``printed`` once the whole file exists.
RENDERED = "rendered"
PRINTED = "printed"
#: Written into a CSV export (a run of the ``csv`` kind, done as it starts).
EXPORTED = "exported"
ITEM_FAILED = "failed"
SKIPPED = "skipped"
LEFT_STATES = (PENDING, SENDING)

NAME_LENGTH = 300
EMAIL_LENGTH = 320
REASON_LENGTH = 500
#: Hex digits kept of a code's keyed hash (128 bits).
CODE_HASH_LENGTH = 32


def new_token() -> str:
    """32 URL-safe characters, 192 random bits: the run's private URLs cannot be guessed."""
    return secrets.token_urlsafe(24)


class Run(Base):
    """One PDF file or email campaign."""

    __tablename__ = "publipostage_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Unguessable: the URLs of runs visible to their creator only are built from it.
    token: Mapped[str] = mapped_column(sa.String(64), unique=True, default=new_token)
    #: ``"pdf"`` or ``"mail"``: the :class:`~flask_publipostage.runs.kinds.Kind` running it.
    kind: Mapped[str] = mapped_column(sa.String(20))
    actor: Mapped[str] = mapped_column(sa.String(200), index=True)
    #: How the admin is named to people (``Scope.actor_name``); NULL: ``actor``.
    actor_name: Mapped[str | None] = mapped_column(sa.String(200))
    #: The admin's perimeter (``Scope.key``), for visibility.
    scope_key: Mapped[str] = mapped_column(sa.String(200), index=True)
    school_name: Mapped[str] = mapped_column(sa.String(200), default="")
    #: ``Selection.to_dict()`` as JSON (sorted keys).
    selection: Mapped[str] = mapped_column(sa.Text)
    #: The kind's options as JSON (sorted keys): the PDF template, say.
    options: Mapped[str] = mapped_column(sa.Text, default="{}")
    #: The admin's account perimeter was frozen in ``publipostage_run_perimeter``
    #: (false: nothing to freeze, a global scope).
    scope_users: Mapped[bool] = mapped_column(default=False)
    #: The classes the perimeter allowed (JSON list of ids as text); NULL: every class.
    scope_classes: Mapped[str | None] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(20), default=QUEUED, index=True)
    #: While queued or running: one of the admin's ``MAX_RUNNING_JOBS`` slots for
    #: this kind; NULL afterwards. Unique: two requests cannot take one slot.
    active_key: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    #: Last sign of life of whatever drives the run; a stale one means it died.
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    #: Times another process took the run over after its driver died.
    takeovers: Mapped[int] = mapped_column(default=0)
    finished_at: Mapped[datetime | None] = mapped_column()
    #: Since when the outside service has not answered (state ``waiting``).
    waiting_since: Mapped[datetime | None] = mapped_column()
    #: A short reason for the admin; never personal data or codes.
    last_error: Mapped[str | None] = mapped_column(sa.String(REASON_LENGTH))
    #: The finished file, until it is downloaded or expires.
    file_path: Mapped[str | None] = mapped_column(sa.String(1000))
    file_name: Mapped[str] = mapped_column(sa.String(200), default="publipostage.pdf")
    #: Pages of the finished file.
    pages: Mapped[int | None] = mapped_column()
    #: The first download (claimed before the file is streamed: one download only).
    downloaded_at: Mapped[datetime | None] = mapped_column()

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.options or "{}"))

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def who(self) -> str:
        return self.actor_name or self.actor


#: Items of kind ``email``: one per account and campaign.
_EMAIL = sa.text("kind = 'email'")


#: Items distributed with a code (letters, cards, messages; not CSV rows).
_WITH_CODE = sa.text("code_hmac IS NOT NULL AND distributed_at IS NOT NULL")


class RunItem(Base):
    """One sheet or message of a run, for one account: what was done, when, and why not."""

    __tablename__ = "publipostage_run_item"
    __table_args__ = (
        # One item per place in print order; an account may hold several (a
        # bundle for every class), except in a campaign.
        sa.Index("uq_publipostage_run_item_position", "run_id", "position", unique=True),
        sa.Index("uq_publipostage_run_item_email", "run_id", "user_id", unique=True,
                 sqlite_where=_EMAIL, postgresql_where=_EMAIL),
        # With the position last, "the next N pending rows" and a chunk's range
        # read N index entries.
        sa.Index("ix_publipostage_run_item_state", "run_id", "state", "position"),
        # An account's history; who received their credentials and when last
        # (the ``distributed`` filters and the follow-up read this index alone).
        sa.Index("ix_publipostage_run_item_distributed", "user_id", "distributed_at"),
        # An account's latest distribution that carried a code (the stale-code
        # flag): one entry to read, however many CSV exports (no code) came since.
        sa.Index("ix_publipostage_run_item_code", "user_id", "id", sqlite_where=_WITH_CODE, postgresql_where=_WITH_CODE),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("publipostage_run.id", ondelete="CASCADE"))
    #: The host's user id, as text (no foreign key to the host's tables).
    user_id: Mapped[str] = mapped_column(sa.String(64))
    #: Print order (1-based) in the run.
    position: Mapped[int] = mapped_column()
    #: ``"letter"``, ``"card"``, ``"email"`` or ``"export"`` (a CSV row).
    kind: Mapped[str] = mapped_column(sa.String(20))
    state: Mapped[str] = mapped_column(sa.String(10), default=PENDING)
    #: "First Last" when the run started, for reports (never the code).
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), default="")
    #: The address the message went to (emails).
    email: Mapped[str | None] = mapped_column(sa.String(EMAIL_LENGTH))
    #: The account's group in a PDF, every sort level (:meth:`Selection.numbered`); NULL when none.
    group_key: Mapped[str | None] = mapped_column(sa.String(400))
    #: The PDF chunk rendering it (set when the run is planned).
    chunk: Mapped[int | None] = mapped_column()
    #: Its share of the run's work: pages it adds to a PDF, 1 per message, 0 skipped.
    weight: Mapped[int] = mapped_column(default=1)
    attempts: Mapped[int] = mapped_column(default=0)
    #: The mail server's answer (or our own reason) for a failure or a skip.
    reason: Mapped[str | None] = mapped_column(sa.String(REASON_LENGTH))
    #: When it was sent, or printed.
    done_at: Mapped[datetime | None] = mapped_column()
    #: When the host issued a renewal code for this account's letter (the code
    #: itself is printed, never kept).
    renewal_issued_at: Mapped[datetime | None] = mapped_column()
    #: When the credentials left for the account: the email sent, the CSV
    #: exported, the PDF holding the sheet downloaded whole; NULL while they
    #: have not (a PDF never downloaded, a failed email).
    distributed_at: Mapped[datetime | None] = mapped_column()
    #: A keyed hash (HMAC with the app's secret key) of the activation code the
    #: sheet or message carried, never the code: tells a code the host changed
    #: since (:func:`flask_publipostage.history.code_digest`); NULL without a code.
    code_hmac: Mapped[str | None] = mapped_column(sa.String(CODE_HASH_LENGTH))
    message_id: Mapped[str | None] = mapped_column(sa.String(255))
    #: Sent again after a crash or a lost connection: the first copy may have arrived.
    possibly_duplicate: Mapped[bool] = mapped_column(default=False)
    #: Which sender holds the row (a batch), and since when; a stale claim is taken over.
    claim_token: Mapped[str | None] = mapped_column(sa.String(32))
    claimed_at: Mapped[datetime | None] = mapped_column()
    #: Not before this time (back-off after a temporary refusal).
    next_attempt_at: Mapped[datetime | None] = mapped_column()


class RunPerimeter(Base):
    """The accounts a run's admin could see when it started (a local admin's
    school); deleted when the run is over."""

    __tablename__ = "publipostage_run_perimeter"

    run_id: Mapped[int] = mapped_column(sa.ForeignKey("publipostage_run.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
