"""Every action in the journal: the start of each output, a run's stop, its
resumption (by an admin or the command line), its take-over after a crash, a
file's download, the sample; and who reads which row: a super admin's and a
class teacher's actions on a school show in that school's journal, marked."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.audit import AuditEntry
from flask_publipostage.models import utcnow
from flask_publipostage.runs import core
from flask_publipostage.runs.models import Run

from .hosts import db
from .smtp import SmtpServer
from .test_security_support import BASE, build_security_school, campaign_id_of, job_id_of, post_mail, post_pdf

JOURNAL = f"{BASE}/journal"


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 4,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
        "PUBLIPOSTAGE_STALE_AFTER": 1,
    }


@pytest.fixture
def school(app: Flask) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()


def set_run(app: Flask, run_id: int, **values: Any) -> None:
    with app.app_context():
        db.session.execute(sa.update(Run).where(Run.id == run_id).values(**values))
        db.session.commit()
        db.session.remove()


def run_id_of(app: Flask, token: str) -> int:
    with app.app_context():
        found = db.session.execute(sa.select(Run.id).where(Run.token == token)).scalar_one()
        db.session.remove()
    return int(found)


def rows(app: Flask) -> list[tuple[str, str, str, int | None]]:
    """(actor, action, perimeter, run) of every row, oldest first."""
    with app.app_context():
        found = db.session.execute(
            sa.select(AuditEntry.actor, AuditEntry.action, AuditEntry.scope_key, AuditEntry.run_id).order_by(AuditEntry.id)
        ).all()
        db.session.remove()
    return [tuple(row) for row in found]


def journal(client: Any, role: str) -> list[tuple[str, str, str]]:
    """(by, what, result) of the rows of ``role``'s journal, oldest first."""
    page = client.get(JOURNAL, role).get_data(as_text=True)
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page else ""
    found = []
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        found.append((cells[1], cells[2], cells[5]))
    return found[::-1]


def test_every_action_and_its_rows(app: Flask, client: Any, school: None, smtp: SmtpServer) -> None:
    cli = app.test_cli_runner()
    # School A's admin: an export, a file prepared then downloaded, another stopped.
    client.get(f"{BASE}/export.csv?profile=Teacher", "adml_a").get_data()
    job = job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards"))
    download = client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a")
    assert download.get_data().startswith(b"%PDF")
    file_name = download.headers["Content-Disposition"].split('"')[1]
    other = job_id_of(post_pdf(client, "adml_a", "sort=class", template="letter"))
    other_id = run_id_of(app, other)
    set_run(app, other_id, state="running", file_path=None, finished_at=None)
    assert client.post(f"{BASE}/pdf/jobs/{other}/cancel", "adml_a").status_code == 303
    # A campaign, stopped by a dead server and resumed; a sample.
    campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    set_run(app, campaign, state="failed")
    assert client.post(f"{BASE}/mail/campaigns/{campaign}/resume", "adml_a").status_code == 303
    assert post_mail(client, "adml_a", "profile=Teacher", what="sample").status_code == 303
    # Its driver dies: another process takes it over.
    set_run(app, campaign, state="running", heartbeat_at=utcnow() - timedelta(minutes=5))
    core.resume_stale(app)
    # From the shell: resumed, then stopped.
    set_run(app, campaign, state="failed")
    assert cli.invoke(args=["publipostage", "resume", str(campaign)]).exit_code == 0
    set_run(app, campaign, state="running", heartbeat_at=utcnow())
    assert "annulée" in cli.invoke(args=["publipostage", "cancel", str(campaign)]).output
    # The super admin exports school A's staff, and stops school B's campaign.
    client.get(f"{BASE}/export.csv?profile=Personnel", "super").get_data()
    campaign_b = campaign_id_of(post_mail(client, "adml_b", ""))
    set_run(app, campaign_b, state="running")
    assert client.post(f"{BASE}/mail/campaigns/{campaign_b}/cancel", "super").status_code == 303
    # A class teacher of school A prints her class's cards (downloaded at once).
    printed = post_pdf(client, "prof_a", "", template="cards")
    assert printed.status_code == 200 and printed.get_data().startswith(b"%PDF")
    job_id = run_id_of(app, job)

    a, teacher = "ecole:A", "enseignant:prof_a"
    with app.app_context():
        # An export is a run of its own (its items are the distribution history).
        csv_a, csv_super = db.session.execute(sa.select(Run.id).where(Run.kind == "csv").order_by(Run.id)).scalars()
        db.session.remove()
    assert rows(app) == [
        ("adml_a", "csv", a, csv_a),
        ("adml_a", "pdf", a, job_id),
        ("adml_a", "download", a, job_id),
        ("adml_a", "pdf", a, other_id),
        ("adml_a", "cancel", a, other_id),
        ("adml_a", "mail", a, campaign),
        ("adml_a", "resume", a, campaign),
        ("adml_a", "mail_sample", a, None),
        ("automatic", "takeover", a, campaign),
        ("command-line", "resume", a, campaign),
        ("command-line", "cancel", a, campaign),
        ("super", "csv", "*", csv_super),
        ("adml_b", "mail", "ecole:B", campaign_b),
        ("super", "cancel", "*", campaign_b),
        ("prof_a", "pdf", teacher, campaign_b + 1),
        ("prof_a", "download", teacher, campaign_b + 1),
    ]

    # School A's journal: its own rows, the super admin's export of its staff and
    # the class teacher's print, marked; nothing of school B.
    assert journal(client, "adml_a") == [
        ("adml_a", "Export CSV", "Fait"),
        ("adml_a", "Cartes, 8 par page", "Fichier préparé"),
        ("adml_a", "Téléchargement du PDF", file_name),
        ("adml_a", "Lettres, 1 par page", "Fichier préparé"),
        ("adml_a", "Arrêt", file_name.replace("cartes", "lettres")),
        ("adml_a", "Envoi par courriel", f"Campagne {campaign}"),
        ("adml_a", "Reprise", f"Campagne {campaign}"),
        ("adml_a", "Exemple de courriel", "Envoyé à vous-même"),
        ("Automatique", "Reprise automatique après une interruption", f"Campagne {campaign}"),
        ("Ligne de commande", "Reprise", f"Campagne {campaign}"),
        ("Ligne de commande", "Arrêt", f"Campagne {campaign}"),
        ("super super administrateur", "Export CSV", "Fait"),
        ("prof_a enseignant de la classe", "Cartes, 8 par page", "Fichier préparé"),
        ("prof_a enseignant de la classe", "Téléchargement du PDF", printed.headers["Content-Disposition"].split('"')[1]),
    ]
    # School B's: its campaign and the super admin's stop of it.
    assert journal(client, "adml_b") == [
        ("adml_b", "Envoi par courriel", f"Campagne {campaign_b}"),
        ("super super administrateur", "Arrêt", f"Campagne {campaign_b}"),
    ]
    # A class teacher reads her own rows only; the super admin reads them all, unmarked.
    assert [by for by, _what, _result in journal(client, "prof_a")] == ["prof_a", "prof_a"]
    everything = journal(client, "super")
    assert len(everything) == 16 and not any("administrateur" in by or "enseignant" in by for by, _, _ in everything)
    # The journal's filter knows every action.
    assert [what for _by, what, _ in _filtered(client, "takeover")] == ["Reprise automatique après une interruption"]
    csv = client.get(f"{JOURNAL}.csv", "adml_a").data.decode("utf-8-sig")
    assert "super (super administrateur);Export CSV" in csv


def _filtered(client: Any, output: str) -> list[tuple[str, str, str]]:
    page = client.get(f"{JOURNAL}?output={output}", "adml_a")
    assert page.status_code == 200
    body = page.get_data(as_text=True).split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [tuple(" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in re.findall(r"<td>(.*?)</td>", r, re.S))[1:3] + ("",)
            for r in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_a_class_outside_the_perimeter_keeps_its_name_hidden(app: Flask, client: Any, school: None) -> None:
    """A super admin's row may name another school's class: a local admin reads
    it as an id, never its name."""
    with app.app_context():
        from .hosts import Division

        cp, b_class = (db.session.execute(sa.select(Division.ref).where(Division.libelle == name)).scalar_one()
                       for name in ("CP de Mme Émery", "CP de l'école B"))
        db.session.remove()
    client.get(f"{BASE}/export.csv?class={cp}&class={b_class}", "super").get_data()
    seen = html.unescape(client.get(JOURNAL, "adml_a").get_data(as_text=True))
    assert "CP de Mme Émery" in seen and "CP de l'école B" not in seen
    assert "CP de l'école B" in html.unescape(client.get(JOURNAL, "super").get_data(as_text=True))


def test_upgrade_db_adds_the_journal_columns(app: Flask, client: Any, school: None) -> None:
    """A journal of the previous version (the run in the result: "run 12") gains its
    columns once, with ``flask publipostage upgrade-db``, and reads the same."""
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_publipostage_audit_run_id"))
        for column in ("run_id", "audience", "file_name"):
            conn.execute(sa.text(f"ALTER TABLE publipostage_audit DROP COLUMN {column}"))
        conn.execute(sa.text(
            "INSERT INTO publipostage_audit (created_at, actor, scope_key, action, selection, template, count, result)"
            " VALUES (CURRENT_TIMESTAMP, 'adml_a', 'ecole:A', 'mail', '{}', 'mail', 4, 'run 12')"
        ))
    result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert result.exit_code == 0, result.output
    assert "Le journal enregistre désormais l'arrêt, la reprise" in result.output
    assert journal(client, "adml_a") == [("adml_a", "Envoi par courriel", "Campagne 12")]
    client.get(f"{BASE}/export.csv", "adml_a").get_data()  # a new row goes in the new columns
    assert [what for _by, what, _ in journal(client, "adml_a")] == ["Envoi par courriel", "Export CSV"]
