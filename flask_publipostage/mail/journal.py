"""The campaign journal: a sender's hold on the items of a mail run.

Every sender (a thread, a Celery worker) *claims* a batch of pending items (its
token in ``claim_token``), marks a small group "sending" before the messages
leave, and writes each outcome after the server's reply. Rows still "sending"
when their claim goes stale (the process died) are sent again and flagged
``possibly_duplicate``.

Claims are safe with several senders: on PostgreSQL ``SELECT … FOR UPDATE SKIP
LOCKED`` inside the claiming UPDATE; on SQLite (one writer at a time) the same
UPDATE runs atomically and only rows still claimable change hands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..models import utcnow
from ..runs.core import ItemRow, engine, item_t, stale_before
from ..runs.models import PENDING, REASON_LENGTH, SENDING, SENT


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


def _claimable(now: datetime, table: Any = item_t) -> Any:
    """Pending rows nobody holds (or whose holder went silent), due now."""
    d = table.c
    return sa.and_(
        d.state == PENDING,
        sa.or_(d.claim_token.is_(None), d.claimed_at < stale_before(now)),
        sa.or_(d.next_attempt_at.is_(None), d.next_attempt_at <= now),
    )


def claim(run_id: int, limit: int, token: str) -> list[ItemRow]:
    """Take up to ``limit`` items, in print order, for this sender; nobody else gets them."""
    now = utcnow()
    d = item_t.c
    eng = engine()
    # An alias, so the subquery is not correlated with the UPDATE's own table.
    candidate = item_t.alias("candidate")
    candidates = (
        sa.select(candidate.c.id)
        .where(candidate.c.run_id == run_id, _claimable(now, candidate))
        .order_by(candidate.c.position)
        .limit(limit)
    )
    if eng.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    columns = (d.id, d.user_id, d.position, d.email, d.attempts, d.possibly_duplicate)
    with eng.begin() as conn:
        # Rows left "sending" by a sender that went silent may have left: they go
        # back to the pool, flagged.
        conn.execute(
            sa.update(item_t)
            .where(d.run_id == run_id, d.state == SENDING, d.claimed_at < stale_before(now))
            .values(state=PENDING, possibly_duplicate=True, claim_token=None, claimed_at=None)
        )
        take = sa.update(item_t).values(claim_token=token, claimed_at=now)
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
    rows = sorted(rows, key=lambda r: r[2])
    return [ItemRow(r[0], r[1], r[2], email=r[3], attempts=int(r[4] or 0), possibly_duplicate=bool(r[5])) for r in rows]


def start_group(token: str, held: Sequence[int], group_ids: Sequence[int], outcomes: Sequence[Outcome]) -> int:
    """One commit: write the previous outcomes, mark ``group_ids`` "sending" and
    renew the claim on the rest of the batch (``held``). Returns how many of them
    this sender still holds (fewer means a claim was taken over)."""
    now = utcnow()
    d = item_t.c
    with engine().begin() as conn:
        _write(conn, outcomes, now, token)
        if not held:
            return 0
        count = conn.execute(
            sa.update(item_t)
            .where(d.id.in_(list(held)), d.claim_token == token, d.state.in_((PENDING, SENDING)))
            .values(
                claimed_at=now,
                state=sa.case((d.id.in_(list(group_ids)), SENDING), else_=d.state),
            )
        ).rowcount
    return int(count or 0)


def held_ids(token: str, ids: Iterable[int]) -> set[int]:
    d = item_t.c
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
    d = item_t.c
    stmt = (
        sa.update(item_t)
        .where(d.id == sa.bindparam("b_id"), d.claim_token == sa.bindparam("b_token"))
        .values(
            state=sa.bindparam("b_state"),
            attempts=d.attempts + sa.bindparam("b_inc", type_=sa.Integer),
            reason=sa.bindparam("b_reason"),
            done_at=sa.bindparam("b_sent_at"),
            # A message the server accepted: the credentials left (the history).
            distributed_at=sa.bindparam("b_distributed"),
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
                "b_distributed": o.sent_at if o.state == SENT else None,
                "b_message_id": o.message_id,
                "b_email": o.email,
                "b_dup": o.possibly_duplicate,
                "b_next": o.next_attempt_at,
                "b_token": token,
            }
            for o in outcomes
        ],
    )


def release(rows: Iterable[ItemRow]) -> list[Outcome]:
    """Outcomes giving unattempted rows back to the pool, unchanged."""
    return [Outcome(r.id, PENDING, possibly_duplicate=r.possibly_duplicate) for r in rows]


def next_work_in(run_id: int) -> float | None:
    """Seconds until an item may be claimed; None when nothing is left to send."""
    now = utcnow()
    d = item_t.c
    with engine().connect() as conn:
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.min(sa.case((d.claim_token.is_(None), d.next_attempt_at), else_=None)),
                sa.func.min(d.claimed_at),
            ).where(d.run_id == run_id, d.state.in_((PENDING, SENDING)))
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
