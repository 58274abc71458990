"""Bounces: delivery-status notifications (RFC 3464) built as a relay writes them,
put in a real IMAP mailbox (Debian's dovecot) or a Maildir, read back by
``flask publipostage bounces``."""

from __future__ import annotations

import html
import mailbox
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trustme
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.runs.models import RunItem
from flask_publipostage.selection import Selection

from .conftest import RoleClient
from .hosts import db
from .imap import DovecotServer
from .runs import campaign, items, stop_active_runs
from .smtp import Received, SmtpServer, populate
from .tools import require_tool

BASE = "/imports-exports/publipostage"


@pytest.fixture
def dovecot(academy: trustme.CA) -> Iterator[DovecotServer]:
    server = DovecotServer(require_tool("dovecot", "dovecot-imapd"), academy.issue_cert("127.0.0.1")).start()
    yield server
    server.close()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    path = tmp_path / "bounces"
    mailbox.Maildir(str(path), create=True)
    return path


@pytest.fixture
def app_config(smtp: SmtpServer, mail_config: dict[str, Any]) -> dict[str, Any]:
    return {**smtp.config(), "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1, **mail_config}


@pytest.fixture(autouse=True)
def stop_campaigns(app: Flask, smtp: SmtpServer) -> Iterator[None]:
    yield
    with app.app_context():
        stop_active_runs()


def use_imap(app: Flask, dovecot: DovecotServer, ca_file: str) -> None:
    app.config.update(
        PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_HOST=dovecot.host,
        PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_PORT=dovecot.port,
        PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_USER=dovecot.user,
        PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_PASSWORD=dovecot.password,
        PUBLIPOSTAGE_MAIL_TLS_CA_FILE=ca_file,
    )


def send_campaign(app: Flask, count: int = 3) -> int:
    with app.app_context():
        populate(count)
        started, _created = campaigns.start(Selection.from_args({}, Scope(actor="super", key="*"), extra_params=()))
        assert campaign(started.id).sent == count
        return started.id


def dsn(original: Received, *, action: str = "failed", status: str = "5.1.1", headers_only: bool = False,
        diagnostic: str = "smtp; 550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table") -> bytes:
    """A delivery-status notification as Postfix writes one (RFC 3464)."""
    rcpt = original.rcpt_tos[0]
    boundary = "9A1B2C3D4E.1767225600/relay.academie.example"
    if headers_only:
        returned_type = "text/rfc822-headers"
        returned = original.content.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    else:
        returned_type = "message/rfc822"
        returned = original.content
    head = (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@relay.academie.example (Mail Delivery System)\r\n"
        "To: noreply@ent.test.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "Message-Id: <20260901120000.9A1B2C3D4E@relay.academie.example>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; relay.academie.example\r\n"
        "X-Postfix-Queue-ID: 9A1B2C3D4E\r\n"
        "Arrival-Date: Tue,  1 Sep 2026 11:58:00 +0200 (CEST)\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\n"
        f"Original-Recipient: rfc822;{rcpt}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.example.org\r\n"
        f"Diagnostic-Code: {diagnostic.format(rcpt=rcpt)}\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Description: Undelivered Message\r\n"
        f"Content-Type: {returned_type}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
    ).encode()
    return head + returned + f"\r\n--{boundary}--\r\n".encode()


def message_to(smtp: SmtpServer, address: str) -> Received:
    return next(m for m in smtp.messages if m.rcpt_tos == (address,))


def states(run_id: int) -> dict[str, tuple[str, str | None]]:
    return {item.email or "": (item.state, item.reason) for item in items(run_id)}


def test_imap_bounces_mark_the_deliveries_failed(
    app: Flask, client: RoleClient, smtp: SmtpServer, dovecot: DovecotServer, ca_file: str
) -> None:
    use_imap(app, dovecot, ca_file)
    run_id = send_campaign(app, 4)
    a, b, c, d = (f"eleve.{i:06d}@example.org" for i in range(4))
    dovecot.append(dsn(message_to(smtp, a)), ca_file)  # the whole message returned
    dovecot.append(dsn(message_to(smtp, b), status="5.2.2", headers_only=True,
                       diagnostic="smtp; 552 5.2.2 <{rcpt}>: Mailbox full"), ca_file)
    dovecot.append(dsn(message_to(smtp, c), action="delayed", status="4.4.1"), ca_file)  # not a failure
    other = smtp.messages[0].content.replace(b"publipostage.", b"other-app.")
    dovecot.append(dsn(Received("x", (d,), other)), ca_file)  # not one of ours
    dovecot.append(b"From: someone@example.org\r\nSubject: Merci\r\n\r\nMerci pour le message.\r\n", ca_file)

    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert result.exit_code == 0, result.output
    assert "4 avis de non-remise lus, 2 envois marqués en échec." in result.output
    with app.app_context():
        found = states(run_id)
        assert found[a][0] == "failed" and "5.1.1" in (found[a][1] or "") and "User unknown" in (found[a][1] or "")
        assert found[b][0] == "failed" and "Mailbox full" in (found[b][1] or "")
        assert found[a][1].startswith("Rejeté par le serveur du destinataire")  # type: ignore[union-attr]
        assert found[c][0] == "sent" and found[d][0] == "sent"
        bounced = campaign(run_id)
        assert (bounced.state, bounced.sent, bounced.failed) == ("done", 2, 2)
    # The report and the accounts "not reached" count them.
    page = " ".join(html.unescape(client.get(f"{BASE}/mail/campaigns/{run_id}", "super").data.decode()).split())
    assert "2 en échec" in page and "Mailbox full" in page and "eleve.000000" in page
    unreached = client.get(f"{BASE}/preview.json?campaign={run_id}", "super").get_json()
    assert sorted(account["login"] for account in unreached["accounts"]) == ["eleve.000000", "eleve.000001"]
    # Read once: the notifications are marked read, the other mail is left as it was.
    assert dovecot.unseen(ca_file) == 1
    again = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert "0 avis de non-remise lu, 0 envoi marqué en échec." in again.output


def test_a_notification_waits_while_its_message_is_being_sent(
    app: Flask, smtp: SmtpServer, dovecot: DovecotServer, ca_file: str
) -> None:
    use_imap(app, dovecot, ca_file)
    run_id = send_campaign(app, 1)
    address = "eleve.000000@example.org"
    dovecot.append(dsn(message_to(smtp, address)), ca_file)
    with app.app_context():
        db.session.execute(sa.update(RunItem).where(RunItem.run_id == run_id).values(state="sending"))
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert "1 avis laissé pour la prochaine fois" in result.output
    assert dovecot.unseen(ca_file) == 1
    with app.app_context():
        db.session.execute(sa.update(RunItem).where(RunItem.run_id == run_id).values(state="sent"))
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert "1 envoi marqué en échec" in result.output
    assert dovecot.unseen(ca_file) == 0


def test_an_unproven_imap_server_gets_no_password(
    app: Flask, smtp: SmtpServer, dovecot: DovecotServer, ca_file: str
) -> None:
    use_imap(app, dovecot, ca_file)
    app.config["PUBLIPOSTAGE_MAIL_TLS_CA_FILE"] = None  # the system's authorities do not know the academy's
    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert result.exit_code != 0
    assert "Certificat de la boîte des retours refusé" in result.output
    use_imap(app, dovecot, ca_file)
    app.config["PUBLIPOSTAGE_MAIL_BOUNCE_IMAP_PASSWORD"] = "wrong"
    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert result.exit_code != 0 and "La boîte des retours a refusé l'identifiant" in result.output


def test_maildir_bounces(app: Flask, smtp: SmtpServer, maildir: Path) -> None:
    app.config["PUBLIPOSTAGE_MAIL_BOUNCE_MAILDIR"] = str(maildir)
    run_id = send_campaign(app, 2)
    box = mailbox.Maildir(str(maildir), create=False)
    key = box.add(dsn(message_to(smtp, "eleve.000001@example.org")))
    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert result.exit_code == 0, result.output
    assert "1 avis de non-remise lu, 1 envoi marqué en échec." in result.output
    with app.app_context():
        assert states(run_id)["eleve.000001@example.org"][0] == "failed"
        assert states(run_id)["eleve.000000@example.org"][0] == "sent"
    assert "S" in mailbox.Maildir(str(maildir), create=False)[key].get_flags()


def test_no_bounce_mailbox_is_said(app: Flask, smtp: SmtpServer) -> None:
    result = app.test_cli_runner().invoke(args=["publipostage", "bounces"])
    assert result.exit_code != 0
    assert "Aucune boîte de retours n'est configurée" in result.output
