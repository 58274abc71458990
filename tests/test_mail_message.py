"""The credential email itself, as a real SMTP server receives it."""

from __future__ import annotations

import html
from email.header import decode_header, make_header
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from jinja2 import DictLoader

from flask_publipostage.access import Scope
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.mail.message import address_problem, clean_header, wrap_lines
from flask_publipostage.runs.models import RunItem
from flask_publipostage.selection import Selection

from .conftest import RoleClient
from .hosts import add_person, db
from .smtp import Received, SmtpServer


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_MAIL_REPLY_TO": "Secrétariat de l'école <secretariat@ecole-a.example>",
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 2,
    }


def _by_address(server: SmtpServer) -> dict[str, Received]:
    found: dict[str, Received] = {}
    for message in server.messages:
        (address,) = message.rcpt_tos
        assert address not in found, f"{address} received twice"
        found[address] = message
    return found


def _parts(message: Received) -> tuple[str, str]:
    parsed = message.parsed()
    text = html = ""
    for part in parsed.walk():
        if part.get_content_type() == "text/plain":
            text = part.get_content()
        elif part.get_content_type() == "text/html":
            html = part.get_content()
    return text, html


def _send_all(scope: Scope | None = None) -> int:
    selection = Selection.from_args({}, scope or Scope(actor="super", key="*"), extra_params=())
    campaign, created = campaigns.start(selection)
    assert created
    return campaign.id


def test_one_message_per_recipient_with_the_right_content(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    response = client.post("/imports-exports/publipostage/mail/send", "adml_a")
    assert response.status_code == 303
    received = _by_address(smtp)
    # School A's accounts with an address; the super admin attached to A is never mailed.
    assert set(received) == {
        "marie.abel@example.org", "anne.prof@example.org", "jean.prof@example.org", "sam.pers@example.org",
    }

    jean = received["jean.prof@example.org"]
    parsed = jean.parsed()
    assert parsed["Subject"] == "Votre compte ENT Test : identifiant et code d'activation"
    assert parsed["From"].addresses[0].addr_spec == "noreply@ent.test.example"
    assert parsed["Reply-To"].addresses[0].display_name == "Secrétariat de l'école"
    assert parsed["To"].addresses[0].display_name == "Jean Dupont"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() in ("multipart/mixed", "multipart/alternative")
    text, html = _parts(jean)
    for content in (text, html):
        assert "Bonjour Jean Dupont," in content
        assert "jean.prof" in content
        assert "CODE-jean.prof" in content
        assert "https://ent.test.example/auth/activation" in content
    assert "Votre code d'activation : CODE-jean.prof" in text
    assert "Pour activer votre compte" in text
    assert "Dans chaque groupe" not in text
    assert "École A" in text  # the admin's school signs the message

    anne = received["anne.prof@example.org"]
    assert anne.parsed()["Subject"] == "Votre compte ENT Test : votre identifiant, et comment choisir un nouveau mot de passe"
    text, html = _parts(anne)
    for content in (text, html):
        assert "déjà activé" in content
        assert "https://ent.test.example/auth/forgot" in content
        assert "Mot de passe oublié" in content
        assert "anne.prof" in content
        assert "code d'activation" not in content.lower()

    marie_text, _html = _parts(received["marie.abel@example.org"])
    assert "compte de parent pour" in marie_text
    assert "Zoé Abel (CP de Mme Émery)" in marie_text
    assert "Élodie Zidane (CM1 de M. Zola)" in marie_text

    ids = [m.parsed()["Message-ID"] for m in smtp.messages]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("<publipostage.") and i.endswith("@ent.test.example>") for i in ids)


HOSTILE = [
    # (first name, last name, expected display name)
    ("Jean\r\nBcc: victim@evil.example", "Dupont", "Jean Bcc: victim@evil.example Dupont"),
    ('Marie "Mimi"', "O'Brien, Jr.", 'Marie "Mimi" O\'Brien, Jr.'),
    ("Łukasz", "Żółćkiewicz", "Łukasz Żółćkiewicz"),
    ("Thị Minh Khai", "Nguyễn", "Thị Minh Khai Nguyễn"),
    ("Evil <admin@evil.example>", "Smith", "Evil <admin@evil.example> Smith"),
    ("Ёжик", "Τυφλός\nSubject: hacked", "Ёжик Τυφλός Subject: hacked"),
]


def test_hostile_names_never_break_the_headers(app_ctx: Flask, smtp: SmtpServer) -> None:
    expected = {}
    for index, (first, last, display) in enumerate(HOSTILE):
        address = f"hostile{index}@example.org"
        add_person(f"hostile{index}", first, last, "ELEVE", email=address)
        expected[address] = display
    db.session.commit()
    _send_all()
    received = _by_address(smtp)
    assert set(received) == set(expected)
    for address, message in received.items():
        head, _sep, _body = message.content.partition(b"\r\n\r\n")
        head.decode("ascii")  # every header is ASCII (RFC 2047 encoded words)
        names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n") if line and not line[:1].isspace()]
        assert b"bcc" not in names
        assert names.count(b"subject") == 1 and names.count(b"to") == 1
        parsed = message.parsed()
        (to,) = parsed["To"].addresses
        assert to.addr_spec == address
        assert to.display_name == expected[address]
        assert str(make_header(decode_header(parsed["Subject"]))).startswith("Votre compte ENT Test")
        text, html = _parts(message)
        assert f"Bonjour {expected[address]}," in text
        # HTML escapes the name: no tag can be injected.
        assert "<admin@evil.example>" not in html


def test_long_lines_are_wrapped(app_ctx: Flask, smtp: SmtpServer) -> None:
    rule = "au moins " + " ".join(["douze"] * 300) + " caractères"
    app_ctx.config["PUBLIPOSTAGE_PASSWORD_RULE"] = rule
    app_ctx.config["PUBLIPOSTAGE_ACTIVATION_URL"] = "https://ent.test.example/" + "a" * 200
    add_person("long.name", "Anne-" + "x" * 150, "Longue", "ELEVE", email="long@example.org")
    db.session.commit()
    campaign_id = _send_all()
    (message,) = smtp.messages
    for line in message.content.split(b"\r\n"):
        assert len(line) <= 998
    text, html = _parts(message)
    for content in (text, html):
        for line in content.splitlines():
            # Only a word longer than the width (the URL, the long name) may exceed it.
            assert len(line) <= 78 or " " not in line.strip(), line
    assert " ".join(text.split()).count("douze") == 300
    assert db.session.execute(sa.select(RunItem.state).where(RunItem.run_id == campaign_id)).scalar_one() == "sent"


def test_bad_addresses_fail_with_a_reason(app_ctx: Flask, smtp: SmtpServer) -> None:
    add_person("accent", "Élodie", "Accent", "ELEVE", email="élodie@exemple.fr")
    add_person("broken", "Bob", "Broken", "ELEVE", email="bob at example.org")
    add_person("fine", "Fine", "Person", "ELEVE", email="fine@example.org")
    db.session.commit()
    campaign_id = _send_all()
    rows = {d.email: d for d in db.session.execute(sa.select(RunItem).where(RunItem.run_id == campaign_id)).scalars()}
    assert rows["fine@example.org"].state == "sent"
    assert rows["élodie@exemple.fr"].state == "failed"
    assert "non ASCII" in rows["élodie@exemple.fr"].reason
    assert rows["bob at example.org"].state == "failed"
    assert "n'est pas valide" in rows["bob at example.org"].reason
    assert [m.rcpt_tos for m in smtp.messages] == [("fine@example.org",)]


def test_templates_can_be_overridden_by_path(app: Flask, smtp: SmtpServer) -> None:
    app.jinja_loader.loaders.insert(  # type: ignore[union-attr]
        0,
        DictLoader({"publipostage/email/credentials_not_activated.txt": "Salut {{ recipient.first_name }} : {{ recipient.activation_code }}"}),
    )
    with app.app_context():
        add_person("over", "Olivia", "Override", "ELEVE", email="over@example.org")
        db.session.commit()
        _send_all()
    text, html = _parts(smtp.messages[0])
    assert text.strip() == "Salut Olivia : CODE-over"
    assert "Bonjour Olivia Override" in html  # the HTML part is still the built-in one


def test_no_sender_refuses_to_start(client: RoleClient, app: Flask, school: Any, smtp: SmtpServer) -> None:
    # This host has no Flask-Mail of its own: the extension builds it from the config.
    assert "mail" not in app.extensions
    app.config["MAIL_DEFAULT_SENDER"] = None
    page = client.get("/imports-exports/publipostage/mail", "adml_a")
    assert page.status_code == 200
    assert "Aucune adresse d'expéditeur valide" in html.unescape(page.data.decode())
    response = client.post("/imports-exports/publipostage/mail/send", "adml_a")
    assert response.status_code == 400
    assert "Aucune adresse d'expéditeur valide" in html.unescape(response.data.decode())
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(RunItem)).scalar() == 0
    assert smtp.count() == 0


def test_helpers() -> None:
    assert clean_header("a\r\nb\tc\x00d  e") == "a b c d e"
    assert address_problem("ok.name+tag@sub.example.org") is None
    assert address_problem("élodie@example.org") is not None
    assert address_problem("a@b@c") is not None
    assert address_problem("") is not None
    assert address_problem("x..y@example.org") is not None
    wrapped = wrap_lines("1. " + "mot " * 60 + "\n\n\n\nfin")
    lines = wrapped.splitlines()
    assert all(len(line) <= 78 for line in lines)
    assert lines[1].startswith("   mot")  # list items keep their indent
    assert wrapped.count("\n\n") == 1
    assert all(len(line.encode()) <= 900 for line in wrap_lines("é" * 5000).splitlines())
