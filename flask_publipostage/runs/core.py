"""The lifecycle of every background distribution, whatever it produces.

A run starts in the admin's request (:func:`start`): its accounts are frozen as
items in print order, with the admin's perimeter, in one transaction with the
audit row. Whatever process then *drives* it (a thread, a Celery worker, the
request itself for a small PDF) first :func:`acquire`\\ s it, proves it is alive
with :func:`heartbeat`, and ends it with :func:`finish`, :func:`fail` or finds it
cancelled. A driver that stops without ending its run leaves a stale heartbeat:
any process with a runner then takes the run over (:func:`resume_stale`) and the
kind carries on from what its items say is done. A run whose settings are wrong
(:func:`suspend`) stops at once instead, without touching its items, and goes on
from there when the admin resumes it (:func:`resume`, or ``resume`` on the
command line), exactly as a failed run does.

Every step of that lifecycle writes its journal row here, once, in the
transaction of the change: the start, a cancel, a resumption and a take-over
(:func:`~flask_publipostage.audit.record_run`), whoever asked for it (an admin,
the command line, or no one: a process taking a silent run over).

What a run does with a batch of accounts is its :class:`Kind`'s business (the
``pdf`` and ``mail`` packages); who may see it is the kind's :attr:`Kind.visibility`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from flask import Flask, abort
from sqlalchemy.exc import IntegrityError

from .. import audit
from ..access import Scope
from ..config import config_value
from ..history import code_digest
from ..host import parse_key
from ..i18n import gettext as _
from ..models import utcnow
from ..recipients import Recipient, Related, build
from ..selection import Selection, SelectionError, state_columns
from ..state import state
from . import backends
from .models import (
    ACTIVE_STATES,
    CANCELLED,
    DONE,
    FAILED,
    ITEM_FAILED,
    LEFT_STATES,
    NAME_LENGTH,
    PENDING,
    QUEUED,
    REASON_LENGTH,
    RESUMABLE_STATES,
    RUNNING,
    SENDING,
    SKIPPED,
    SUSPENDED,
    WAITING,
    Run,
    RunItem,
    RunPerimeter,
)

log = logging.getLogger(__name__)

run_t = cast(sa.Table, Run.__table__)
item_t = cast(sa.Table, RunItem.__table__)
perimeter_t = cast(sa.Table, RunPerimeter.__table__)

DRIVE = "publipostage.run"

#: Who sees a run besides nobody: its creator only, or every admin of its perimeter.
OWNER = "owner"
PERIMETER = "perimeter"


@dataclass(frozen=True)
class Kind:
    """What a kind of run brings of its own.

    :param drive: ``(run, scope)``: do (or go on with) the run's work, in the
        process that acquired it; ``scope`` is the admin's, as frozen.
    :param visibility: :data:`OWNER` (a PDF holds codes: its creator only) or
        :data:`PERIMETER` (a campaign: every admin of the perimeter follows it).
    :param url_key: its URLs name a run by ``"token"`` (unguessable) or ``"id"``.
    :param busy: the message when the admin has ``MAX_RUNNING_JOBS`` of them running.
    """

    name: str
    drive: Callable[[Run, Scope], None]
    visibility: str
    url_key: str
    busy: Any


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    KINDS[kind.name] = kind
    return kind


def engine() -> sa.Engine:
    return state().db.engine  # type: ignore[no-any-return]


def stale_before(now: datetime | None = None) -> datetime:
    return (now or utcnow()) - timedelta(seconds=float(config_value("STALE_AFTER")))


def heartbeat_every() -> float:
    return max(0.1, float(config_value("STALE_AFTER")) / 6)


# -- starting (in the admin's request) --------------------------------------------------------


def start(
    kind: Kind,
    selection: Selection,
    options: Mapping[str, Any],
    *,
    item_kind: str,
    columns: Callable[[Any], dict[str, Any]] | None = None,
    every_class: bool = False,
    file_name: str = "",
    audit_action: str,
    audit_template: str,
    audit_count: int | None = None,
    inline: bool = False,
    items: bool = True,
    perimeter: bool = True,
) -> tuple[Run, bool]:
    """Record a run of ``selection`` with its items and audit row, in one commit,
    and hand it to the runner. Returns ``(run, created)``.

    The same run already under way (same selection and options: a double click)
    is returned with ``created`` False. Otherwise an admin has at most
    ``MAX_RUNNING_JOBS`` queued or running runs of a kind, whatever their
    selections; one more is refused with ``kind.busy`` (409). ``columns`` gives
    the kind's own item columns from the selection's numbered rows
    (:meth:`Selection.numbered`); ``every_class``: an item per account and class
    (a PDF's bundle for every class), else one per account. The audit row counts
    accounts unless ``audit_count`` says otherwise. An ``inline`` run is driven by
    the caller at once (a small PDF, in its request, calls :func:`drive`): it
    takes no slot. Without ``items`` the caller adds them itself
    (:func:`freeze_items`; a CSV export, once streamed) and gives ``audit_count``.
    Without ``perimeter`` the admin's perimeter is not kept: no driver will read
    it (a CSV export, done as it starts), and it costs a row per account written
    and deleted at once.
    """
    scope = selection.scope
    assert scope is not None
    session = state().session
    selection_json = json.dumps(selection.to_dict(), sort_keys=True)
    options_json = json.dumps(dict(options), sort_keys=True)
    run = Run(
        kind=kind.name,
        actor=scope.actor,
        actor_name=scope.actor_name[:200] or None,
        scope_key=scope.key,
        school_name=(scope.school_name or str(config_value("SCHOOL_NAME") or ""))[:200],
        selection=selection_json,
        options=options_json,
        state=QUEUED,
        file_name=file_name or "publipostage.pdf",
    )
    if not inline:
        existing = _take_slot(kind, scope, run)
        if existing is not None:
            return existing, False
    session.add(run)
    session.flush()
    try:
        if items:
            freeze_items(run, selection, item_kind, columns, every_class)
    except IntegrityError:
        if not every_class:
            raise
        # Tables of an earlier version: one item per account and run.
        session.rollback()
        raise SelectionError(
            _("The database must be upgraded for this option: run “flask publipostage upgrade-db”."), status=503
        ) from None
    if perimeter:
        _freeze_perimeter(run, scope)
    if audit_count is None:
        audit_count = count_accounts([run.id], session.connection())[run.id]
    audit.record(audit_action, selection, audit_count, template=audit_template, run_id=run.id)
    session.commit()
    log.info("publipostage %s run %d started by %s", kind.name, run.id, scope.actor)
    if not inline:
        backends.submit(DRIVE, run_id=run.id)
        session.expire_all()
    return run, True


def _slot_key(kind: Kind, scope: Scope, slot: int) -> str:
    raw = "\0".join((kind.name, scope.actor, scope.key, str(slot)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def active_runs(kind: Kind, scope: Scope) -> list[Run]:
    """The admin's queued and running runs of ``kind``, oldest first."""
    return list(
        state().session.execute(
            sa.select(Run)
            .where(Run.kind == kind.name, Run.actor == scope.actor, Run.scope_key == scope.key,
                   Run.state.in_(ACTIVE_STATES))
            .order_by(Run.id)
        ).scalars()
    )


def _take_slot(kind: Kind, scope: Scope, run: Run) -> Run | None:
    """Give ``run`` a free slot of the admin's (flushed), or return the same run
    already under way; raise when every slot is taken."""
    session = state().session
    limit = max(1, int(config_value("MAX_RUNNING_JOBS")))
    for _attempt in range(limit + 1):
        running = active_runs(kind, scope)
        for other in running:
            if other.selection == run.selection and other.options == run.options:
                return other
        taken = {other.active_key for other in running}
        free = [key for key in (_slot_key(kind, scope, slot) for slot in range(limit)) if key not in taken]
        if not free:
            break
        run.active_key = free[0]
        session.add(run)
        try:
            session.flush()
            return None
        except IntegrityError:
            # Another request of the same admin took that slot at the same moment.
            session.rollback()
    raise SelectionError(str(kind.busy), status=409)


def freeze_items(
    run: Run, selection: Selection, item_kind: str, columns: Callable[[Any], dict[str, Any]] | None, every_class: bool
) -> None:
    """The run's items, one INSERT … SELECT over the selection: memory stays flat
    at any size (not committed)."""
    rows = selection.numbered(state().host, every_class=every_class).subquery("pp_numbered")
    values: dict[str, Any] = {
        "run_id": sa.literal(run.id, sa.Integer),
        "user_id": rows.c.user_id,
        "position": rows.c.position,
        "kind": sa.literal(item_kind),
        "state": sa.literal(PENDING),
        "name": sa.func.substr(rows.c.name, 1, NAME_LENGTH),
        "weight": sa.literal(1, sa.Integer),
        "attempts": sa.literal(0, sa.Integer),
        "possibly_duplicate": sa.literal(False, sa.Boolean),
    }
    values.update(columns(rows) if columns else {})
    state().session.execute(
        sa.insert(RunItem).from_select(list(values), sa.select(*values.values()))
    )


def _freeze_perimeter(run: Run, scope: Scope) -> None:
    """Keep the admin's perimeter for the drivers, which run without a request: a
    letter or a message names only the children and classes the admin could see."""
    host = state().host
    session = state().session
    if scope.users is not None:
        session.execute(
            sa.insert(RunPerimeter).from_select(
                ["run_id", "user_id"],
                sa.select(sa.literal(run.id, sa.Integer), sa.cast(host.user_id, sa.String))
                .select_from(host.user_model)
                .where(scope.users),
            )
        )
        run.scope_users = True
    if scope.classes is not None:
        ids = session.execute(sa.select(host.class_id).where(scope.classes)).scalars()
        run.scope_classes = json.dumps(sorted(str(i) for i in ids))


def frozen_scope(run: Run) -> Scope:
    """The admin's perimeter as it was when ``run`` started."""
    host = state().host
    users = None
    if run.scope_users:
        users = sa.cast(host.user_id, sa.String).in_(
            sa.select(perimeter_t.c.user_id).where(perimeter_t.c.run_id == run.id)
        )
    classes = None
    if run.scope_classes is not None:
        classes = host.class_id.in_([parse_key(host.class_id, i) for i in json.loads(run.scope_classes)])
    return Scope(actor=run.actor, users=users, classes=classes, key=run.scope_key, school_name=run.school_name)


def selection_of(run: Run, scope: Scope) -> Selection:
    """The run's selection, seen through ``scope`` (its filters already chose the
    items: what still matters is the chosen classes and the sort)."""
    return Selection.from_dict(run.selection_args, scope)


# -- reading a run's accounts back ------------------------------------------------------------


@dataclass(frozen=True)
class ItemRow:
    id: int
    user_id: str
    position: int
    group_key: str | None = None
    email: str | None = None
    attempts: int = 0
    possibly_duplicate: bool = False


def accounts(selection: Selection, items: Sequence[ItemRow], related: Related | None = None) -> list[tuple[ItemRow, Recipient | None]]:
    """Each item with its account as the host has it now (codes included), None
    when the account was deleted since; in the items' order. An account in
    several items (once per class) is read once, and named in each item's group.

    Whatever reads the accounts here gives them their sheet or message: each item
    keeps the keyed hash of the code read for it (:func:`~flask_publipostage.history.code_digest`,
    never the code), which later tells a code the host changed since."""
    found = state()
    host = found.host
    keys = [parse_key(host.user_id, item.user_id) for item in items]
    wanted = list(dict.fromkeys(k for k in keys if k is not None))
    rows = {}
    if wanted:
        stmt = sa.select(*host.scalar_columns(), *state_columns(host)).where(host.user_id.in_(wanted))
        rows = {row.id: row for row in found.session.connection().execute(stmt)}
    present = [(item, rows[key]) for item, key in zip(items, keys) if key in rows]
    built = build(selection, [row for _item, row in present], related,
                  class_keys=[selection.class_key_of(item.group_key) for item, _row in present])
    by_item = {item.id: recipient for (item, _row), recipient in zip(present, built)}
    digests = [
        {"b_id": item.id, "b_hmac": digest}
        for item in items
        if (recipient := by_item.get(item.id)) is not None
        and (digest := code_digest(item.user_id, recipient.activation_code)) is not None
    ]
    if digests:
        with engine().begin() as conn:
            conn.execute(
                sa.update(item_t).where(item_t.c.id == sa.bindparam("b_id")).values(code_hmac=sa.bindparam("b_hmac")),
                digests,
            )
    return [(item, by_item.get(item.id)) for item in items]


def item_rows(run_id: int, *conditions: Any) -> list[ItemRow]:
    """The run's items matching ``conditions``, in print order."""
    c = item_t.c
    with engine().connect() as conn:
        rows = conn.execute(
            sa.select(c.id, c.user_id, c.position, c.group_key, c.email, c.attempts, c.possibly_duplicate)
            .where(c.run_id == run_id, *conditions)
            .order_by(c.position)
        ).all()
    return [ItemRow(r[0], r[1], r[2], r[3], r[4], int(r[5] or 0), bool(r[6])) for r in rows]


# -- driving -----------------------------------------------------------------------------------


def get(run_id: int) -> Run | None:
    return state().session.get(Run, run_id, populate_existing=True)  # type: ignore[no-any-return]


def acquire(
    run_id: int, *, force: bool = False, states: Sequence[str] = ACTIVE_STATES, by: str = audit.AUTOMATIC
) -> bool:
    """Become the one process driving ``run_id``.

    Succeeds when nobody gave a sign of life for ``STALE_AFTER`` seconds (or ever),
    or with ``force``, or at once for a stopped run (nobody drives it). Claims left by the previous driver are released, and items
    it left "sending" go back to the pool flagged as possible duplicates. A run
    taken over more than ``MAX_TAKEOVERS`` times is failed instead.

    Taking over a run that had a driver, or going on with a stopped one, is
    journaled as done ``by`` (:data:`~flask_publipostage.audit.AUTOMATIC`, or the
    command line); a first start is not (the admin's start row says it).
    """
    now = utcnow()
    c = run_t.c
    condition = [c.id == run_id, c.state.in_(tuple(states))]
    if not force:
        condition.append(sa.or_(c.state.in_(RESUMABLE_STATES), c.heartbeat_at.is_(None),
                                c.heartbeat_at < stale_before(now)))
    with engine().begin() as conn:
        before = conn.execute(
            sa.select(c.state, c.heartbeat_at).where(c.id == run_id).with_for_update()
        ).first()
        taken = conn.execute(
            sa.update(run_t)
            .where(*condition)
            .values(
                heartbeat_at=now,
                state=sa.case((c.state == WAITING, WAITING), else_=RUNNING),
                started_at=sa.func.coalesce(c.started_at, now),
                # Resuming a stopped run starts the count again; a first start is no take-over.
                takeovers=sa.case((c.state.in_(RESUMABLE_STATES), 0), (c.heartbeat_at.is_(None), c.takeovers), else_=c.takeovers + 1),
                finished_at=None,
            )
            .returning(c.takeovers)
        ).first()
        if taken is None:
            return False
        if taken[0] > int(config_value("MAX_TAKEOVERS")):
            conn.execute(
                sa.update(run_t).where(c.id == run_id).values(
                    state=FAILED, active_key=None, finished_at=now, last_error=_("Interrupted too many times.")
                )
            )
            log.warning("publipostage run %d failed: taken over %d times", run_id, taken[0])
            return False
        if before is not None and (before.state in RESUMABLE_STATES or before.heartbeat_at is not None):
            action = "resume" if before.state in RESUMABLE_STATES else "takeover"
            audit.record_run(conn, action, _run_row(conn, run_id), by)
        i = item_t.c
        released = conn.execute(
            sa.update(item_t)
            .where(i.run_id == run_id, i.state == SENDING)
            .values(state=PENDING, possibly_duplicate=True, claim_token=None, claimed_at=None)
        ).rowcount
        conn.execute(
            sa.update(item_t)
            .where(i.run_id == run_id, i.state == PENDING, i.claim_token.is_not(None))
            .values(claim_token=None, claimed_at=None)
        )
    if released:
        log.info("publipostage run %d taken over: %d items may have been sent twice", run_id, released)
    return True


def _run_row(conn: sa.Connection, run_id: int) -> Run:
    """The run as ``conn`` sees it now (a transient copy, for its journal row)."""
    row = conn.execute(sa.select(run_t).where(run_t.c.id == run_id)).one()
    return Run(**row._mapping)


def drive_now(run: Run) -> None:
    """Do the work of an acquired run here, in the perimeter frozen with it."""
    KINDS[run.kind].drive(run, frozen_scope(run))


@backends.task(DRIVE)
def drive(run_id: int, force: bool = False, resume: bool = False) -> None:
    """The runner's task: acquire the run, then let its kind work."""
    states = (*ACTIVE_STATES, *RESUMABLE_STATES) if resume else ACTIVE_STATES
    if not acquire(run_id, force=force, states=states):
        log.info("publipostage run %d is finished or driven elsewhere", run_id)
        return
    run = get(run_id)
    if run is not None:
        drive_now(run)


_last_beat: dict[int, float] = {}
_beat_lock = threading.Lock()


def heartbeat(run_id: int, *, force: bool = False) -> None:
    """A sign of life; written at most once every sixth of ``STALE_AFTER``."""
    every = heartbeat_every()
    with _beat_lock:
        clock = time.monotonic()
        if not force and clock - _last_beat.get(run_id, 0.0) < every:
            return
        _last_beat[run_id] = clock
    with engine().begin() as conn:
        conn.execute(
            sa.update(run_t)
            .where(run_t.c.id == run_id, run_t.c.state.in_(ACTIVE_STATES))
            .values(heartbeat_at=utcnow())
        )


def current_state(run_id: int) -> str | None:
    with engine().connect() as conn:
        return conn.execute(sa.select(run_t.c.state).where(run_t.c.id == run_id)).scalar()  # type: ignore[no-any-return]


def is_active(run_id: int) -> bool:
    return current_state(run_id) in ACTIVE_STATES


def is_stale(run: Run, now: datetime | None = None) -> bool:
    return run.state in ACTIVE_STATES and (run.heartbeat_at is None or run.heartbeat_at < stale_before(now))


def mark_waiting(run_id: int, reason: str) -> bool:
    """The outside service does not answer; False when the run waited longer than
    ``MAIL_MAX_WAIT`` (it is then stopped as failed: the admin may resume it)."""
    now = utcnow()
    max_wait = timedelta(seconds=float(config_value("MAIL_MAX_WAIT")))
    c = run_t.c
    with engine().begin() as conn:
        conn.execute(
            sa.update(run_t)
            .where(c.id == run_id, c.state.in_(ACTIVE_STATES))
            .values(state=WAITING, waiting_since=sa.func.coalesce(c.waiting_since, now),
                    last_error=reason[:REASON_LENGTH], heartbeat_at=now)
        )
        since = conn.execute(sa.select(c.waiting_since).where(c.id == run_id)).scalar()
        if since is not None and now - since > max_wait:
            conn.execute(
                sa.update(run_t).where(c.id == run_id, c.state.in_(ACTIVE_STATES))
                .values(state=FAILED, active_key=None, finished_at=now)
            )
            log.warning("publipostage run %d stopped: its service has not answered since %s", run_id, since)
            return False
    return True


def mark_running(run_id: int) -> None:
    """The outside service answers again (or for the first time)."""
    with engine().begin() as conn:
        conn.execute(
            sa.update(run_t).where(run_t.c.id == run_id, run_t.c.state == WAITING)
            .values(state=RUNNING, waiting_since=None)
        )


def record_error(run_id: int, reason: str) -> None:
    with engine().begin() as conn:
        conn.execute(sa.update(run_t).where(run_t.c.id == run_id).values(last_error=reason[:REASON_LENGTH]))


def finish(run_id: int, *, promote: tuple[str, str] | None = None, **values: Any) -> bool:
    """Mark the run done when no item is left to do (``values``: more columns to
    set, such as its file; ``promote``: items of one state move to another, with
    the time, in the same commit); False when work is left or it is over."""
    c = run_t.c
    now = utcnow()
    with engine().begin() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(item_t.c.run_id == run_id, item_t.c.state.in_(LEFT_STATES))
        ).scalar()
        if left:
            return False
        done = conn.execute(
            sa.update(run_t).where(c.id == run_id, c.state.in_(ACTIVE_STATES))
            .values(state=DONE, active_key=None, finished_at=now, heartbeat_at=now, waiting_since=None, **values)
        ).rowcount
        if done:
            conn.execute(sa.delete(perimeter_t).where(perimeter_t.c.run_id == run_id))
            if promote is not None:
                conn.execute(
                    sa.update(item_t).where(item_t.c.run_id == run_id, item_t.c.state == promote[0])
                    .values(state=promote[1], done_at=now)
                )
    if done:
        log.info("publipostage run %d done", run_id)
    return bool(done)


def distributed(run_id: int, item_state: str) -> None:
    """The run's file went out whole (a PDF downloaded, a CSV streamed to its
    end): its items of ``item_state`` count as distributed from now (the history)."""
    with engine().begin() as conn:
        conn.execute(
            sa.update(item_t).where(item_t.c.run_id == run_id, item_t.c.state == item_state)
            .values(distributed_at=utcnow())
        )


def fail(run_id: int, exc: BaseException | str) -> None:
    """Stop the run as failed; the reason is the error's type (never data)."""
    reason = exc if isinstance(exc, str) else type(exc).__name__
    state().session.rollback()
    with engine().begin() as conn:
        conn.execute(
            sa.update(run_t).where(run_t.c.id == run_id, run_t.c.state.in_(ACTIVE_STATES))
            .values(state=FAILED, active_key=None, finished_at=utcnow(), last_error=reason[:REASON_LENGTH])
        )


def suspend(run_id: int, reason: str) -> bool:
    """Stop the run at once because its settings are wrong (``reason``: what to
    fix, in French). Its items stay as they are; :func:`resume` goes on once the
    settings are fixed. False when it was no longer active."""
    with engine().begin() as conn:
        stopped = conn.execute(
            sa.update(run_t).where(run_t.c.id == run_id, run_t.c.state.in_(ACTIVE_STATES))
            .values(state=SUSPENDED, active_key=None, finished_at=utcnow(), waiting_since=None,
                    last_error=reason[:REASON_LENGTH])
        ).rowcount
    if stopped:
        log.warning("publipostage run %d suspended: its settings must be fixed", run_id)
    return bool(stopped)


def cancel(run: Run, by: Scope | str) -> bool:
    """Stop the run; what was done stays done, the rest is never done. ``by``:
    the admin's scope, or :data:`~flask_publipostage.audit.COMMAND_LINE`."""
    with engine().begin() as conn:
        cancelled = conn.execute(
            sa.update(run_t).where(run_t.c.id == run.id, run_t.c.state.in_(ACTIVE_STATES))
            .values(state=CANCELLED, active_key=None, finished_at=utcnow())
        ).rowcount
        if cancelled:
            audit.record_run(conn, "cancel", run, by)
    state().session.expire_all()
    if cancelled:
        log.info("publipostage run %d cancelled", run.id)
    return bool(cancelled)


def resume(run: Run, by: Scope) -> bool:
    """Start again a run that stopped (failed or suspended), from where its items
    say; ``by``: the admin asking."""
    if run.state not in RESUMABLE_STATES:
        return False
    with engine().begin() as conn:
        resumed = conn.execute(
            sa.update(run_t).where(run_t.c.id == run.id, run_t.c.state.in_(RESUMABLE_STATES))
            .values(state=QUEUED, heartbeat_at=None, waiting_since=None, finished_at=None, takeovers=0)
        ).rowcount
        if not resumed:
            return False
        audit.record_run(conn, "resume", run, by)
    backends.submit(DRIVE, run_id=run.id, resume=True)
    state().session.expire_all()
    return True


def resume_stale(app: Flask) -> None:
    """Hand every run whose driver went silent to this process's runner (each
    process with a runner calls it regularly; :func:`acquire` lets one win).

    A run nobody ever started is only taken when it waited ten times
    ``STALE_AFTER`` (its task was lost): before, it may just wait in a busy queue.
    """
    with app.app_context():
        now = utcnow()
        lost = now - 10 * (now - stale_before(now))
        c = run_t.c
        try:
            # A connection of its own, never the requests' scoped session.
            with engine().connect() as conn:
                ids = list(conn.execute(
                    sa.select(c.id).where(
                        c.state.in_(ACTIVE_STATES),
                        sa.or_(c.heartbeat_at < stale_before(now),
                               sa.and_(c.heartbeat_at.is_(None), c.created_at < lost)),
                    )
                ).scalars())
        except sa.exc.SQLAlchemyError:
            log.debug("publipostage: run table not readable (migrations pending?)")
            ids = []
    for run_id in ids:
        log.info("publipostage run %d: taking it over after an interruption", run_id)
        backends.submit(DRIVE, app=app, run_id=run_id)


# -- counting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """A run's items per state, counted."""

    by_state: Mapping[str, int] = field(default_factory=dict)
    duplicates: int = 0
    weight_done: int = 0
    weight_total: int = 0

    def __getitem__(self, item_state: str) -> int:
        return int(self.by_state.get(item_state, 0))

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def remaining(self) -> int:
        return self[PENDING] + self[SENDING]


def count_items(run_id: int, conn: Any = None, condition: Any = None) -> int:
    """The run's items (those meeting ``condition``)."""
    stmt = sa.select(sa.func.count()).where(item_t.c.run_id == run_id, *(() if condition is None else (condition,)))
    if conn is not None:
        return int(conn.execute(stmt).scalar() or 0)
    with engine().connect() as own:
        return int(own.execute(stmt).scalar() or 0)


def count_accounts(run_ids: Iterable[int], conn: Any = None) -> dict[int, int]:
    """The accounts of several runs (an account in several items counts once)."""
    ids = list(run_ids)
    stmt = (
        sa.select(item_t.c.run_id, sa.func.count(sa.distinct(item_t.c.user_id)))
        .where(item_t.c.run_id.in_(ids)).group_by(item_t.c.run_id)
    )
    if conn is not None:
        found = dict(conn.execute(stmt).all())
    else:
        with engine().connect() as own:
            found = dict(own.execute(stmt).all())
    return {run_id: int(found.get(run_id) or 0) for run_id in ids}


def counts(run_ids: Iterable[int]) -> dict[int, Counts]:
    """Items per state of several runs, in one query."""
    ids = list(run_ids)
    if not ids:
        return {}
    i = item_t.c
    stmt = (
        sa.select(i.run_id, i.state, sa.func.count(), sa.func.sum(sa.case((i.possibly_duplicate, 1), else_=0)),
                  sa.func.sum(i.weight))
        .where(i.run_id.in_(ids))
        .group_by(i.run_id, i.state)
    )
    found: dict[int, dict[str, Any]] = defaultdict(lambda: {"by_state": {}, "duplicates": 0, "done": 0, "total": 0})
    with engine().connect() as conn:
        for run_id, item_state, number, dup, weight in conn.execute(stmt):
            entry = found[run_id]
            entry["by_state"][item_state] = int(number)
            entry["total"] += int(weight or 0)
            if item_state not in LEFT_STATES:
                entry["done"] += int(weight or 0)
            if item_state not in LEFT_STATES and item_state not in (ITEM_FAILED, SKIPPED):
                entry["duplicates"] += int(dup or 0)
    return {
        run_id: Counts(e["by_state"], e["duplicates"], e["done"], e["total"]) if run_id in found else Counts()
        for run_id, e in ((r, found[r]) for r in ids)
    }


@dataclass(frozen=True)
class Progress:
    """Where a run stands, for its page, its JSON status and the command line."""

    state: str
    counts: Counts
    seconds_left: int | None
    #: Last sign of life of a run that gave none for ``STALE_AFTER``: it stopped.
    stalled_since: datetime | None
    #: When another process will take a stalled run over, at the latest.
    takeover_by: datetime | None
    last_error: str | None

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    @property
    def percent(self) -> int:
        if not self.counts.weight_total:
            return 100 if self.state == DONE else 0
        return min(100, round(100 * self.counts.weight_done / self.counts.weight_total))


def progress(run: Run, now: datetime | None = None) -> Progress:
    now = now or utcnow()
    found = counts([run.id])[run.id]
    seconds_left = None
    done, total = found.weight_done, found.weight_total
    if run.state in ACTIVE_STATES and run.started_at and done and total > done:
        elapsed = (now - run.started_at).total_seconds()
        # The start weighs too much in the first few units for an honest guess.
        if elapsed > 0 and done >= max(3, total // 20):
            seconds_left = int(round(elapsed / done * (total - done))) + 1
    stalled = is_stale(run, now) and run.state != QUEUED
    takeover_by = None
    if stalled and run.heartbeat_at is not None:
        after = float(config_value("STALE_AFTER"))
        takeover_by = run.heartbeat_at + timedelta(seconds=after + backends.watch_every())
    return Progress(run.state, found, seconds_left, run.heartbeat_at if stalled else None, takeover_by, run.last_error)


# -- visibility -------------------------------------------------------------------------------


def visible(kind: Kind, scope: Scope) -> sa.Select[Any]:
    """The runs of ``kind`` the admin of ``scope`` may see, newest first."""
    stmt = sa.select(Run).where(Run.kind == kind.name).order_by(Run.created_at.desc(), Run.id.desc())
    if kind.visibility == OWNER:
        return stmt.where(Run.actor == scope.actor, Run.scope_key == scope.key)
    if not scope.is_global:
        stmt = stmt.where(Run.scope_key == scope.key)
    return stmt


def find_visible(kind: Kind, key: str, scope: Scope) -> Run | None:
    """The run named ``key`` in a URL (its token or its id, as the kind says) when
    ``scope``'s admin may see it; None otherwise (an impossible id too)."""
    if kind.url_key == "token":
        if not key or len(key) > 64:
            return None
        condition = Run.token == key
    else:
        run_id = parse_key(Run.__table__.c.id, str(key))
        if run_id is None:
            return None
        condition = Run.id == run_id
    return state().session.execute(visible(kind, scope).where(condition)).scalar_one_or_none()  # type: ignore[no-any-return]


def get_visible(kind: Kind, key: str, scope: Scope) -> Run:
    run = find_visible(kind, key, scope)
    if run is None:
        abort(404)
    return run


def unreached_user_ids(run_id: int, scope: Scope | None = None) -> sa.Select[Any]:
    """Host user ids (text) a run did not reach: failed, skipped, and, once the run
    was cancelled or stopped, never done. With ``scope``, a run of another
    perimeter reaches nobody: it looks like a run that does not exist."""
    stopped = sa.select(run_t.c.id).where(run_t.c.id == run_id, run_t.c.state.in_((CANCELLED, *RESUMABLE_STATES))).exists()
    visible_to: list[Any] = []
    if scope is not None and not scope.is_global:
        visible_to.append(sa.select(run_t.c.id).where(run_t.c.id == run_id, run_t.c.scope_key == scope.key).exists())
    i = item_t.c
    return sa.select(i.user_id).where(
        *visible_to,
        i.run_id == run_id,
        sa.or_(i.state.in_((ITEM_FAILED, SKIPPED)), sa.and_(i.state.in_(LEFT_STATES), stopped)),
    )
