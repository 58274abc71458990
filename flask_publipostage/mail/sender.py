"""Sending a campaign: batches over reused SMTP connections, side by side.

A campaign is a run of the ``mail`` kind; its items are its recipients. Each
*lane* owns one SMTP connection at a time: it claims ``MAIL_BATCH_SIZE`` items,
opens a connection, sends them, and starts again until nothing is left.
``MAIL_CONNECTIONS`` lanes run together, as tasks of the runner (threads of the
web process, or Celery workers); each keeps its share of ``MAIL_RATE_LIMIT``
messages per minute.

Failures:

* the server cannot be reached or drops the connection (``OSError``,
  ``SMTPServerDisconnected``, a 421): the campaign waits (``waiting``) and the
  lane retries with an exponential back-off; the message in flight is sent again
  and flagged as a possible duplicate;
* a temporary refusal of one message (4xx): that message is retried later, up to
  ``MAIL_MAX_ATTEMPTS`` times;
* a permanent refusal (5xx): that message fails with the server's answer; the
  campaign goes on.
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from flask_mail import BadHeaderError, Connection

from ..access import Scope
from ..config import config_value
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..models import utcnow
from ..recipients import EXPIRED, Recipient, Related
from ..runs import backends, core
from ..runs.core import ItemRow
from ..runs.models import ITEM_FAILED, PENDING, SENT, SKIPPED, Run
from ..state import state
from . import journal
from .message import MailConfigError, MailSettings, MessageFactory, address_problem, ensure_mail

log = logging.getLogger(__name__)

SEND_LANE = "publipostage.mail.lane"

#: Longest sleep between two heartbeats.
SLEEP_SLICE = 1.0
#: Seconds a lane task sends before it hands over to a new task (Celery tasks stay short).
LANE_SLICE = 60.0
#: Consecutive database errors a lane survives.
DB_RETRIES = 5


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


class Lane:
    """Claims batches of one campaign and sends each over one SMTP connection."""

    def __init__(self, run: Run, limiter: RateLimiter, failures: int = 0, stop: threading.Event | None = None) -> None:
        self.run_id = run.id
        self.token = run.token
        self.school_name = run.school_name
        self.selection = core.selection_of(run, core.frozen_scope(run))
        self.related = Related(state().host, self.selection)
        self.limiter = limiter
        self.stop = stop
        self.failures = failures
        self.claim = secrets.token_hex(8)
        self.batch_size = max(1, int(config_value("MAIL_BATCH_SIZE")))
        self.group_size = max(1, int(config_value("MAIL_JOURNAL_GROUP")))
        self.max_attempts = max(1, int(config_value("MAIL_MAX_ATTEMPTS")))
        self.retry_delay = float(config_value("MAIL_RETRY_DELAY"))
        self.max_retry_delay = float(config_value("MAIL_MAX_RETRY_DELAY"))
        self.renew_every = float(config_value("STALE_AFTER")) / 3
        self._factory: MessageFactory | None = None

    def factory(self) -> MessageFactory:
        if self._factory is None:
            self._factory = MessageFactory(MailSettings.load(self.school_name))
        return self._factory

    def backoff(self) -> float:
        return min(self.retry_delay * (2 ** max(0, self.failures - 1)), self.max_retry_delay)

    def step(self) -> Action:
        """Send one batch; say what to do next."""
        if not core.is_active(self.run_id):
            return STOP
        rows = journal.claim(self.run_id, self.batch_size, self.claim)
        if not rows:
            wait = journal.next_work_in(self.run_id)
            if wait is None:
                core.finish(self.run_id)
                return STOP
            return Action(sleep=wait)
        try:
            factory = self.factory()
        except MailConfigError as exc:
            journal.write_outcomes(journal.release(rows), self.claim)
            core.record_error(self.run_id, str(exc))
            self.failures += 1
            return Action(sleep=self.backoff())
        try:
            self.send_batch(rows, factory)
        except SmtpUnavailable as exc:
            self.failures += 1
            log.warning(
                "publipostage campaign %d: SMTP unavailable (%s), retrying in %.1f s",
                self.run_id,
                exc.reason,
                self.backoff(),
            )
            if not core.mark_waiting(self.run_id, exc.reason):
                return STOP
            return Action(sleep=self.backoff())
        self.failures = 0
        return CONTINUE

    def send_batch(self, rows: list[ItemRow], factory: MessageFactory) -> None:
        try:
            recipients = {row.id: recipient for row, recipient in core.accounts(self.selection, rows, self.related)}
        finally:
            state().session.rollback()
        outstanding = {r.id: r for r in rows}
        outcomes: list[journal.Outcome] = []
        connection: TimedConnection | None = None
        try:
            connection = open_connection()
            core.mark_running(self.run_id)
            last_renewal = time.monotonic()
            for start in range(0, len(rows), self.group_size):
                group = [r for r in rows[start : start + self.group_size] if r.id in outstanding]
                held = journal.start_group(self.claim, list(outstanding), [r.id for r in group], outcomes)
                outcomes = []
                last_renewal = time.monotonic()
                if held != len(outstanding):
                    self._drop_lost_claims(outstanding)
                    group = [r for r in group if r.id in outstanding]
                core.heartbeat(self.run_id)
                if (self.stop is not None and self.stop.is_set()) or not core.is_active(self.run_id):
                    break
                for row in group:
                    if self.stop is not None and self.stop.is_set():
                        break
                    self.limiter.wait()
                    if time.monotonic() - last_renewal > self.renew_every:
                        held = journal.start_group(self.claim, list(outstanding), [], outcomes)
                        outcomes = []
                        last_renewal = time.monotonic()
                        if held != len(outstanding):
                            self._drop_lost_claims(outstanding)
                            if row.id not in outstanding:
                                continue
                    try:
                        outcome = self.send_one(connection, row, recipients.get(row.id), factory)
                    except _ConnectionLost as exc:
                        del outstanding[row.id]
                        outcomes.append(self._lost(row, exc.reason))
                        raise SmtpUnavailable(exc.reason) from None
                    del outstanding[row.id]
                    outcomes.append(outcome)
        except BaseException:
            # What was sent stays sent; the rest goes back to the pool untouched.
            try:
                journal.write_outcomes(outcomes + journal.release(outstanding.values()), self.claim)
            finally:
                close_quietly(connection)
            raise
        journal.write_outcomes(outcomes + journal.release(outstanding.values()), self.claim)
        close_quietly(connection)
        log.debug("publipostage campaign %d: batch of %d processed", self.run_id, len(rows))

    def _drop_lost_claims(self, outstanding: dict[int, ItemRow]) -> None:
        # Another sender took over rows of this batch (our claim went stale): leave them.
        mine = journal.held_ids(self.claim, outstanding)
        for row_id in list(outstanding):
            if row_id not in mine:
                del outstanding[row_id]

    def _lost(self, row: ItemRow, reason: str) -> journal.Outcome:
        # Sent or not, nobody knows: send it again, flagged.
        if row.attempts + 1 >= self.max_attempts:
            return journal.Outcome(row.id, ITEM_FAILED, attempted=True, reason=reason, possibly_duplicate=True)
        return journal.Outcome(row.id, PENDING, attempted=True, reason=reason, possibly_duplicate=True)

    def send_one(
        self,
        connection: TimedConnection,
        row: ItemRow,
        recipient: Recipient | None,
        factory: MessageFactory,
    ) -> journal.Outcome:
        dup = row.possibly_duplicate
        if recipient is None:
            return journal.Outcome(
                row.id,
                ITEM_FAILED,
                reason=_("The account no longer exists (or left the perimeter)."),
                possibly_duplicate=dup,
            )
        address = (recipient.email or "").strip()
        if not address:
            return journal.Outcome(row.id, SKIPPED, reason=_("No email address."), possibly_duplicate=dup)
        if recipient.content == EXPIRED:
            # An expired code is never sent (checked now: it may expire after the start).
            return journal.Outcome(row.id, SKIPPED, reason=_("The activation code has expired: the email was not sent."),
                                   possibly_duplicate=dup)
        problem = address_problem(address)
        if problem:
            return journal.Outcome(row.id, ITEM_FAILED, reason=problem, email=address[:320], possibly_duplicate=dup)
        message_id = factory.message_id(self.token, row.id)
        try:
            message = factory.build(recipient, address, message_id)
        except Exception as exc:  # noqa: BLE001 (a host template's error fails one delivery, not the run)
            # The exception text could quote the template's data: its type only.
            log.warning("publipostage campaign %d: message for item %d not built (%s)", self.run_id, row.id, type(exc).__name__)
            return journal.Outcome(
                row.id,
                ITEM_FAILED,
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
            return journal.Outcome(row.id, ITEM_FAILED, reason=_("Invalid header."), email=address, possibly_duplicate=dup)
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

    def _refused(self, row: ItemRow, address: str, code: int, text: Any) -> journal.Outcome:
        reason = _("SMTP server: %(code)s %(text)s", code=code, text=_decode(text))
        if code == 421 or not 400 <= int(code or 0) < 600:
            raise _ConnectionLost(reason)
        if code >= 500:
            return journal.Outcome(
                row.id, ITEM_FAILED, attempted=True, reason=reason, email=address, possibly_duplicate=row.possibly_duplicate
            )
        attempts = row.attempts + 1
        if attempts >= self.max_attempts:
            return journal.Outcome(
                row.id, ITEM_FAILED, attempted=True, reason=reason, email=address, possibly_duplicate=row.possibly_duplicate
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


# -- lanes and the campaign's driver ---------------------------------------------------------


def sleep_alive(run_id: int, seconds: float, stop: threading.Event | None = None) -> None:
    """Sleep, writing heartbeats, so a waiting campaign is not taken for dead."""
    end = time.monotonic() + max(0.0, seconds)
    while True:
        left = end - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            return
        time.sleep(min(SLEEP_SLICE, left))
        core.heartbeat(run_id)


@backends.task(SEND_LANE)
def lane_task(run_id: int, lane: int = 0, failures: int = 0, errors: int = 0) -> None:
    """One lane of a campaign: batches, one connection each, for ``LANE_SLICE``
    seconds, then the lane goes on in a new task while something is left."""
    run = core.get(run_id)
    if run is None or not run.is_active:
        return
    stop = backends.runner().stopping
    rate = float(config_value("MAIL_RATE_LIMIT") or 0)
    # Each lane keeps its share of the campaign's rate.
    worker = Lane(run, RateLimiter(rate / max(1, int(config_value("MAIL_CONNECTIONS"))) if rate else 0),
                  failures=failures, stop=stop)
    deadline = time.monotonic() + LANE_SLICE
    while not stop.is_set():
        core.heartbeat(run_id)
        try:
            action = worker.step()
            errors = 0
        except sa.exc.OperationalError as exc:
            # A busy or restarting database: wait, the journal is intact.
            errors += 1
            state().session.remove()
            if errors > DB_RETRIES:
                log.exception("publipostage campaign %d: a sending lane stopped", run_id)
                core.record_error(run_id, _("Internal error: %(error)s", error=type(exc).__name__))
                return
            log.warning("publipostage campaign %d: database error (%s), retrying", run_id, type(exc.orig).__name__)
            action = Action(sleep=worker.retry_delay * errors)
        if action.stop:
            return
        if action.sleep:
            sleep_alive(run_id, action.sleep, stop)
        if time.monotonic() > deadline:
            backends.submit(SEND_LANE, run_id=run_id, lane=lane, failures=worker.failures, errors=errors)
            return


def drive(run: Run, scope: Scope) -> None:
    """Start the campaign's ``MAIL_CONNECTIONS`` lanes (taken over: again)."""
    lanes = max(1, int(config_value("MAIL_CONNECTIONS")))
    log.info("publipostage campaign %d: sending over %d connections", run.id, lanes)
    for lane in range(lanes):
        backends.submit(SEND_LANE, run_id=run.id, lane=lane)


KIND = core.register(
    core.Kind(
        name="mail",
        drive=drive,
        visibility=core.PERIMETER,
        url_key="id",
        busy=_l(
            "You already have as many email campaigns under way as allowed: wait until one is over "
            "(or stop it) before starting another one."
        ),
    )
)
