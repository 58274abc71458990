"""Low-level journal operations shared by every sender (threads or Celery workers).

A sender *claims* a batch of pending deliveries (its token in ``claim_token``),
marks a small group "sending" before the messages leave, and writes each
outcome after the server's reply. Rows still "sending" when their claim goes stale
(the process died) are sent again and flagged ``possibly_duplicate``.

Claims are safe with several senders: on PostgreSQL ``SELECT … FOR UPDATE SKIP
LOCKED`` inside the claiming UPDATE; on SQLite (one writer at a time) the same
UPDATE runs atomically and only rows still claimable change hands.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from flask import current_app

from ..config import config_value
from ..models import utcnow
from .models import (
    ACTIVE_STATES,
    DELIVERY_FAILED,
    DONE,
    FAILED,
    PENDING,
    REASON_LENGTH,
    RUNNING,
    SENDING,
    SENT,
    SKIPPED,
    WAITING_SMTP,
    Campaign,
    CampaignPerimeter,
    Delivery,
)

log = logging.getLogger(__name__)

campaign_t = cast(sa.Table, Campaign.__table__)
delivery_t = cast(sa.Table, Delivery.__table__)
perimeter_t = cast(sa.Table, CampaignPerimeter.__table__)

#: How often (seconds) a sender writes a heartbeat at most.
HEARTBEAT_EVERY = 2.0


@dataclass(frozen=True)
class ClaimedRow:
    id: int
    user_id: str
    email: str | None
    attempts: int
    possibly_duplicate: bool


@dataclass
class Outcome:
    """What happened to one claimed row; written by :func:`write_outcomes`."""

    id: int
    state: str
    attempted: bool = False
    reason: str | None = None
    sent_at: datetime | None = None
    message_id: str | None = None
    email: str | None = None
    possibly_duplicate: bool = False
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    state: str
    token: str
    school_name: str
    waiting_since: datetime | None
    actor: str = ""
    scope_key: str = "*"
    scope_users: bool = False
    scope_classes: str | None = None


def engine() -> sa.Engine:
    return current_app.extensions["publipostage"].db.engine


def stale_before(now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=float(config_value("MAIL_STALE_AFTER")))


def campaign_info(campaign_id: int) -> CampaignInfo | None:
    with engine().connect() as conn:
        row = conn.execute(
            sa.select(
                campaign_t.c.id,
                campaign_t.c.state,
                campaign_t.c.token,
                campaign_t.c.school_name,
                campaign_t.c.waiting_since,
                campaign_t.c.actor,
                campaign_t.c.scope_key,
                campaign_t.c.scope_users,
                campaign_t.c.scope_classes,
            ).where(campaign_t.c.id == campaign_id)
        ).first()
    if row is None:
        return None
    return CampaignInfo(
        row.id,
        row.state,
        row.token,
        row.school_name or "",
        row.waiting_since,
        row.actor,
        row.scope_key,
        bool(row.scope_users),
        row.scope_classes,
    )


# -- ownership of a campaign -------------------------------------------------------


def acquire(campaign_id: int, *, force: bool = False, states: Sequence[str] = ACTIVE_STATES) -> bool:
    """Become the one process driving ``campaign_id``.

    Succeeds when nobody gave a sign of life for ``MAIL_STALE_AFTER`` seconds (or
    never did), or with ``force``. Claims left by the previous driver are released
    and the rows it left "sending" are flagged as possible duplicates.
    """
    now = utcnow()
    condition = [campaign_t.c.id == campaign_id, campaign_t.c.state.in_(tuple(states))]
    if not force:
        condition.append(
            sa.or_(campaign_t.c.heartbeat_at.is_(None), campaign_t.c.heartbeat_at < stale_before(now))
        )
    with engine().begin() as conn:
        result = conn.execute(
            sa.update(campaign_t)
            .where(*condition)
            .values(
                heartbeat_at=now,
                state=sa.case((campaign_t.c.state == WAITING_SMTP, WAITING_SMTP), else_=RUNNING),
                started_at=sa.func.coalesce(campaign_t.c.started_at, now),
                finished_at=None,
            )
        )
        if result.rowcount != 1:
            return False
        released = _release_all_claims(conn, campaign_id)
    if released:
        log.info("publipostage campaign %d taken over: %d deliveries may have been sent twice", campaign_id, released)
    return True


def _release_all_claims(conn: sa.Connection, campaign_id: int) -> int:
    interrupted = conn.execute(
        sa.update(delivery_t)
        .where(delivery_t.c.campaign_id == campaign_id, delivery_t.c.state == SENDING)
        .values(state=PENDING, possibly_duplicate=True, claim_token=None, claimed_at=None)
    ).rowcount
    conn.execute(
        sa.update(delivery_t)
        .where(
            delivery_t.c.campaign_id == campaign_id,
            delivery_t.c.state == PENDING,
            delivery_t.c.claim_token.is_not(None),
        )
        .values(claim_token=None, claimed_at=None)
    )
    return int(interrupted or 0)


_last_beat: dict[int, float] = {}
_beat_lock = threading.Lock()


def heartbeat(campaign_id: int, *, force: bool = False) -> None:
    """A sign of life (at most one write every ``HEARTBEAT_EVERY`` seconds)."""
    with _beat_lock:
        clock = time.monotonic()
        if not force and clock - _last_beat.get(campaign_id, 0.0) < HEARTBEAT_EVERY:
            return
        _last_beat[campaign_id] = clock
    now = utcnow()
    condition = [campaign_t.c.id == campaign_id, campaign_t.c.state.in_(ACTIVE_STATES)]
    if not force:
        condition.append(
            sa.or_(
                campaign_t.c.heartbeat_at.is_(None),
                campaign_t.c.heartbeat_at < now - timedelta(seconds=HEARTBEAT_EVERY),
            )
        )
    with engine().begin() as conn:
        conn.execute(sa.update(campaign_t).where(*condition).values(heartbeat_at=now))


def is_stale(campaign: Campaign, now: datetime | None = None) -> bool:
    return campaign.state in ACTIVE_STATES and (
        campaign.heartbeat_at is None or campaign.heartbeat_at < stale_before(now)
    )


# -- claims ----------------------------------------------------------------------------


def _claimable(now: datetime, table: Any = delivery_t) -> Any:
    """Pending rows nobody holds (or whose holder went silent), due now."""
    d = table.c
    return sa.and_(
        d.state == PENDING,
        sa.or_(d.claim_token.is_(None), d.claimed_at < stale_before(now)),
        sa.or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
    )


def claim(campaign_id: int, limit: int, token: str) -> list[ClaimedRow]:
    """Take up to ``limit`` deliveries for this sender; nobody else gets them."""
    now = utcnow()
    d = delivery_t.c
    eng = engine()
    # An alias, so the subquery is not correlated with the UPDATE's own table.
    candidate = delivery_t.alias("candidate")
    candidates = (
        sa.select(candidate.c.id)
        .where(candidate.c.campaign_id == campaign_id, _claimable(now, candidate))
        .order_by(candidate.c.id)
        .limit(limit)
    )
    if eng.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    columns = (d.id, d.user_id, d.email, d.attempts, d.possibly_duplicate)
    with eng.begin() as conn:
        # Rows left "sending" by a sender that went silent may have left: they go
        # back to the pool, flagged.
        conn.execute(
            sa.update(delivery_t)
            .where(d.campaign_id == campaign_id, d.state == SENDING, d.claimed_at < stale_before(now))
            .values(state=PENDING, possibly_duplicate=True, claim_token=None, claimed_at=None)
        )
        take = sa.update(delivery_t).values(claim_token=token, claimed_at=now)
        if eng.dialect.update_returning and eng.dialect.name in ("postgresql", "sqlite"):
            # One statement: SKIP LOCKED on PostgreSQL, SQLite's single write lock.
            rows = conn.execute(
                take.where(d.id.in_(candidates.scalar_subquery()), _claimable(now)).returning(*columns)
            ).all()
        else:
            ids = list(conn.execute(candidates).scalars())
            if not ids:
                return []
            # Only rows still claimable change hands (another sender may have won).
            conn.execute(take.where(d.id.in_(ids), _claimable(now)))
            rows = conn.execute(sa.select(*columns).where(d.id.in_(ids), d.claim_token == token)).all()
    rows = sorted(rows, key=lambda r: r[0])
    return [ClaimedRow(r[0], r[1], r[2], int(r[3] or 0), bool(r[4])) for r in rows]


def start_group(token: str, held: Sequence[int], group_ids: Sequence[int], outcomes: Sequence[Outcome]) -> int:
    """One commit: write the previous outcomes, mark ``group_ids`` "sending" and
    renew the claim on the rest of the batch (``held``). Returns how many of them
    this sender still holds (fewer means a claim was taken over)."""
    now = utcnow()
    d = delivery_t.c
    with engine().begin() as conn:
        _write(conn, outcomes, now, token)
        if not held:
            return 0
        count = conn.execute(
            sa.update(delivery_t)
            .where(d.id.in_(list(held)), d.claim_token == token, d.state.in_((PENDING, SENDING)))
            .values(
                claimed_at=now,
                state=sa.case((d.id.in_(list(group_ids)), SENDING), else_=d.state),
            )
        ).rowcount
    return int(count or 0)


def held_ids(token: str, ids: Iterable[int]) -> set[int]:
    d = delivery_t.c
    with engine().connect() as conn:
        return set(
            conn.execute(
                sa.select(d.id).where(d.id.in_(list(ids)), d.claim_token == token, d.state.in_((PENDING, SENDING)))
            ).scalars()
        )


def write_outcomes(outcomes: Iterable[Outcome], token: str) -> None:
    outcomes = list(outcomes)
    if not outcomes:
        return
    with engine().begin() as conn:
        _write(conn, outcomes, utcnow(), token)


def _write(conn: sa.Connection, outcomes: Sequence[Outcome], now: datetime, token: str) -> None:
    """Outcomes of rows this sender still holds (a row taken over by another
    sender after a stale claim is theirs now)."""
    if not outcomes:
        return
    d = delivery_t.c
    stmt = (
        sa.update(delivery_t)
        .where(d.id == sa.bindparam("b_id"), d.claim_token == sa.bindparam("b_token"))
        .values(
            state=sa.bindparam("b_state"),
            attempts=d.attempts + sa.bindparam("b_inc", type_=sa.Integer),
            reason=sa.bindparam("b_reason"),
            sent_at=sa.bindparam("b_sent_at"),
            message_id=sa.bindparam("b_message_id"),
            email=sa.func.coalesce(sa.bindparam("b_email", type_=sa.String), d.email),
            possibly_duplicate=sa.bindparam("b_dup", type_=sa.Boolean),
            next_attempt_at=sa.bindparam("b_next"),
            claim_token=None,
            claimed_at=None,
        )
    )
    conn.execute(
        stmt,
        [
            {
                "b_id": o.id,
                "b_state": o.state,
                "b_inc": 1 if o.attempted else 0,
                "b_reason": (o.reason or None) and o.reason[:REASON_LENGTH],
                "b_sent_at": o.sent_at,
                "b_message_id": o.message_id,
                "b_email": o.email,
                "b_dup": o.possibly_duplicate,
                "b_next": o.next_attempt_at,
                "b_token": token,
            }
            for o in outcomes
        ],
    )


def release(rows: Iterable[ClaimedRow]) -> list[Outcome]:
    """Outcomes giving unattempted rows back to the pool, unchanged."""
    return [Outcome(r.id, PENDING, possibly_duplicate=r.possibly_duplicate) for r in rows]


# -- campaign state --------------------------------------------------------------------


def mark_running(campaign_id: int) -> None:
    """The SMTP server answers again (or for the first time)."""
    with engine().begin() as conn:
        conn.execute(
            sa.update(campaign_t)
            .where(campaign_t.c.id == campaign_id, campaign_t.c.state.in_((WAITING_SMTP,)))
            .values(state=RUNNING, waiting_since=None)
        )


def mark_waiting(campaign_id: int, reason: str) -> bool:
    """The SMTP server is unreachable; False when the campaign waited too long
    (it is then stopped as failed)."""
    now = utcnow()
    max_wait = timedelta(seconds=float(config_value("MAIL_MAX_WAIT")))
    c = campaign_t.c
    with engine().begin() as conn:
        conn.execute(
            sa.update(campaign_t)
            .where(c.id == campaign_id, c.state.in_(ACTIVE_STATES))
            .values(
                state=WAITING_SMTP,
                waiting_since=sa.func.coalesce(c.waiting_since, now),
                last_error=reason[:REASON_LENGTH],
                heartbeat_at=now,
            )
        )
        since = conn.execute(sa.select(c.waiting_since).where(c.id == campaign_id)).scalar()
        if since is not None and now - since > max_wait:
            conn.execute(
                sa.update(campaign_t)
                .where(c.id == campaign_id, c.state.in_(ACTIVE_STATES))
                .values(state=FAILED, active_key=None, finished_at=now)
            )
            log.warning("publipostage campaign %d stopped: SMTP server unreachable since %s", campaign_id, since)
            return False
    return True


def record_error(campaign_id: int, reason: str) -> None:
    with engine().begin() as conn:
        conn.execute(
            sa.update(campaign_t).where(campaign_t.c.id == campaign_id).values(last_error=reason[:REASON_LENGTH])
        )


def counts(campaign_id: int, conn: sa.Connection | None = None) -> dict[str, int]:
    """Deliveries per state, plus ``duplicates`` (possibly received twice)."""
    d = delivery_t.c
    stmt = (
        sa.select(d.state, sa.func.count(), sa.func.sum(sa.case((d.possibly_duplicate, 1), else_=0)))
        .where(d.campaign_id == campaign_id)
        .group_by(d.state)
    )

    def run(c: sa.Connection) -> dict[str, int]:
        found = {state: 0 for state in (PENDING, SENDING, SENT, DELIVERY_FAILED, SKIPPED)}
        duplicates = 0
        for state, number, dup in c.execute(stmt):
            found[state] = int(number)
            if state == SENT:
                duplicates = int(dup or 0)
        found["duplicates"] = duplicates
        return found

    if conn is not None:
        return run(conn)
    with engine().connect() as c:
        return run(c)


def next_work_in(campaign_id: int) -> float | None:
    """Seconds until a delivery may be claimed; None when nothing is left to send."""
    now = utcnow()
    d = delivery_t.c
    with engine().connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.min(sa.case((d.claim_token.is_(None), d.next_attempt_at), else_=None)),
                sa.func.min(d.claimed_at),
            ).where(d.campaign_id == campaign_id, d.state.in_((PENDING, SENDING)))
        ).one()
    remaining, next_retry, oldest_claim = row
    if not remaining:
        return None
    waits = [0.2]  # rows held by another sender: look again soon
    if next_retry is not None:
        waits.append((next_retry - now).total_seconds())
    if oldest_claim is not None:
        waits.append((oldest_claim - stale_before(now)).total_seconds())
    return max(0.05, min(waits))


def finish_if_complete(campaign_id: int) -> bool:
    """Mark the campaign done when no delivery is left pending or sending."""
    now = utcnow()
    c = campaign_t.c
    with engine().begin() as conn:
        found = counts(campaign_id, conn)
        if found[PENDING] or found[SENDING]:
            return False
        done = conn.execute(
            sa.update(campaign_t)
            .where(c.id == campaign_id, c.state.in_(ACTIVE_STATES))
            .values(
                state=DONE,
                active_key=None,
                finished_at=now,
                waiting_since=None,
                sent=found[SENT],
                failed=found[DELIVERY_FAILED],
                skipped=found[SKIPPED],
                duplicates=found["duplicates"],
            )
        ).rowcount
    if done:
        with engine().begin() as conn:
            conn.execute(sa.delete(perimeter_t).where(perimeter_t.c.campaign_id == campaign_id))
        log.info(
            "publipostage campaign %d done: %d sent, %d failed, %d skipped, %d possibly duplicated",
            campaign_id,
            found[SENT],
            found[DELIVERY_FAILED],
            found[SKIPPED],
            found["duplicates"],
        )
    return True


def store_counts(campaign_id: int) -> None:
    """Copy the live counts onto the campaign row (after a cancel or a stop)."""
    with engine().begin() as conn:
        found = counts(campaign_id, conn)
        conn.execute(
            sa.update(campaign_t)
            .where(campaign_t.c.id == campaign_id)
            .values(
                sent=found[SENT],
                failed=found[DELIVERY_FAILED],
                skipped=found[SKIPPED],
                duplicates=found["duplicates"],
            )
        )
