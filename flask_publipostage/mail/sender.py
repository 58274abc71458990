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
  campaign goes on;
* wrong settings (credentials refused, a login the relay requires, a
  certificate that does not prove the relay is the relay): nothing will change
  until someone fixes them, and every retry is one more failed login towards a
  locked account. The campaign is suspended at once (:func:`core.suspend`), no
  recipient is marked for it, and it goes on from there once resumed.
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parseaddr
from typing import Any

import sqlalchemy as sa
from flask import current_app
from flask_mail import BadHeaderError, Connection, email_dispatched

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
from . import journal, tls
from .message import CredentialMessage, MailConfigError, MailSettings, MessageFactory, address_problem, ensure_mail

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


class SmtpConfigError(Exception):
    """The server refused our settings: what to fix, in French."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ConnectionLost(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- SMTP connections -------------------------------------------------------------------


class TimedConnection(Connection):
    """Flask-Mail's connection with a socket timeout, TLS verified
    (:func:`tls.context`), never in debug mode (smtplib's debug output would print
    the messages, codes included), and speaking the relay's extensions: 8-bit
    bodies declared ``BODY=8BITMIME`` where the relay offers it (quoted-printable
    otherwise), addresses with accents sent with ``SMTPUTF8`` where it offers
    that."""

    def __init__(self, mail: Any, timeout: float) -> None:
        super().__init__(mail)
        self.timeout = timeout

    def configure_host(self) -> smtplib.SMTP:
        host: smtplib.SMTP
        context = tls.context()
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(self.mail.server, self.mail.port, timeout=self.timeout, context=context)
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=self.timeout)
        if self.mail.use_tls:
            host.starttls(context=context)
        if self.mail.username and self.mail.password:
            login_once(host, self.mail.username, self.mail.password)
        return host

    def offers(self, extension: str) -> bool:
        """The relay announced ``extension`` (after STARTTLS: what it says then)."""
        host = self.host
        if host is None:
            return False
        host.ehlo_or_helo_if_needed()
        return bool(host.has_extn(extension))

    @property
    def smtputf8(self) -> bool:
        return self.offers("smtputf8")

    def send(self, message: Any, envelope_from: Any = None) -> None:
        options: list[str] = []
        if isinstance(message, CredentialMessage):
            message.eight_bit = self.offers("8bitmime")
            if message.eight_bit:
                options.append("BODY=8BITMIME")
            addresses = [str(envelope_from or ""), *(str(r) for r in message.recipients)]
            message.utf8 = not all(a.isascii() for a in addresses)
            if message.utf8:
                # address_problem() keeps such addresses away from other relays.
                if not self.smtputf8:
                    raise smtplib.SMTPNotSupportedError("SMTPUTF8 not offered by the server")
                options.append("SMTPUTF8")
                # Flask-Mail would encode the envelope's address as an RFC 2047 word.
                self._send_utf8(message, envelope_from, options)
                return
        message.mail_options = options
        super().send(message, envelope_from)

    def _send_utf8(self, message: CredentialMessage, envelope_from: Any, options: list[str]) -> None:
        if message.has_bad_headers():
            raise BadHeaderError
        if self.host is not None:
            sender = envelope_from or message.sender
            self.host.sendmail(
                sender[1] if isinstance(sender, tuple) else parseaddr(str(sender))[1],
                [str(r) for r in message.recipients],
                message.as_bytes(),
                options,
            )
        email_dispatched.send(current_app._get_current_object(), message=message)  # type: ignore[attr-defined]


#: smtplib's order of preference.
AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


def login_once(host: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with one mechanism. ``smtplib.SMTP.login`` tries every mechanism the
    relay offers in turn: with a wrong password, each is one more failed login
    counted towards locking the account."""
    host.ehlo_or_helo_if_needed()
    if not host.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = host.esmtp_features["auth"].upper().split()
    mechanism = next((m for m in AUTH_MECHANISMS if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPException("No suitable authentication method found.")
    host.user, host.password = user, password
    host.auth(mechanism, getattr(host, "auth_" + mechanism.lower().replace("-", "_")))


def open_connection(mail: Any = None) -> TimedConnection:
    """An open connection (``close_quietly`` it); raises SmtpConfigError when the
    server refused the settings, SmtpUnavailable when it could not be reached."""
    connection = TimedConnection(mail or ensure_mail(), float(config_value("MAIL_TIMEOUT")))
    try:
        connection.__enter__()
    except (smtplib.SMTPException, OSError) as exc:
        problem = configuration_problem(exc)
        if problem:
            raise SmtpConfigError(problem) from exc
        raise SmtpUnavailable(describe(exc)) from exc
    return connection


#: Answers meaning "not with these settings": authentication required (530, or
#: encryption first), credentials refused (535), mechanism too weak (534),
#: encryption required for it (538).
CONFIG_CODES = frozenset({530, 534, 535, 538})


def configuration_problem(exc: BaseException) -> str | None:
    """What to fix, in French, when ``exc`` says the settings are wrong (a retry
    would fail the same way); None for anything a retry may cure."""
    for cause in _chain(exc):
        if tls.is_certificate_error(cause):
            detail = getattr(cause, "verify_message", "") or str(cause)
            return _(
                "Certificate of the mail server refused (%(detail)s): the server is not the one of MAIL_SERVER, "
                "or its authority is unknown (the academy's own authority goes in PUBLIPOSTAGE_MAIL_TLS_CA_FILE).",
                detail=_decode(detail),
            )
        if isinstance(cause, smtplib.SMTPNotSupportedError):
            text = str(cause).lower()
            if "starttls" in text:
                return _("The mail server does not offer STARTTLS: check MAIL_USE_TLS, MAIL_USE_SSL and "
                         "MAIL_PORT.")
            if "auth" in text:
                return _("The mail server does not offer authentication on this connection: check MAIL_USE_TLS "
                         "and MAIL_USE_SSL (or remove MAIL_USERNAME).")
        if isinstance(cause, smtplib.SMTPResponseException) and cause.smtp_code in CONFIG_CODES:
            return refused_settings(cause.smtp_code, cause.smtp_error)
        if isinstance(cause, smtplib.SMTPRecipientsRefused):
            for code, text in cause.recipients.values():
                if code in CONFIG_CODES:
                    return refused_settings(code, text)
    return None


def refused_settings(code: int, text: Any) -> str:
    """The French message for a 530/534/535/538 answer."""
    answer = f"{code} {_decode(text)}"
    if code == 530 and "TLS" in answer.upper():
        return _("The mail server requires an encrypted connection (%(answer)s): set MAIL_USE_TLS (or MAIL_USE_SSL).",
                 answer=answer)
    if code == 530:
        return _("The mail server requires authentication (%(answer)s): set MAIL_USERNAME and MAIL_PASSWORD.",
                 answer=answer)
    return _("SMTP credentials refused by the server (%(answer)s): correct MAIL_USERNAME and MAIL_PASSWORD.",
             answer=answer)


def _chain(exc: BaseException) -> list[BaseException]:
    found = [exc]
    while True:
        nxt = found[-1].__cause__ or found[-1].__context__
        if nxt is None or any(nxt is seen for seen in found):
            return found
        found.append(nxt)


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
    root = _chain(exc)[-1]
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
            core.suspend(self.run_id, str(exc))
            return STOP
        try:
            self.send_batch(rows, factory)
        except SmtpConfigError as exc:
            # Every lane meets it; the first one stops the campaign, the others find it stopped.
            log.warning("publipostage campaign %d: the mail server refused the settings", self.run_id)
            core.suspend(self.run_id, exc.reason)
            return STOP
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
        problem = address_problem(address, smtputf8=connection.smtputf8)
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
        if code in CONFIG_CODES:
            # Not this recipient's fault: the row stays outstanding, back to the pool as it was.
            raise SmtpConfigError(refused_settings(code, text))
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
