"""Bounces: the delivery-status notifications that come back, and the deliveries
they name marked failed.

A relay accepts a message, and the recipient's server refuses it hours later
(unknown mailbox, full mailbox): a delivery-status notification (RFC 3464,
``multipart/report; report-type=delivery-status``) then comes back to the
sender's mailbox, while the journal still says "sent". ``flask publipostage
bounces`` reads that mailbox, over IMAP (``MAIL_BOUNCE_IMAP_*``, TLS verified as
for the relay) or as a local Maildir (``MAIL_BOUNCE_MAILDIR``), and marks each
delivery a notification reports as failed, with the reason the recipient's
server gave: the campaign's report and "the accounts not reached" then count it.

A notification names the delivery by the Message-ID of the message it returns
(its headers are part of the notification): each delivery has its own,
``<publipostage.{run token}.{item id}@domain>`` (:meth:`MessageFactory.message_id`),
so no guess and no address lookup is needed. A notification is marked read once
it is dealt with (the delivery marked, or nothing of ours to mark); one whose
delivery is still being sent stays unread for the next time; other messages of
the mailbox are never touched.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import logging
import mailbox
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message

import sqlalchemy as sa

from ..config import config_value
from ..i18n import gettext as _
from ..runs.core import engine, item_t, run_t
from ..runs.models import ITEM_FAILED, LEFT_STATES, REASON_LENGTH, SENT
from . import tls

log = logging.getLogger(__name__)

#: The Message-ID of a delivery: its run's token and its item's id.
_OUR_ID = re.compile(r"<publipostage\.([A-Za-z0-9_-]{1,64})\.(\d{1,18})@[^>\s]+>")


class BounceSourceError(Exception):
    """The bounce mailbox is not configured or cannot be read (French)."""


@dataclass(frozen=True)
class Bounce:
    """One recipient of a notification that could not be reached."""

    message_id: str
    recipient: str
    status: str
    diagnostic: str

    @property
    def reason(self) -> str:
        detail = " ".join(f"{self.status} {self.diagnostic}".split())[:300]
        return _("Bounced by the recipient's server: %(detail)s", detail=detail)


def _header_block(part: Message) -> Message | None:
    """The returned message's headers, from a ``message/rfc822`` or a
    ``text/rfc822-headers`` part."""
    if part.get_content_type() in ("message/rfc822", "message/global"):
        payload = part.get_payload()
        return payload[0] if isinstance(payload, list) and payload else None
    if part.get_content_type() in ("text/rfc822-headers", "message/global-headers"):
        raw = part.get_payload(decode=True) or b""
        return email.message_from_bytes(bytes(raw), policy=email.policy.compat32)
    return None


def parse(raw: bytes) -> list[Bounce] | None:
    """The failed recipients a notification reports; None when ``raw`` is not a
    delivery-status notification."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() != "multipart/report" or (
        str(message.get_param("report-type") or "").lower() != "delivery-status"
    ):
        return None
    message_id = ""
    fields: list[Message] = []
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            blocks = part.get_payload()
            fields = list(blocks[1:]) if isinstance(blocks, list) else []  # the first is per message
        elif not message_id:
            headers = _header_block(part)
            if headers is not None:
                message_id = " ".join(str(headers.get("Message-ID", "")).split())
    bounces = []
    for block in fields:
        if str(block.get("Action", "")).strip().lower() != "failed":
            continue  # delayed, delivered, relayed, expanded: not a failure
        recipient = str(block.get("Final-Recipient", "")).split(";", 1)[-1].strip()
        bounces.append(
            Bounce(message_id, recipient, str(block.get("Status", "")).strip(), str(block.get("Diagnostic-Code", "")))
        )
    return bounces


@dataclass
class Report:
    """What a pass over the mailbox did."""

    read: int = 0
    marked: int = 0
    later: int = 0


def apply(bounces: list[Bounce]) -> tuple[int, bool]:
    """Mark the deliveries ``bounces`` name failed: ``(how many, settled)``, not
    settled while one of them is still being sent (try again later)."""
    settled = True
    marked = 0
    for bounce in bounces:
        found = _OUR_ID.fullmatch(bounce.message_id)
        if found is None:
            continue
        token, item_id = found.group(1), int(found.group(2))
        i = item_t.c
        with engine().begin() as conn:
            row = conn.execute(
                sa.select(i.state)
                .select_from(item_t.join(run_t, run_t.c.id == i.run_id))
                .where(i.id == item_id, run_t.c.token == token, i.message_id == bounce.message_id)
            ).first()
            if row is None:
                continue
            if row[0] in LEFT_STATES:
                settled = False
                continue
            marked += conn.execute(
                sa.update(item_t).where(i.id == item_id, i.state == SENT)
                # It never reached the account: no longer a distribution.
                .values(state=ITEM_FAILED, reason=bounce.reason[:REASON_LENGTH], distributed_at=None)
            ).rowcount
    return marked, settled


# -- where the notifications are --------------------------------------------------------------

#: A message of the mailbox, and how to mark it read.
Entry = tuple[bytes, Callable[[], None]]


def _imap_entries() -> Iterator[Entry]:
    host = str(config_value("MAIL_BOUNCE_IMAP_HOST"))
    port = int(config_value("MAIL_BOUNCE_IMAP_PORT"))
    timeout = float(config_value("MAIL_TIMEOUT"))
    context = tls.context()
    try:
        if config_value("MAIL_BOUNCE_IMAP_STARTTLS"):
            connection: imaplib.IMAP4 = imaplib.IMAP4(host, port, timeout=timeout)
            connection.starttls(ssl_context=context)
        else:
            connection = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
    except OSError as exc:
        if tls.is_certificate_error(exc):
            raise BounceSourceError(
                _("Certificate of the bounce mailbox refused (%(detail)s): the academy's own authority goes in "
                  "PUBLIPOSTAGE_MAIL_TLS_CA_FILE.", detail=getattr(exc, "verify_message", "") or str(exc))
            ) from None
        raise BounceSourceError(_("The bounce mailbox cannot be reached: %(detail)s", detail=str(exc) or type(exc).__name__)) from None
    try:
        try:
            connection.login(str(config_value("MAIL_BOUNCE_IMAP_USER") or ""),
                             str(config_value("MAIL_BOUNCE_IMAP_PASSWORD") or ""))
        except imaplib.IMAP4.error:
            raise BounceSourceError(
                _("The bounce mailbox refused the login: check PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_USER and "
                  "PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_PASSWORD.")
            ) from None
        folder = str(config_value("MAIL_BOUNCE_IMAP_FOLDER") or "INBOX")
        status, _data = connection.select(_quoted(folder))
        if status != "OK":
            raise BounceSourceError(_("The bounce mailbox has no folder “%(folder)s”.", folder=folder))
        # The server picks the notifications out: other messages are never fetched.
        status, data = connection.uid("SEARCH", "UNSEEN", "HEADER", "Content-Type", '"delivery-status"')
        for uid in (data[0] or b"").split() if status == "OK" else []:
            status, fetched = connection.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((item[1] for item in fetched if isinstance(item, tuple)), None)
            if status != "OK" or raw is None:
                continue

            def seen(uid: bytes = uid) -> None:
                connection.uid("STORE", uid, "+FLAGS", "(\\Seen)")

            yield bytes(raw), seen
    finally:
        try:
            connection.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _maildir_entries(path: str) -> Iterator[Entry]:
    try:
        box = mailbox.Maildir(path, create=False)
        keys = list(box.keys())
    except OSError as exc:
        raise BounceSourceError(_("The bounce Maildir cannot be read: %(detail)s", detail=str(exc))) from None
    for key in keys:
        try:
            message = box[key]
        except KeyError:  # taken meanwhile by a mail client
            continue
        if "S" in message.get_flags():
            continue

        def seen(key: str = key, message: mailbox.MaildirMessage = message) -> None:
            message.set_subdir("cur")
            message.add_flag("S")
            box[key] = message

        yield message.as_bytes(), seen


def entries() -> Iterator[Entry]:
    """The unread messages of the configured bounce mailbox."""
    if config_value("MAIL_BOUNCE_IMAP_HOST"):
        return _imap_entries()
    if config_value("MAIL_BOUNCE_MAILDIR"):
        return _maildir_entries(str(config_value("MAIL_BOUNCE_MAILDIR")))
    raise BounceSourceError(
        _("No bounce mailbox is configured (PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_HOST or PUBLIPOSTAGE_MAIL_BOUNCE_MAILDIR).")
    )


def collect(source: Iterator[Entry] | None = None) -> Report:
    """Read the bounce mailbox once; mark the deliveries it reports failed."""
    report = Report()
    for raw, seen in source if source is not None else entries():
        bounces = parse(raw)
        if bounces is None:
            continue
        report.read += 1
        marked, settled = apply(bounces)
        report.marked += marked
        if settled:
            seen()
        else:
            report.later += 1
    if report.marked:
        log.info("publipostage: %d deliveries marked failed after a bounce", report.marked)
    return report
