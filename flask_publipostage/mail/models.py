"""The campaign journal: one row per campaign, one row per recipient.

Both tables live on the host database (``models.Base``). A delivery row holds what
the report needs (who, which address, what happened) and never the activation
code: codes are read from the host at send time.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, utcnow

# Campaign states.
QUEUED = "queued"
RUNNING = "running"
WAITING_SMTP = "waiting_smtp"
DONE = "done"
CANCELLED = "cancelled"
FAILED = "failed"
ACTIVE_STATES = (QUEUED, RUNNING, WAITING_SMTP)
FINISHED_STATES = (DONE, CANCELLED, FAILED)

# Delivery states.
PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DELIVERY_FAILED = "failed"
SKIPPED = "skipped"
DELIVERY_STATES = (PENDING, SENDING, SENT, DELIVERY_FAILED, SKIPPED)

NAME_LENGTH = 300
EMAIL_LENGTH = 320
REASON_LENGTH = 500


class Campaign(Base):
    """One "Envoyer par mail" run."""

    __tablename__ = "publipostage_campaign"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(sa.String(200))
    scope_key: Mapped[str] = mapped_column(sa.String(200), index=True)
    school_name: Mapped[str] = mapped_column(sa.String(200), default="")
    #: The selection's query string as JSON (sorted keys), to show and to audit.
    selection: Mapped[str] = mapped_column(sa.Text)
    #: sha256 of actor + scope + selection while the campaign is queued, running or
    #: waiting; NULL afterwards. Unique: the same selection cannot run twice at once.
    active_key: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    #: Random part of every Message-ID of the campaign (a re-sent message keeps its id).
    token: Mapped[str] = mapped_column(sa.String(32))
    state: Mapped[str] = mapped_column(sa.String(20), default=QUEUED, index=True)
    #: Selected accounts, and how many of them have no address (skipped).
    total: Mapped[int] = mapped_column(default=0)
    to_send: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    #: Final counts, written when the campaign ends (live counts come from deliveries).
    sent: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    #: Last sign of life of whatever sends it; a stale heartbeat means it died.
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    #: Since when the SMTP server has been unreachable (state waiting_smtp).
    waiting_since: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(sa.String(REASON_LENGTH))
    #: The owner's perimeter when the campaign started, so that a message names
    #: only the children and classes the owner could see: whether it was
    #: restricted (its accounts are then in ``publipostage_campaign_perimeter``),
    #: and the JSON list of its class ids (NULL: every class).
    scope_users: Mapped[bool] = mapped_column(default=False)
    scope_classes: Mapped[str | None] = mapped_column(sa.Text)

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


class Delivery(Base):
    """One recipient of a campaign."""

    __tablename__ = "publipostage_delivery"
    __table_args__ = (
        sa.UniqueConstraint("campaign_id", "user_id", name="uq_publipostage_delivery_user"),
        # With the id last, claiming "the next N pending rows" reads N index entries.
        sa.Index("ix_publipostage_delivery_campaign_state", "campaign_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        sa.ForeignKey("publipostage_campaign.id", ondelete="CASCADE")
    )
    #: The host's user id, as a string (no foreign key to host tables).
    user_id: Mapped[str] = mapped_column(sa.String(64))
    email: Mapped[str | None] = mapped_column(sa.String(EMAIL_LENGTH))
    #: "First Last" when the campaign started, for the report (never the code).
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), default="")
    state: Mapped[str] = mapped_column(sa.String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    #: The SMTP server's answer (or our own reason) for a failure or a skip.
    reason: Mapped[str | None] = mapped_column(sa.String(REASON_LENGTH))
    sent_at: Mapped[datetime | None] = mapped_column()
    message_id: Mapped[str | None] = mapped_column(sa.String(255))
    #: Re-sent after a crash or a lost connection: the first copy may have arrived.
    possibly_duplicate: Mapped[bool] = mapped_column(default=False)
    #: Which sender holds the row (a batch), and since when; a stale claim is taken over.
    claim_token: Mapped[str | None] = mapped_column(sa.String(32))
    claimed_at: Mapped[datetime | None] = mapped_column()
    #: Not before this time (back-off after a temporary refusal).
    next_attempt_at: Mapped[datetime | None] = mapped_column()


class CampaignPerimeter(Base):
    """The accounts a campaign's owner could see when it started (a local admin's
    school); deleted when the campaign is over."""

    __tablename__ = "publipostage_campaign_perimeter"

    campaign_id: Mapped[int] = mapped_column(
        sa.ForeignKey("publipostage_campaign.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)


def active_key(actor: str, scope_key: str, selection_json: str) -> str:
    raw = f"{actor}\0{scope_key}\0{selection_json}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def unreached_user_ids(campaign_id: int, scope: Any = None) -> sa.Select[Any]:
    """Host user ids (strings) a campaign did not reach: failed, skipped (no
    address), and, once the campaign was cancelled or stopped, never sent.

    With ``scope`` (an :class:`~flask_publipostage.access.Scope`), a campaign of
    another perimeter reaches nobody: it looks like a campaign that does not exist.
    """
    delivery = Delivery.__table__
    campaign = Campaign.__table__
    stopped = (
        sa.select(campaign.c.id)
        .where(campaign.c.id == campaign_id, campaign.c.state.in_((CANCELLED, FAILED)))
        .exists()
    )
    visible: list[Any] = []
    if scope is not None and not scope.is_global:
        visible.append(
            sa.select(campaign.c.id).where(campaign.c.id == campaign_id, campaign.c.scope_key == scope.key).exists()
        )
    return sa.select(delivery.c.user_id).where(
        *visible,
        delivery.c.campaign_id == campaign_id,
        sa.or_(
            delivery.c.state.in_((DELIVERY_FAILED, SKIPPED)),
            sa.and_(delivery.c.state.in_((PENDING, SENDING)), stopped),
        ),
    )


