"""The audit trail: one row per PDF (in the request or a job), CSV and campaign,
in the same transaction as the action; none for a refused or failed action; seen
by the perimeter; never an activation code, nor in the logs, nor in error pages."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import audit
from flask_publipostage.audit import AuditEntry

from .hosts import db
from .smtp import SmtpServer
from .test_security_support import (
    BASE,
    all_codes,
    build_security_school,
    campaign_id_of,
    job_id_of,
    post_mail,
    post_pdf,
    snapshot,
)

JOURNAL = f"{BASE}/journal"


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 4,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
        "PROPAGATE_EXCEPTIONS": False,
    }


@dataclass
class Built:
    b_class: int


@pytest.fixture
def school(app: Flask) -> Built:
    with app.app_context():
        b_class = build_security_school().other_school_class.ref
        db.session.remove()
    return Built(b_class)


def entries(app: Flask) -> list[AuditEntry]:
    with app.app_context():
        found = list(db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.id)).scalars())
        db.session.expunge_all()
        db.session.remove()
    return found


def test_each_output_writes_its_rows(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    """One row per output; a PDF downloaded at once writes its download too."""
    steps = [
        (lambda: client.get(f"{BASE}/export.csv?profile=Teacher", "adml_a").get_data(),
         [("csv", "csv", 2, True)]),
        (lambda: post_pdf(client, "adml_a", "profile=Teacher", template="cards"),
         [("pdf", "cards", 2, True), ("download", "cards", 2, True)]),
        (lambda: job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards")),
         [("pdf", "cards", 10, True)]),
        (lambda: campaign_id_of(post_mail(client, "adml_a", "profile=Teacher")),
         [("mail", "mail", 2, True)]),
        (lambda: post_mail(client, "adml_a", "profile=Teacher", what="sample"),
         [("mail_sample", "mail", 1, False)]),
    ]
    for step, rows in steps:
        before = len(entries(app))
        step()
        found = entries(app)[before:]
        assert [(e.action, e.template, e.count, e.run_id is not None) for e in found] == rows
        for entry in found:
            assert (entry.actor, entry.scope_key) == ("adml_a", "ecole:A")


REFUSED = [
    ("POST", "/pdf?profile=Teacher", {"template": "sixteen"}, 400),
    ("POST", "/pdf?profile=Teacher", {}, 400),
    ("POST", "/pdf?activation=maybe", {"template": "letter"}, 400),
    ("POST", "/pdf?class={b}", {"template": "letter"}, 403),
    ("POST", "/pdf?profile=Guest&email=with", {"template": "letter"}, 400),
    ("POST", "/pdf", {"template": "letter"}, 400),  # over MAX_SELECTION
    ("GET", "/export.csv", None, 400),  # over MAX_SELECTION
    ("GET", "/export.csv?class={b}", None, 403),
    ("GET", "/export.csv?sort=nope", None, 400),
    ("POST", "/mail/send", {}, 400),  # over MAX_SELECTION
    ("POST", "/mail/send?email=without&profile=Student", {}, 400),
    ("POST", "/mail/send?class={b}", {}, 403),
    ("POST", "/mail/sample?email=without&profile=Student", {}, 400),
]


def test_a_refused_action_leaves_no_row(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    before = snapshot(app)
    # Without a sender, no campaign starts (and nothing is recorded).
    app.config["MAIL_DEFAULT_SENDER"] = None
    assert post_mail(client, "adml_a", "profile=Teacher").status_code == 400
    assert snapshot(app) == before
    app.config["MAIL_DEFAULT_SENDER"] = "ENT Test <noreply@ent.test.example>"
    app.extensions.pop("mail")
    app.config["PUBLIPOSTAGE_MAX_SELECTION"] = 5
    for method, path, form, status in REFUSED:
        url = BASE + path.format(b=school.b_class)
        response = client.get(url, "adml_a") if method == "GET" else client.post(url, "adml_a", data=form)
        assert response.status_code == status, (path, response.status_code)
        assert "Erreur" in response.get_data(as_text=True)
        assert snapshot(app) == before, path
    assert smtp.count() == 0


def test_the_row_and_the_action_commit_together(
    app: Flask, client: Any, school: Any, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When anything fails once the row is added, neither the row nor the action
    (job, frozen accounts, campaign, deliveries) is committed."""
    original = audit.record

    def record_then_fail(*args: Any, **kwargs: Any) -> Any:
        original(*args, **kwargs)
        raise RuntimeError("failure after the audit row")

    monkeypatch.setattr(audit, "record", record_then_fail)
    before = snapshot(app)
    attempts = [
        lambda: client.get(f"{BASE}/export.csv?profile=Teacher", "adml_a"),
        lambda: post_pdf(client, "adml_a", "profile=Teacher"),
        lambda: post_pdf(client, "adml_a", "sort=class"),
        lambda: post_mail(client, "adml_a", "profile=Teacher"),
    ]
    for attempt in attempts:
        response = attempt()
        assert response.status_code == 500
        assert "Traceback" not in response.get_data(as_text=True)
        assert snapshot(app) == before
    assert smtp.count() == 0


def test_rows_are_seen_within_the_perimeter(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    client.get(f"{BASE}/export.csv", "adml_a").get_data()
    post_pdf(client, "adml_b", "", template="cards")
    campaign_id_of(post_mail(client, "adml_b", ""))
    client.get(f"{BASE}/export.csv?profile=Personnel", "super").get_data()
    pages = {role: client.get(JOURNAL, role).get_data(as_text=True) for role in ("adml_a", "viewer_a", "adml_b", "super")}
    assert "adml_a" in pages["adml_a"] and "adml_b" not in pages["adml_a"]
    assert "adml_a" in pages["viewer_a"] and "adml_b" not in pages["viewer_a"]
    assert "adml_b" in pages["adml_b"] and "adml_a" not in pages["adml_b"]
    # The super admin's export of school A's staff shows in school A's journal,
    # marked, and not in school B's (none of its accounts).
    assert "super <span class=\"pp-badge pp-mark\">super administrateur</span>" in pages["adml_a"]
    assert "Personnels" in pages["adml_a"] and "super" not in pages["adml_b"]
    assert "Envoi par courriel" in pages["adml_b"] and "PDF" in pages["adml_b"]
    for who in ("adml_a", "adml_b", "Personnels"):
        assert who in pages["super"]


def _log_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage(), repr(record.args), record.exc_text or ""]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


#: The test SMTP server stands for a remote relay: it logs the messages it receives.
#: (SQLAlchemy keeps its own loggers at WARNING unless the host turns them up: its
#: DEBUG level would write result rows, codes included; see SECURITY.md.)
FOREIGN_LOGGERS = ("mail.log",)


def test_no_code_in_audit_rows_logs_or_error_pages(
    app: Flask, client: Any, school: Any, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with app.app_context():
        codes = all_codes()
        db.session.remove()
    assert len(codes) >= 10
    bodies: list[str] = []

    def keep(response: Any) -> Any:
        bodies.append(response.get_data(as_text=True) if response.mimetype.startswith("text/html") else "")
        return response

    # The page and the outputs show codes (that is their job); the rest never does.
    assert client.get(f"{BASE}/?sort=class", "adml_a").status_code == 200
    assert client.get(f"{BASE}/preview?sort=class", "adml_a").status_code == 200
    assert client.get(f"{BASE}/export.csv", "adml_a").status_code == 200
    assert post_pdf(client, "adml_a", "profile=Teacher").status_code == 200
    job = job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards"))
    keep(client.get(f"{BASE}/pdf/jobs/{job}", "adml_a"))
    assert client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a").data.startswith(b"%PDF")
    campaign = campaign_id_of(post_mail(client, "adml_a", ""))
    keep(client.get(f"{BASE}/mail/campaigns/{campaign}", "adml_a"))
    assert post_mail(client, "adml_a", "profile=Teacher", what="sample").status_code == 303
    # Error pages of every kind.
    errors = [
        client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a"),  # 410, downloaded
        client.get(f"{BASE}/pdf/jobs/{job}", "adml_b"),  # 404
        client.get(f"{BASE}/?class={school.b_class}", "adml_a"),  # 403
        client.get(f"{BASE}/?activation=CODE-zoe.abel", "adml_a"),  # 400, echoes the value
        client.get(f"{BASE}/export.csv", "viewer_a"),  # 403
        client.get(f"{BASE}/", None),  # 401
        client.post(f"{BASE}/pdf", "adml_a", data={"template": "x"}),  # 400
    ]
    assert {r.status_code for r in errors} == {400, 401, 403, 404, 410}
    bodies += [r.get_data(as_text=True) for r in errors[:3] + errors[4:]]
    assert smtp.count() >= 4

    records = [r for r in caplog.records if not r.name.startswith(FOREIGN_LOGGERS)]
    assert any(r.name.startswith("flask_publipostage") for r in records)
    for record in records:
        text = _log_text(record)
        for code in codes:
            assert code not in text, (record.name, text[:300])
    for body in bodies:
        for code in codes:
            assert code not in body
    for entry in entries(app):
        stored = " ".join(str(getattr(entry, c.name)) for c in AuditEntry.__table__.columns)
        for code in codes:
            assert code not in stored
    journal = client.get(JOURNAL, "super").get_data(as_text=True)
    assert "Envoi par courriel" in journal
    for code in codes:
        assert code not in journal


def test_responses_holding_codes_are_never_cached(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    """Every response that carries an activation code says ``Cache-Control: no-store``
    (no shared or disk cache keeps a copy)."""
    with app.app_context():
        codes = all_codes()
        db.session.remove()
    job = job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards"))
    responses = {
        "page": client.get(f"{BASE}/", "adml_a"),
        "preview": client.get(f"{BASE}/preview", "adml_a"),
        "csv": client.get(f"{BASE}/export.csv", "adml_a"),
        "pdf": post_pdf(client, "adml_a", "profile=Teacher"),
        "download": client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a"),
        "status": client.get(f"{BASE}/pdf/jobs/{job}/status", "adml_a"),
        # The confirmation previews the first recipient's message, code included.
        "mail confirmation": client.get(f"{BASE}/mail?profile=Relative", "adml_a"),
    }
    for name, response in responses.items():
        assert response.status_code == 200, name
        assert "no-store" in response.headers.get("Cache-Control", ""), name
    assert any(code in responses["page"].get_data(as_text=True) for code in codes)
    assert "CODE-marie.abel" in responses["mail confirmation"].get_data(as_text=True)
