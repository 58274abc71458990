"""Sending a campaign: batches over reused SMTP connections, side by side.

Each *lane* owns one SMTP connection at a time: it claims ``MAIL_BATCH_SIZE``
deliveries, opens a connection, sends them, and starts again until nothing is
left. ``MAIL_CONNECTIONS`` lanes run together — threads of the web process with the
in-process runner, Celery tasks (one batch each) with the Celery runner. A shared
limiter keeps the whole campaign under ``MAIL_RATE_LIMIT`` messages per minute.

Failures:

* the server cannot be reached or drops the connection (``OSError``,
  ``SMTPServerDisconnected``, a 421): the campaign waits (``waiting_smtp``) and the
  lane retries with an exponential back-off; the message in flight is sent again
  and flagged as a possible duplicate;
* a temporary refusal of one message (4xx): that delivery is retried later, up to
  ``MAIL_MAX_ATTEMPTS`` times;
* a permanent refusal (5xx): that delivery fails with the server's answer; the
  campaign goes on.
"""

from __future__ import annotations

import atexit
import json
import logging
import secrets
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app
from flask_babel import force_locale
from flask_mail import BadHeaderError, Connection

from .. import jobs
from ..access import Scope
from ..config import config_value
from ..i18n import gettext as _
from ..models import utcnow
from ..recipients import Recipient, build
from ..selection import Selection
from . import journal
from .message import (
    MailConfigError,
    MailSettings,
    MessageFactory,
    address_problem,
    ensure_mail,
)
from .models import (
    ACTIVE_STATES,
    DELIVERY_FAILED,
    FAILED,
    PENDING,
    SENT,
    SKIPPED,
    Campaign,
    CampaignPerimeter,
)

log = logging.getLogger(__name__)

SEND_CAMPAIGN = "mail.send_campaign"
SEND_BATCH = "mail.send_batch"

#: Longest sleep between two heartbeats, and longest Celery task sleep.
SLEEP_SLICE = 1.0
CELERY_MAX_SLEEP = 30.0
#: Consecutive database errors a lane survives.
DB_RETRIES = 5
#: Seconds between two looks at campaigns interrupted before start-up.
RESUME_POLL = 10.0


class SmtpUnavailable(Exception):
    """The server could not be reached or dropped the connection."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ConnectionLost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- SMTP connections -------------------------------------------------------------------


class TimedConnection(Connection):
    """Flask-Mail's connection with a socket timeout, and never in debug mode
    (smtplib's debug output would print the messages, codes included)."""

    def __init__(self, mail: Any, timeout: float) -> None:
        super().__init__(mail)
        self.timeout = timeout

    def configure_host(self) -> smtplib.SMTP:
        host: smtplib.SMTP
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(self.mail.server, self.mail.port, timeout=self.timeout)
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=self.timeout)
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


def open_connection(mail: Any = None) -> TimedConnection:
    """An open connection (``close_quietly`` it); raises SmtpUnavailable."""
    connection = TimedConnection(mail or ensure_mail(), float(config_value("MAIL_TIMEOUT")))
    try:
        connection.__enter__()
    except (smtplib.SMTPException, OSError) as exc:
        raise SmtpUnavailable(describe(exc)) from exc
    return connection


def close_quietly(connection: TimedConnection | None) -> None:
    """QUIT, or just close: on a dead socket Flask-Mail's own exit raises
    ``SMTPServerDisconnected`` and hides the error that mattered."""
    if connection is None or connection.host is None:
        return
    try:
        connection.host.quit()
    except (smtplib.SMTPException, OSError):
        try:
            connection.host.close()
        except OSError:
            pass
    connection.host = None


def describe(exc: BaseException) -> str:
    """The root cause of an SMTP or socket error, for the journal (French)."""
    root = exc
    seen = {id(root)}
    while True:
        nxt = root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    if isinstance(root, smtplib.SMTPResponseException):
        text = _decode(root.smtp_error)
        return _("SMTP server: %(code)s %(text)s", code=root.smtp_code, text=text)
    detail = str(root) or type(root).__name__
    if isinstance(root, ConnectionRefusedError):
        return _("SMTP server unreachable (connection refused): %(detail)s", detail=detail)
    if isinstance(root, TimeoutError):
        return _("SMTP server not answering (timeout): %(detail)s", detail=detail)
    return _("SMTP connection lost: %(error)s: %(detail)s", error=type(root).__name__, detail=detail)


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:300]


# -- rate limit -------------------------------------------------------------------------


class RateLimiter:
    """At most ``per_minute`` messages a minute over every lane sharing it."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute if per_minute and per_minute > 0 else 0.0
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


# -- one lane -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    stop: bool = False
    sleep: float = 0.0


CONTINUE = Action()
STOP = Action(stop=True)


def owner_scope(info: journal.CampaignInfo) -> Scope:
    """The campaign owner's perimeter as it was at the start (children and classes
    named in a message stay within it)."""
    host = current_app.extensions["publipostage"].host
    users = None
    if info.scope_users:
        users = sa.cast(host.user_id, sa.String).in_(
            sa.select(CampaignPerimeter.user_id).where(CampaignPerimeter.campaign_id == info.id)
        )
    classes = None
    if info.scope_classes is not None:
        python_type = host.class_id.type.python_type
        classes = host.class_id.in_([python_type(i) for i in json.loads(info.scope_classes)])
    return Scope(actor=info.actor, users=users, classes=classes, key=info.scope_key, school_name=info.school_name)


def load_recipients(user_ids: list[str], scope: Scope | None = None) -> dict[str, Recipient]:
    """Accounts of a claimed batch, read now from the host (codes included)."""
    state = current_app.extensions["publipostage"]
    host = state.host
    # The journal already holds who receives the campaign: no filter but the ids
    # (and the owner's perimeter).
    selection = Selection(scope=scope)
    stmt = selection.statement(host).where(sa.cast(host.user_id, sa.String).in_(user_ids))
    session = state.db.session
    try:
        rows = session.execute(stmt).all()
        found = {str(r.id): r for r in build(selection, rows)}
    finally:
        session.rollback()
    return found


class Lane:
    """Claims batches of one campaign and sends each over one SMTP connection."""

    def __init__(
        self, campaign_id: int, limiter: RateLimiter, failures: int = 0, stop: threading.Event | None = None
    ) -> None:
        self.campaign_id = campaign_id
        self.limiter = limiter
        self.stop = stop
        self.failures = failures
        self.token = secrets.token_hex(8)
        self.batch_size = max(1, int(config_value("MAIL_BATCH_SIZE")))
        self.group_size = max(1, int(config_value("MAIL_JOURNAL_GROUP")))
        self.max_attempts = max(1, int(config_value("MAIL_MAX_ATTEMPTS")))
        self.retry_delay = float(config_value("MAIL_RETRY_DELAY"))
        self.max_retry_delay = float(config_value("MAIL_MAX_RETRY_DELAY"))
        self.renew_every = float(config_value("MAIL_STALE_AFTER")) / 3
        self._factories: dict[str, MessageFactory] = {}

    def factory(self, school_name: str) -> MessageFactory:
        if school_name not in self._factories:
            self._factories[school_name] = MessageFactory(MailSettings.load(school_name))
        return self._factories[school_name]

    def backoff(self) -> float:
        return min(self.retry_delay * (2 ** max(0, self.failures - 1)), self.max_retry_delay)

    def step(self) -> Action:
        """Send one batch; say what to do next."""
        info = journal.campaign_info(self.campaign_id)
        if info is None or info.state not in ACTIVE_STATES:
            return STOP
        rows = journal.claim(self.campaign_id, self.batch_size, self.token)
        if not rows:
            wait = journal.next_work_in(self.campaign_id)
            if wait is None:
                journal.finish_if_complete(self.campaign_id)
                return STOP
            return Action(sleep=wait)
        try:
            factory = self.factory(info.school_name)
        except MailConfigError as exc:
            journal.write_outcomes(journal.release(rows), self.token)
            journal.record_error(self.campaign_id, str(exc))
            self.failures += 1
            return Action(sleep=self.backoff())
        try:
            self.send_batch(rows, info, factory)
        except SmtpUnavailable as exc:
            self.failures += 1
            log.warning(
                "publipostage campaign %d: SMTP unavailable (%s), retrying in %.1f s",
                self.campaign_id,
                exc.reason,
                self.backoff(),
            )
            if not journal.mark_waiting(self.campaign_id, exc.reason):
                return STOP
            return Action(sleep=self.backoff())
        self.failures = 0
        return CONTINUE

    def send_batch(self, rows: list[journal.ClaimedRow], info: journal.CampaignInfo, factory: MessageFactory) -> None:
        recipients = load_recipients([r.user_id for r in rows], owner_scope(info))
        outstanding = {r.id: r for r in rows}
        outcomes: list[journal.Outcome] = []
        connection: TimedConnection | None = None
        try:
            connection = open_connection()
            journal.mark_running(self.campaign_id)
            last_renewal = time.monotonic()
            for start in range(0, len(rows), self.group_size):
                group = [r for r in rows[start : start + self.group_size] if r.id in outstanding]
                held = journal.start_group(self.token, list(outstanding), [r.id for r in group], outcomes)
                outcomes = []
                last_renewal = time.monotonic()
                if held != len(outstanding):
                    self._drop_lost_claims(outstanding)
                    group = [r for r in group if r.id in outstanding]
                journal.heartbeat(self.campaign_id)
                if (self.stop is not None and self.stop.is_set()) or not self._still_active():
                    break
                for row in group:
                    if self.stop is not None and self.stop.is_set():
                        break
                    self.limiter.wait()
                    if time.monotonic() - last_renewal > self.renew_every:
                        held = journal.start_group(self.token, list(outstanding), [], outcomes)
                        outcomes = []
                        last_renewal = time.monotonic()
                        if held != len(outstanding):
                            self._drop_lost_claims(outstanding)
                            if row.id not in outstanding:
                                continue
                    try:
                        outcome = self.send_one(connection, row, recipients.get(row.user_id), info, factory)
                    except _ConnectionLost as exc:
                        del outstanding[row.id]
                        outcomes.append(self._lost(row, exc.reason))
                        raise SmtpUnavailable(exc.reason) from None
                    del outstanding[row.id]
                    outcomes.append(outcome)
        except BaseException:
            # What was sent stays sent; the rest goes back to the pool untouched.
            try:
                journal.write_outcomes(outcomes + journal.release(outstanding.values()), self.token)
            finally:
                close_quietly(connection)
            raise
        journal.write_outcomes(outcomes + journal.release(outstanding.values()), self.token)
        close_quietly(connection)
        log.debug("publipostage campaign %d: batch of %d processed", self.campaign_id, len(rows))

    def _still_active(self) -> bool:
        info = journal.campaign_info(self.campaign_id)
        return info is not None and info.state in ACTIVE_STATES

    def _drop_lost_claims(self, outstanding: dict[int, journal.ClaimedRow]) -> None:
        # Another sender took over rows of this batch (our claim went stale): leave them.
        mine = journal.held_ids(self.token, outstanding)
        for row_id in list(outstanding):
            if row_id not in mine:
                del outstanding[row_id]

    def _lost(self, row: journal.ClaimedRow, reason: str) -> journal.Outcome:
        # Sent or not, nobody knows: send it again, flagged.
        if row.attempts + 1 >= self.max_attempts:
            return journal.Outcome(row.id, DELIVERY_FAILED, attempted=True, reason=reason, possibly_duplicate=True)
        return journal.Outcome(row.id, PENDING, attempted=True, reason=reason, possibly_duplicate=True)

    def send_one(
        self,
        connection: TimedConnection,
        row: journal.ClaimedRow,
        recipient: Recipient | None,
        info: journal.CampaignInfo,
        factory: MessageFactory,
    ) -> journal.Outcome:
        dup = row.possibly_duplicate
        if recipient is None:
            return journal.Outcome(
                row.id,
                DELIVERY_FAILED,
                reason=_("The account no longer exists (or left the perimeter)."),
                possibly_duplicate=dup,
            )
        address = (recipient.email or "").strip()
        if not address:
            return journal.Outcome(row.id, SKIPPED, reason=_("No email address."), possibly_duplicate=dup)
        problem = address_problem(address)
        if problem:
            return journal.Outcome(row.id, DELIVERY_FAILED, reason=problem, email=address[:320], possibly_duplicate=dup)
        message_id = factory.message_id(info.token, row.id)
        try:
            message = factory.build(recipient, address, message_id)
        except Exception as exc:  # noqa: BLE001 (a host template's error fails one delivery, not the run)
            # The exception text could quote the template's data: its type only.
            log.warning("publipostage campaign %d: message for delivery %d not built (%s)", self.campaign_id, row.id, type(exc).__name__)
            return journal.Outcome(
                row.id,
                DELIVERY_FAILED,
                reason=_("The message could not be built (%(error)s).", error=type(exc).__name__),
                email=address,
                possibly_duplicate=dup,
            )
        try:
            connection.send(message, envelope_from=factory.settings.sender[1])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()), (0, b""))
            return self._refused(row, address, code, text)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return self._refused(row, address, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPServerDisconnected as exc:
            raise _ConnectionLost(describe(exc)) from exc
        except smtplib.SMTPResponseException as exc:
            return self._refused(row, address, exc.smtp_code, exc.smtp_error)
        except BadHeaderError:
            return journal.Outcome(row.id, DELIVERY_FAILED, reason=_("Invalid header."), email=address, possibly_duplicate=dup)
        except (smtplib.SMTPException, OSError) as exc:
            raise _ConnectionLost(describe(exc)) from exc
        return journal.Outcome(
            row.id,
            SENT,
            attempted=True,
            sent_at=utcnow(),
            message_id=message_id,
            email=address,
            possibly_duplicate=dup,
        )

    def _refused(self, row: journal.ClaimedRow, address: str, code: int, text: Any) -> journal.Outcome:
        reason = _("SMTP server: %(code)s %(text)s", code=code, text=_decode(text))
        if code == 421 or not 400 <= int(code or 0) < 600:
            raise _ConnectionLost(reason)
        if code >= 500:
            return journal.Outcome(
                row.id, DELIVERY_FAILED, attempted=True, reason=reason, email=address, possibly_duplicate=row.possibly_duplicate
            )
        attempts = row.attempts + 1
        if attempts >= self.max_attempts:
            return journal.Outcome(
                row.id, DELIVERY_FAILED, attempted=True, reason=reason, email=address, possibly_duplicate=row.possibly_duplicate
            )
        delay = min(self.retry_delay * (2 ** (attempts - 1)), self.max_retry_delay)
        return journal.Outcome(
            row.id,
            PENDING,
            attempted=True,
            reason=reason,
            email=address,
            possibly_duplicate=row.possibly_duplicate,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
        )


# -- drivers -----------------------------------------------------------------------------


def sleep_alive(campaign_id: int, seconds: float, stop: threading.Event | None = None) -> None:
    """Sleep, writing heartbeats, so a waiting campaign is not taken for dead."""
    end = time.monotonic() + max(0.0, seconds)
    while True:
        left = end - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            return
        time.sleep(min(SLEEP_SLICE, left))
        journal.heartbeat(campaign_id)


#: Stop signals of the campaigns sending in this process (set when it exits).
_running: set[threading.Event] = set()
_running_lock = threading.Lock()


@atexit.register
def stop_all(timeout: float = 10.0) -> None:
    """Stop every campaign sending in this process (at exit): each lane finishes
    the message in flight and gives its batch back, so a restart resumes without
    possible duplicates."""
    with _running_lock:
        stops = list(_running)
    for stop in stops:
        stop.set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _running_lock:
            if not _running:
                return
        time.sleep(0.05)


def _lane_thread(app: Flask, campaign_id: int, limiter: RateLimiter, stop: threading.Event) -> None:
    with app.app_context(), force_locale("fr"):
        try:
            lane = Lane(campaign_id, limiter, stop=stop)
            db_errors = 0
            while not stop.is_set():
                try:
                    action = lane.step()
                    db_errors = 0
                except sa.exc.OperationalError as exc:
                    # A busy or restarting database: wait, the journal is intact.
                    db_errors += 1
                    if db_errors > DB_RETRIES:
                        raise
                    log.warning("publipostage campaign %d: database error (%s), retrying", campaign_id, type(exc.orig).__name__)
                    app.extensions["publipostage"].db.session.remove()
                    action = Action(sleep=lane.retry_delay * db_errors)
                if action.stop:
                    break
                if action.sleep:
                    sleep_alive(campaign_id, action.sleep, stop)
        except Exception as exc:
            log.exception("publipostage campaign %d: a sending lane stopped", campaign_id)
            try:
                journal.record_error(campaign_id, _("Internal error: %(error)s", error=type(exc).__name__))
            except sa.exc.SQLAlchemyError:
                log.warning("publipostage campaign %d: the error could not be recorded", campaign_id)
        finally:
            app.extensions["publipostage"].db.session.remove()


def run_in_process(app: Flask, campaign_id: int, *, progress: Callable[[dict[str, int]], None] | None = None) -> None:
    """Send with ``MAIL_CONNECTIONS`` threads until the campaign is over."""
    connections = max(1, int(config_value("MAIL_CONNECTIONS", app)))
    limiter = RateLimiter(float(config_value("MAIL_RATE_LIMIT", app) or 0))
    stop = threading.Event()
    with _running_lock:
        _running.add(stop)
    threads = [
        threading.Thread(
            target=_lane_thread,
            args=(app, campaign_id, limiter, stop),
            name=f"publipostage-mail-{campaign_id}-{i}",
            daemon=True,
        )
        for i in range(connections)
    ]
    log.info("publipostage campaign %d: sending over %d connections", campaign_id, connections)
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=SLEEP_SLICE)
            journal.heartbeat(campaign_id)
            if progress is not None:
                progress(journal.counts(campaign_id))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        with _running_lock:
            _running.discard(stop)
    journal.finish_if_complete(campaign_id)


def _drive(app: Flask, campaign_id: int) -> None:
    with app.app_context(), force_locale("fr"):
        try:
            run_in_process(app, campaign_id)
        except Exception:
            log.exception("publipostage campaign %d: sending stopped", campaign_id)
        finally:
            app.extensions["publipostage"].db.session.remove()


@jobs.task(SEND_CAMPAIGN)
def send_campaign(campaign_id: int, force: bool = False, resume: bool = False) -> None:
    """Drive a campaign: in this process (threads) or by spreading Celery tasks."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    states = (*ACTIVE_STATES, FAILED) if resume else ACTIVE_STATES
    if not journal.acquire(campaign_id, force=force, states=states):
        log.info("publipostage campaign %d is finished or driven elsewhere", campaign_id)
        return
    backend = config_value("JOB_BACKEND")
    if backend == "celery":
        for lane in range(max(1, int(config_value("MAIL_CONNECTIONS")))):
            jobs.submit(app, SEND_BATCH, campaign_id=campaign_id, lane=lane)
        return
    if backend == "eager":
        run_in_process(app, campaign_id)
        return
    # Its own threads: a long campaign must not hold one of the runner's few
    # workers (PDF jobs share them).
    threading.Thread(target=_drive, args=(app, campaign_id), name=f"publipostage-mail-{campaign_id}", daemon=True).start()


@jobs.task(SEND_BATCH)
def send_batch(campaign_id: int, lane: int = 0, failures: int = 0, errors: int = 0) -> None:
    """One batch of a campaign, by a Celery worker; then the next one is queued
    (the lane goes on while there is something to send)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    connections = max(1, int(config_value("MAIL_CONNECTIONS")))
    rate = float(config_value("MAIL_RATE_LIMIT") or 0)
    # Each lane keeps its share of the campaign's rate.
    worker = Lane(campaign_id, RateLimiter(rate / connections if rate else 0), failures=failures)
    journal.heartbeat(campaign_id)
    try:
        action = worker.step()
        errors = 0
    except Exception as exc:  # a lost lane would leave the campaign to the others
        errors += 1
        log.exception("publipostage campaign %d: batch failed (lane %d, error %d)", campaign_id, lane, errors)
        if errors > DB_RETRIES:
            journal.record_error(campaign_id, _("Internal error: %(error)s", error=type(exc).__name__))
            return
        action = Action(sleep=worker.retry_delay * errors)
    if action.stop:
        return
    if action.sleep:
        sleep_alive(campaign_id, min(action.sleep, CELERY_MAX_SLEEP))
    jobs.submit(app, SEND_BATCH, campaign_id=campaign_id, lane=lane, failures=worker.failures, errors=errors)


@jobs.on_startup
def resume_interrupted(app: Flask) -> None:
    """At start-up, pick up the campaigns left unfinished by a stopped process.

    Each is taken over once its last heartbeat is older than
    ``MAIL_STALE_AFTER`` (several processes may start together: the take-over is
    atomic, one of them wins). A daemon thread waits for that, so a short command
    (``flask shell``) never starts sending.
    """
    if config_value("JOB_BACKEND", app) == "eager":
        return
    state = app.extensions["publipostage"]
    try:
        with app.app_context():
            ids = list(
                state.db.session.execute(
                    sa.select(Campaign.id).where(Campaign.state.in_(ACTIVE_STATES)).order_by(Campaign.id)
                ).scalars()
            )
            state.db.session.remove()
    except sa.exc.SQLAlchemyError:
        # Tables not created yet (migrations pending): nothing to resume.
        log.debug("publipostage: campaign table not readable at start-up")
        return
    if ids:
        threading.Thread(
            target=_watch_interrupted, args=(app, set(ids)), name="publipostage-mail-resume", daemon=True
        ).start()


def _watch_interrupted(app: Flask, ids: set[int]) -> None:
    time.sleep(min(RESUME_POLL, 2.0))
    while ids:
        try:
            with app.app_context():
                session = app.extensions["publipostage"].db.session
                campaigns = session.execute(sa.select(Campaign).where(Campaign.id.in_(ids))).scalars().all()
                for campaign in campaigns:
                    if not campaign.is_active:
                        ids.discard(campaign.id)
                    elif journal.is_stale(campaign):
                        log.info("publipostage campaign %d: resuming after an interruption", campaign.id)
                        ids.discard(campaign.id)
                        jobs.submit(app, SEND_CAMPAIGN, campaign_id=campaign.id)
                ids.intersection_update(c.id for c in campaigns)
                session.remove()
        except Exception:
            log.exception("publipostage: looking for interrupted campaigns failed")
            return
        time.sleep(RESUME_POLL)
