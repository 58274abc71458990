"""Background PDF jobs and the frozen list of the accounts they print."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, utcnow

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING)
FINAL_STATES = (DONE, FAILED, CANCELLED)


def new_token() -> str:
    """32 URL-safe characters, 192 random bits: the job's URLs cannot be guessed."""
    return secrets.token_urlsafe(24)


def active_key(owner: str, scope_key: str, selection_json: str, slot: int) -> str:
    raw = "\0".join((owner, scope_key, selection_json, str(slot)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class PdfJob(Base):
    """One PDF generated in the background, visible to its creator only."""

    __tablename__ = "publipostage_pdf_job"

    #: Unguessable: the job's URLs are built from it.
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True, default=new_token)
    owner: Mapped[str] = mapped_column(sa.String(200), index=True)
    scope_key: Mapped[str] = mapped_column(sa.String(200))
    school_name: Mapped[str] = mapped_column(sa.String(200), default="")
    #: ``Selection.to_dict()`` as JSON.
    selection: Mapped[str] = mapped_column(sa.Text)
    #: The classes the owner's scope allowed when the job started (JSON list of
    #: ids as strings), ``None`` for every class.
    scope_classes: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    template: Mapped[str] = mapped_column(sa.String(20))
    #: The owner's account perimeter was frozen in ``publipostage_pdf_job_perimeter``
    #: (false: a global scope, nothing to freeze).
    scope_users: Mapped[bool] = mapped_column(default=False)
    #: ``Options.to_dict()`` as JSON.
    options: Mapped[str] = mapped_column(sa.Text, default="{}")
    state: Mapped[str] = mapped_column(sa.String(20), default=QUEUED, index=True)
    #: While the job is queued or running: sha256 of owner, perimeter, selection and
    #: a slot below ``MAX_RUNNING_JOBS``; NULL afterwards. Unique: two requests at
    #: the same moment cannot both take the last slot.
    active_key: Mapped[str | None] = mapped_column(sa.String(64), unique=True, nullable=True)
    accounts: Mapped[int] = mapped_column(default=0)
    pages_done: Mapped[int] = mapped_column(default=0)
    pages_total: Mapped[int] = mapped_column(default=0)
    chunks_done: Mapped[int] = mapped_column(default=0)
    chunks_total: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: Last sign of life of the process running the job.
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    file_path: Mapped[str | None] = mapped_column(sa.String(1000), nullable=True)
    file_name: Mapped[str] = mapped_column(sa.String(200), default="publipostage.pdf")
    downloaded_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: A short reason for the admin; never personal data or codes.
    error: Mapped[str | None] = mapped_column(sa.String(500), nullable=True)

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.options or "{}"))

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def progress(self) -> float:
        if not self.pages_total:
            return 1.0 if self.state == DONE else 0.0
        return min(1.0, self.pages_done / self.pages_total)

    def seconds_left(self, now: datetime | None = None) -> int | None:
        """Estimated from the pace so far; ``None`` before the first pages."""
        if self.state != RUNNING or not self.started_at or not self.pages_done:
            return None
        if self.chunks_done < 3 and self.pages_done * 20 < self.pages_total:
            return None  # the start-up still weighs too much for an honest guess
        elapsed = ((now or utcnow()) - self.started_at).total_seconds()
        remaining = max(0, self.pages_total - self.pages_done)
        return int(round(elapsed / self.pages_done * remaining))


class PdfJobItem(Base):
    """The accounts of a job, in print order, frozen when the job starts.

    Chunks (rendered by any process, Celery workers included) read their accounts
    back by position range, within the owner's scope as it was at the start.
    """

    __tablename__ = "publipostage_pdf_job_item"

    job_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    #: The host's user id, as a string.
    user_id: Mapped[str] = mapped_column(sa.String(200))
    #: The sort key of the account's group (class or profile); NULL when none.
    group_key: Mapped[str | None] = mapped_column(sa.String(400), nullable=True)


class PdfJobPerimeter(Base):
    """The accounts the owner could see when the job started (a local admin's
    school): a parent's children are named on the letter only within it."""

    __tablename__ = "publipostage_pdf_job_perimeter"

    job_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
