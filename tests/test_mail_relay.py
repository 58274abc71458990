"""A real relay's demands: a verified certificate (STARTTLS and SMTPS), a login
it refuses or requires, and the extensions it announces (8BITMIME, SMTPUTF8).

Certificates are made for the test by ``trustme``: an authority of the
"academy" (trusted through ``PUBLIPOSTAGE_MAIL_TLS_CA_FILE``), a relay's
certificate for 127.0.0.1, one for ``evil.example``, and one from an authority
nobody trusts.
"""

from __future__ import annotations

import email
import email.policy
import html
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.selection import Selection

from .conftest import RoleClient
from .hosts import add_person, db, make_app
from .runs import campaign, items, stop_active_runs
from .smtp import SMTPS, STARTTLS, SmtpServer, populate

BASE = "/imports-exports/publipostage"
LOGIN = ("ent-relay", "s3cret-relay")


@pytest.fixture
def smtp_options(request: pytest.FixtureRequest, academy: trustme.CA) -> dict[str, Any]:
    """``tls``, ``auth``, ``smtputf8``, ``eight_bit_mime`` as given; ``cert``:
    ``"good"`` (the academy's, for 127.0.0.1), ``"wrong-name"`` (the academy's,
    for evil.example) or ``"unknown"`` (for 127.0.0.1, another authority)."""
    options = dict(getattr(request, "param", {}))
    kind = options.pop("cert", "good")
    if options.get("tls"):
        if kind == "unknown":
            options["certificate"] = trustme.CA().issue_cert("127.0.0.1")
        else:
            options["certificate"] = academy.issue_cert("evil.example" if kind == "wrong-name" else "127.0.0.1")
    return options


@pytest.fixture
def app_config(smtp: SmtpServer, mail_config: dict[str, Any], ca_file: str) -> dict[str, Any]:
    config = {
        **smtp.config(),
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 2,
        "PUBLIPOSTAGE_MAIL_BATCH_SIZE": 5,
        "PUBLIPOSTAGE_MAIL_RETRY_DELAY": 0.05,
        "PUBLIPOSTAGE_MAIL_TIMEOUT": 5,
        "PUBLIPOSTAGE_MAIL_TLS_CA_FILE": ca_file,
    }
    config.update(mail_config)
    return {key: value for key, value in config.items() if value is not None}


@pytest.fixture(autouse=True)
def stop_campaigns(app: Flask, smtp: SmtpServer) -> Iterator[None]:
    yield
    with app.app_context():
        stop_active_runs()


def everyone() -> Selection:
    return Selection.from_args({}, Scope(actor="super", key="*"), extra_params=())


def item_states(run_id: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for item in items(run_id):
        found[item.state] = found.get(item.state, 0) + 1
    return found


def page_text(response: Any) -> str:
    return " ".join(html.unescape(response.data.decode()).split())


# -- the certificate is verified ---------------------------------------------------------------


def relay(mode: str, cert: str = "good", **more: Any) -> dict[str, Any]:
    return {"tls": mode, "cert": cert, **more}


@pytest.mark.parametrize(
    ("smtp_options", "mail_config"),
    [
        # No bundle: the system's authorities do not know the academy's.
        (relay(STARTTLS, auth=LOGIN), {"PUBLIPOSTAGE_MAIL_TLS_CA_FILE": None, "MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
        (relay(SMTPS, auth=LOGIN), {"PUBLIPOSTAGE_MAIL_TLS_CA_FILE": None, "MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
        # Another authority.
        (relay(STARTTLS, "unknown", auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
        (relay(SMTPS, "unknown", auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
        # The academy's authority, but a certificate for another name.
        (relay(STARTTLS, "wrong-name", auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
        (relay(SMTPS, "wrong-name", auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
    ],
    indirect=True,
)
def test_an_unproven_relay_gets_neither_password_nor_codes(client: RoleClient, app_ctx: Flask, smtp: SmtpServer) -> None:
    populate(3)
    started, _created = campaigns.start(everyone())
    stopped = campaign(started.id)
    # Stopped at once, saying what to fix; nobody marked failed, nothing sent.
    assert stopped.state == "suspended"
    assert "Certificat du serveur de messagerie refusé" in (stopped.last_error or "")
    assert "PUBLIPOSTAGE_MAIL_TLS_CA_FILE" in (stopped.last_error or "")
    assert item_states(started.id) == {"pending": 3}
    assert smtp.count() == 0 and smtp.auth_attempts == 0
    page = page_text(client.get(f"{BASE}/mail/campaigns/{started.id}", "super"))
    assert "Suspendue : paramètres à corriger" in page and "Certificat du serveur de messagerie refusé" in page
    assert "Reprendre l'envoi" in page
    # The sample (a fake code, but the relay password) does not go either.
    response = client.post(f"{BASE}/mail/sample", "super")
    assert response.status_code == 502
    assert "Certificat du serveur de messagerie refusé" in page_text(response)
    assert smtp.count() == 0 and smtp.auth_attempts == 0


@pytest.mark.parametrize(
    ("smtp_options", "mail_config"),
    [
        (relay(STARTTLS, auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
        (relay(SMTPS, auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]}),
    ],
    indirect=True,
)
def test_the_academy_bundle_proves_the_relay(app_ctx: Flask, smtp: SmtpServer) -> None:
    addresses = populate(7)
    started, _created = campaigns.start(everyone())
    found = campaign(started.id)
    assert found.state == "done" and found.sent == 7
    assert sorted(smtp.by_recipient()) == sorted(addresses)
    assert all(message.tls for message in smtp.messages)


@pytest.mark.parametrize(
    ("smtp_options", "mail_config"),
    [(relay(STARTTLS, "wrong-name"), {"PUBLIPOSTAGE_MAIL_TLS_VERIFY": False})],
    indirect=True,
)
def test_the_opt_out_sends_and_says_so_at_start(
    app: Flask, app_config: dict[str, Any], database_url: str, tmp_path: Path, smtp: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_publipostage"):
        other = make_app(database_url, str(tmp_path / "other"), reset=False, **app_config)
    other.extensions["publipostage"].runner.shutdown()
    assert any("PUBLIPOSTAGE_MAIL_TLS_VERIFY is False" in r.getMessage() for r in caplog.records)
    with app.app_context():
        populate(2)
        started, _created = campaigns.start(everyone())
        assert campaign(started.id).state == "done"
    assert smtp.count() == 2 and all(m.tls for m in smtp.messages)


def test_settings_are_checked_at_start(database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="PUBLIPOSTAGE_MAIL_TLS_CA_FILE"):
        make_app(database_url, str(tmp_path / "a"), PUBLIPOSTAGE_MAIL_TLS_CA_FILE=str(tmp_path / "missing.pem"))
    # A local relay without TLS (the example console's outbox): nothing to warn about,
    # even with the opt-out, which changes nothing there.
    with caplog.at_level(logging.WARNING, logger="flask_publipostage"):
        for config in ({}, {"PUBLIPOSTAGE_MAIL_TLS_VERIFY": False}):
            app = make_app(database_url, str(tmp_path / "b"), MAIL_SERVER="127.0.0.1", MAIL_PORT=8025, **config)
            app.extensions["publipostage"].runner.shutdown()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("flask_publipostage.mail")] == []
    # A password sent in clear to a remote relay is worth a warning.
    with caplog.at_level(logging.WARNING, logger="flask_publipostage"):
        app = make_app(database_url, str(tmp_path / "c"), MAIL_SERVER="smtp.academie.example", MAIL_USERNAME="ent")
        app.extensions["publipostage"].runner.shutdown()
    assert any("unencrypted" in r.getMessage() for r in caplog.records)


# -- the relay refuses the login, or requires one ------------------------------------------------


@pytest.mark.parametrize(
    ("smtp_options", "mail_config", "expected"),
    [
        # A wrong password: 535 at AUTH.
        (relay(STARTTLS, auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": "wrong"},
         "Identifiants SMTP refusés par le serveur (535"),
        # No login at all: 530 at MAIL FROM.
        (relay(STARTTLS, auth=LOGIN), {}, "Le serveur de messagerie exige une authentification (530"),
    ],
    indirect=["smtp_options", "mail_config"],
)
def test_refused_settings_suspend_the_campaign_then_resume_once_fixed(
    client: RoleClient, app: Flask, app_config: dict[str, Any], database_url: str, tmp_path: Path,
    smtp: SmtpServer, expected: str,
) -> None:
    with app.app_context():
        addresses = populate(12)
        started, _created = campaigns.start(everyone())
        stopped = campaign(started.id)
        assert stopped.state == "suspended", stopped.last_error
        assert expected in (stopped.last_error or "")
        # Never marked failed for it, nothing sent, nothing "sending"; one login per lane at most.
        assert item_states(started.id) == {"pending": 12}
        assert all(item.attempts == 0 and not item.possibly_duplicate for item in items(started.id))
        assert smtp.count() == 0
        assert smtp.auth_attempts <= 2
        assert stopped.active_key is None
    page = page_text(client.get(f"{BASE}/mail/campaigns/{started.id}", "super"))
    assert expected in page and "Reprendre l'envoi" in page
    status = client.get(f"{BASE}/mail/campaigns/{started.id}/status", "super").get_json()
    assert status["state"] == "suspended" and status["failed"] == 0 and status["remaining"] == 12
    # Resumed with the settings still wrong: one more try, suspended again.
    assert client.post(f"{BASE}/mail/campaigns/{started.id}/resume", "super").status_code == 303
    with app.app_context():
        assert campaign(started.id).state == "suspended"
    # The settings fixed (the application restarted with them), resumed from the shell.
    fixed = make_app(database_url, str(tmp_path / "fixed"), reset=False,
                     **{**app_config, "MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": LOGIN[1]})
    try:
        result = fixed.test_cli_runner().invoke(args=["publipostage", "resume", str(started.id)])
        assert result.exit_code == 0, result.output
        with fixed.app_context():
            found = campaign(started.id)
            assert (found.state, found.sent, found.failed, found.duplicates) == ("done", 12, 0, 0)
    finally:
        fixed.extensions["publipostage"].runner.shutdown()
    assert sorted(smtp.by_recipient()) == sorted(addresses)


@pytest.mark.parametrize(
    ("smtp_options", "mail_config"),
    [(relay(STARTTLS, auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": "wrong", "PUBLIPOSTAGE_JOB_BACKEND": "thread",
                                     "PUBLIPOSTAGE_MAIL_CONNECTIONS": 4})],
    indirect=True,
)
def test_a_wrong_password_is_tried_once_per_lane_not_every_few_seconds(app_ctx: Flask, smtp: SmtpServer) -> None:
    from .smtp import wait_for

    populate(40)
    started, _created = campaigns.start(everyone())
    wait_for(lambda: campaign(started.id).state == "suspended", timeout=30)
    # The lanes are gone: the runner holds no thread of this campaign any more.
    runner = app_ctx.extensions["publipostage"].runner
    wait_for(lambda: not runner._threads, timeout=30)
    assert smtp.auth_attempts <= 4
    assert item_states(started.id) == {"pending": 40}


@pytest.mark.parametrize(
    ("smtp_options", "mail_config"),
    [(relay(STARTTLS, auth=LOGIN), {"MAIL_USERNAME": LOGIN[0], "MAIL_PASSWORD": "wrong"})],
    indirect=True,
)
def test_cli_send_fails_with_what_to_fix(app: Flask, smtp: SmtpServer) -> None:
    with app.app_context():
        populate(3)
    result = app.test_cli_runner().invoke(args=["publipostage", "send", "--yes"])
    assert result.exit_code != 0
    assert "Identifiants SMTP refusés par le serveur" in result.output
    assert "flask publipostage resume 1" in result.output


@pytest.mark.parametrize(
    ("smtp_options", "mail_config"),
    # A relay requiring STARTTLS, configured without it.
    [(relay(STARTTLS), {"MAIL_USE_TLS": False})],
    indirect=True,
)
def test_encryption_required_is_a_setting_to_fix(app_ctx: Flask, smtp: SmtpServer) -> None:
    populate(2)
    started, _created = campaigns.start(everyone())
    stopped = campaign(started.id)
    assert stopped.state == "suspended"
    assert "exige une connexion chiffrée (530" in (stopped.last_error or "")
    assert item_states(started.id) == {"pending": 2}


# -- 8BITMIME and SMTPUTF8 -----------------------------------------------------------------------


@pytest.mark.parametrize("smtp_options", [{"eight_bit_mime": True}, {"eight_bit_mime": False}], indirect=True)
def test_bodies_follow_8bitmime(app_ctx: Flask, smtp: SmtpServer, smtp_options: dict[str, Any]) -> None:
    add_person("elodie", "Élodie", "Ñuñez-Lefèvre", "ELEVE", email="elodie@example.org")
    db.session.commit()
    started, _created = campaigns.start(everyone())
    assert campaign(started.id).sent == 1
    (message,) = smtp.messages
    parsed = message.parsed()
    assert "Élodie Ñuñez-Lefèvre" in parsed.get_body(("plain",)).get_content()
    assert "Élodie Ñuñez-Lefèvre" in parsed.get_body(("html",)).get_content()
    encodings = {part["Content-Transfer-Encoding"] for part in parsed.walk() if not part.is_multipart()}
    if smtp_options["eight_bit_mime"]:
        assert "BODY=8BITMIME" in message.mail_options
        assert encodings == {"8bit"}
    else:
        assert not any(o.startswith("BODY=") for o in message.mail_options)
        assert encodings == {"quoted-printable"}
        assert message.content.isascii()
        assert all(len(line) <= 998 for line in message.content.split(b"\r\n"))
    assert parsed.defects == [] and all(part.defects == [] for part in parsed.walk())


@pytest.mark.parametrize("smtp_options", [{"smtputf8": True}, {"smtputf8": False}], indirect=True)
def test_addresses_with_accents_go_where_smtputf8_is_offered(app_ctx: Flask, smtp: SmtpServer, smtp_options: dict[str, Any]) -> None:
    add_person("accent", "Élodie", "Accent", "ELEVE", email="élodie.accent@exemple.fr")
    add_person("plain", "Paul", "Plain", "ELEVE", email="paul@example.org")
    db.session.commit()
    started, _created = campaigns.start(everyone())
    rows = {item.email: item for item in items(started.id)}
    plain = [m for m in smtp.messages if m.rcpt_tos == ("paul@example.org",)]
    assert rows["paul@example.org"].state == "sent" and len(plain) == 1
    assert "SMTPUTF8" not in plain[0].mail_options
    if smtp_options["smtputf8"]:
        assert rows["élodie.accent@exemple.fr"].state == "sent"
        (accented,) = [m for m in smtp.messages if m.rcpt_tos == ("élodie.accent@exemple.fr",)]
        assert "SMTPUTF8" in accented.mail_options
        # Headers in UTF-8 (RFC 6532), as an SMTPUTF8 mail client reads them.
        headers = email.message_from_string(accented.content.decode("utf-8"), policy=email.policy.default)
        assert headers["To"].addresses[0].addr_spec == "élodie.accent@exemple.fr"
        assert headers["To"].addresses[0].display_name == "Élodie Accent"
        assert "Élodie Accent" in accented.parsed().get_body(("plain",)).get_content()
    else:
        assert rows["élodie.accent@exemple.fr"].state == "failed"
        assert "non ASCII" in (rows["élodie.accent@exemple.fr"].reason or "")
        assert len(smtp.messages) == 1
