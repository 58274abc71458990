"""Campaigns through the pages and the command line, against a real SMTP server."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.audit import AuditEntry
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.runs import backends, core
from flask_publipostage.runs.core import unreached_user_ids
from flask_publipostage.runs.models import RunItem
from flask_publipostage.selection import Selection

from .conftest import RoleClient
from .hosts import Division, Personne, add_person, db
from .runs import campaign_rows, items, stop_active_runs
from .smtp import SmtpServer, wait_for

BASE = "/imports-exports/publipostage"
A_WITH_EMAIL = {"marie.abel@example.org", "anne.prof@example.org", "jean.prof@example.org", "sam.pers@example.org"}
A_WITHOUT_EMAIL = {"zoe.abel", "elodie.zidane", "lucas.etienne", "nina.sansclasse", "paul.etienne", "ines.invite"}


@pytest.fixture
def app_config(smtp: SmtpServer, mail_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 2,
        "PUBLIPOSTAGE_MAIL_RETRY_DELAY": 0.05,
        **mail_config,
    }


@pytest.fixture(autouse=True)
def stop_campaigns(app: Flask, smtp: SmtpServer) -> Iterator[None]:
    """A failed assertion must not leave a campaign sending while the app shuts down."""
    yield
    with app.app_context():
        stop_active_runs()


def scope_a() -> Scope:
    """What the test host gives school A's local admin."""
    return Scope(
        actor="adml_a",
        users=sa.and_(Personne.ecole == "A", Personne.super_admin.is_(False)),
        classes=Division.ecole == "A",
        key="ecole:A",
        school_name="École A",
        actor_email="adml_a@example.org",
    )


def text(response: Any) -> str:
    return html.unescape(response.data.decode())


def deliveries(campaign_id: int) -> dict[str, RunItem]:
    return {d.email or d.name: d for d in items(campaign_id)}


# -- before sending ------------------------------------------------------------------


def test_confirmation_page(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    page = text(client.get(f"{BASE}/mail", "adml_a"))
    assert "4</strong> courriels seront envoyés" in page
    assert "6</strong> comptes sélectionnés n'ont pas d'adresse électronique et seront ignorés" in page
    assert "Envoyer 4 courriels" in page
    # The preview is the first account (by name) with an address, code included.
    assert "Marie Abel &lt;marie.abel@example.org&gt;" in page or "Marie Abel <marie.abel@example.org>" in page
    assert "CODE-marie.abel" in page
    assert "Votre compte ENT Test : identifiant et code d'activation" in page
    assert "M'envoyer un exemple" in page and "adml_a@example.org" in page
    assert f"{BASE}/?email=without" in page  # PDF for those without an address
    # Filters travel: only the teachers.
    page = text(client.get(f"{BASE}/mail?profile=Teacher", "adml_a"))
    assert "Envoyer 2 courriels" in page
    assert smtp.count() == 0
    assert campaign_rows() == []


def test_step_three_has_the_button(client: RoleClient, school: Any) -> None:
    page = text(client.get(f"{BASE}/?profile=Teacher", "adml_a"))
    assert "Envoyer par mail…" in page
    assert 'name="profile" value="Teacher"' in page
    assert "Envoyer par mail…" not in text(client.get(f"{BASE}/", "viewer_a"))


@pytest.mark.parametrize(
    ("role", "status"), [(None, 401), ("teacher", 403), ("viewer_a", 403)]
)
def test_send_capability_required(client: RoleClient, school: Any, role: str | None, status: int) -> None:
    assert client.get(f"{BASE}/mail", role).status_code == status
    assert client.post(f"{BASE}/mail/send", role).status_code == status
    assert client.post(f"{BASE}/mail/sample", role).status_code == status
    assert client.get(f"{BASE}/mail/campaigns", role).status_code == status
    assert campaign_rows() == []


def test_bad_filters_are_a_400(client: RoleClient, school: Any) -> None:
    response = client.get(f"{BASE}/mail?activation=maybe", "adml_a")
    assert response.status_code == 400
    assert "Activation" in text(response)
    response = client.post(f"{BASE}/mail/send?class={school.other_school_class.ref}", "adml_a")
    assert response.status_code == 403
    assert campaign_rows() == []


def test_sample_goes_to_the_admin_only(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    response = client.post(f"{BASE}/mail/sample?profile=Teacher", "adml_a")
    assert response.status_code == 303
    assert "sample=sent" in response.headers["Location"]
    (message,) = smtp.messages
    assert message.rcpt_tos == ("adml_a@example.org",)
    parsed = message.parsed()
    assert parsed["Subject"].startswith("[Exemple] Votre compte ENT Test")
    assert "jean.prof" in parsed.get_body(("plain",)).get_content()  # the first teacher by name (Dupont)
    assert campaign_rows() == []
    entry = db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == "mail_sample")).scalar_one()
    assert entry.count == 1 and entry.actor == "adml_a"
    assert "Un exemple a été envoyé à adml_a@example.org" in text(client.get(response.headers["Location"], "adml_a"))


def test_posts_need_the_csrf_token(client: RoleClient, app: Flask, school: Any, smtp: SmtpServer) -> None:
    app.config["WTF_CSRF_ENABLED"] = True
    for url in (f"{BASE}/mail/send", f"{BASE}/mail/sample"):
        response = client.post(url, "adml_a")
        assert response.status_code == 400
        assert "expiré" in text(response)
    assert smtp.count() == 0 and campaign_rows() == []


# -- a campaign ------------------------------------------------------------------------


def test_campaign_report_and_pdf_for_the_unreached(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    response = client.post(f"{BASE}/mail/send", "adml_a")
    assert response.status_code == 303
    (campaign,) = campaign_rows()
    assert response.headers["Location"].endswith(f"/mail/campaigns/{campaign.id}")
    assert campaign.state == "done"
    assert (campaign.total, campaign.to_send, campaign.skipped, campaign.sent) == (10, 4, 6, 4)
    assert campaign.active_key is None
    assert smtp.by_recipient() == {address: 1 for address in A_WITH_EMAIL}

    page = text(client.get(response.headers["Location"], "adml_a"))
    assert "Terminée" in page
    assert "4 envoyés, 0 en échec, 6 ignorés (sans courriel)" in page
    assert "PDF pour les comptes non joints" in page
    assert f"{BASE}/?campaign={campaign.id}" in page
    for name in ("Zoé Abel", "Élodie Zidane", "Lucas Étienne", "Nina Sansclasse", "Paul Étienne", "Inès Martin"):
        assert name in page

    status = client.get(f"{BASE}/mail/campaigns/{campaign.id}/status", "adml_a").get_json()
    assert status["state"] == "done" and status["finished"]
    assert (status["sent"], status["failed"], status["skipped"], status["remaining"]) == (4, 0, 6, 0)

    report = client.get(f"{BASE}/mail/campaigns/{campaign.id}/report.csv", "adml_a")
    assert report.status_code == 200
    assert report.headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(report.data.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:4] == ["Nom", "Identifiant", "Courriel", "Résultat"]
    assert {r[0] for r in rows[1:]} == {"Zoé Abel", "Élodie Zidane", "Lucas Étienne", "Nina Sansclasse", "Paul Étienne", "Inès Martin"}

    # One click: the PDF step opens with exactly the accounts not reached.
    page = client.get(f"{BASE}/preview?campaign={campaign.id}", "adml_a")
    assert page.status_code == 200
    logins = {p.identifiant for p in db.session.execute(
        sa.select(Personne).where(sa.cast(Personne.uid, sa.String).in_(unreached_user_ids(campaign.id)))
    ).scalars()}
    assert logins == A_WITHOUT_EMAIL
    assert "6</strong>" in text(page)

    entry = db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == "mail")).scalar_one()
    assert (entry.actor, entry.count, entry.run_id) == ("adml_a", 4, campaign.id)

    listing = text(client.get(f"{BASE}/mail/campaigns", "adml_a"))
    assert f"/mail/campaigns/{campaign.id}" in listing


def test_campaigns_are_scoped(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    for url in (
        f"{BASE}/mail/campaigns/{campaign.id}",
        f"{BASE}/mail/campaigns/{campaign.id}/status",
        f"{BASE}/mail/campaigns/{campaign.id}/report.csv",
        f"{BASE}/mail/campaigns/99999",
    ):
        assert client.get(url, "adml_b").status_code == 404
    assert client.post(f"{BASE}/mail/campaigns/{campaign.id}/cancel", "adml_b").status_code == 404
    assert f"/mail/campaigns/{campaign.id}" not in text(client.get(f"{BASE}/mail/campaigns", "adml_b"))
    assert client.get(f"{BASE}/mail/campaigns/{campaign.id}", "super").status_code == 200
    assert f"/mail/campaigns/{campaign.id}" in text(client.get(f"{BASE}/mail/campaigns", "super"))


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> None:
    """Campaigns stay queued: nothing runs them."""
    monkeypatch.setattr(backends, "submit", lambda *args, **kwargs: None)


def test_same_selection_twice_while_running_is_one_campaign(app_ctx: Flask, school: Any, smtp: SmtpServer, held: None) -> None:
    scope = scope_a()
    selection = Selection.from_args({"profile": "Teacher"}, scope)
    first, created = campaigns.start(selection)  # queued, not sent yet
    assert created
    again, created_again = campaigns.start(Selection.from_args({"profile": "Teacher"}, scope))
    assert (again.id, created_again) == (first.id, False)
    other, created_other = campaigns.start(Selection.from_args({"profile": "Relative"}, scope))
    assert created_other and other.id != first.id
    assert len(campaign_rows()) == 2
    # Once it is over, the same selection may be sent again.
    core.cancel(first, scope)
    _third, created_third = campaigns.start(Selection.from_args({"profile": "Teacher"}, scope))
    assert created_third


@pytest.mark.parametrize(
    ("mail_config", "smtp_options"),
    [({"PUBLIPOSTAGE_JOB_BACKEND": "thread"}, {"delay": 0.02})],
    indirect=True,
)
def test_double_click_sends_once(client: RoleClient, app: Flask, school: Any, smtp: SmtpServer) -> None:
    locations: list[str] = []
    barrier = threading.Barrier(3)

    def click() -> None:
        barrier.wait()
        response = client.post(f"{BASE}/mail/send", "adml_a")
        assert response.status_code == 303
        locations.append(response.headers["Location"])

    threads = [threading.Thread(target=click) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(locations)) == 1
    assert len(campaign_rows()) == 1
    wait_for(lambda: campaign_rows()[0].state == "done", timeout=30)
    assert smtp.by_recipient() == {address: 1 for address in A_WITH_EMAIL}
    assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "mail")).scalar() == 1


@pytest.mark.parametrize("smtp_options", [{"refuse": lambda a: a.startswith("jean.")}], indirect=True)
def test_permanent_refusal_fails_that_delivery_only(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    assert campaign.state == "done" and campaign.failed == 1 and campaign.sent == 3
    rows = deliveries(campaign.id)
    jean = rows["jean.prof@example.org"]
    assert jean.state == "failed" and jean.attempts == 1
    assert "550" in jean.reason and "User unknown" in jean.reason
    assert set(smtp.by_recipient()) == A_WITH_EMAIL - {"jean.prof@example.org"}
    page = text(client.get(f"{BASE}/mail/campaigns/{campaign.id}", "adml_a"))
    assert "Jean Dupont" in page and "550" in page
    report = client.get(f"{BASE}/mail/campaigns/{campaign.id}/report.csv", "adml_a").data.decode("utf-8-sig")
    assert "jean.prof@example.org" in report and "550" in report
    # Jean is among the accounts to print.
    assert str(school.logins["jean.prof"].uid) in set(db.session.execute(unreached_user_ids(campaign.id)).scalars())


#: The report's rows (name, login) for school A with three more pupils and two
#: refusals: failures first, then in French name order (last name, first name;
#: "Étienne" among the E, "Le Gall" before "Leblanc"). "Inès Martin", deleted after
#: the campaign, keeps her row, without a login, sorted by the name she had.
REPORT_ORDER = [
    ("Jean Dupont", "jean.prof"), ("Sam Durand", "sam.pers"),
    ("Zoé Abel", "zoe.abel"), ("Lucas Étienne", "lucas.etienne"), ("Paul Étienne", "paul.etienne"),
    ("Inès Martin", ""), ("Yann Le Gall", "yann.legall"), ("Ana Le Roy", "ana.leroy"),
    ("Béa Leblanc", "bea.leblanc"), ("Nina Sansclasse", "nina.sansclasse"), ("Élodie Zidane", "elodie.zidane"),
]


def _report_rows(page: str) -> list[tuple[str, str]]:
    body = page[page.index("<tbody>"):page.index("</tbody>")]
    return re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td>", body)


@pytest.mark.parametrize("smtp_options", [{"refuse": lambda a: a.startswith(("sam.", "jean."))}], indirect=True)
def test_report_gives_logins_in_french_name_order(
    client: RoleClient, app: Flask, school: Any, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for login, first, last in (("bea.leblanc", "Béa", "Leblanc"), ("ana.leroy", "Ana", "Le Roy"), ("yann.legall", "Yann", "Le Gall")):
        add_person(login, first, last, "ELEVE")
    db.session.commit()
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    assert (campaign.failed, campaign.skipped) == (2, 9)
    db.session.delete(db.session.get(Personne, school.logins["ines.invite"].uid))
    db.session.commit()

    page = text(client.get(f"{BASE}/mail/campaigns/{campaign.id}", "adml_a"))
    assert "<th scope=\"col\">Identifiant</th>" in page
    assert _report_rows(page) == REPORT_ORDER
    assert "Seuls les" not in page

    report = client.get(f"{BASE}/mail/campaigns/{campaign.id}/report.csv", "adml_a").data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(report), delimiter=";"))
    assert rows[0] == ["Nom", "Identifiant", "Courriel", "Résultat", "Motif", "Tentatives"]
    assert [(r[0], r[1]) for r in rows[1:]] == REPORT_ORDER
    assert rows[1][2:4] == ["jean.prof@example.org", "Échec"] and rows[3][3] == "Sans adresse"
    # No internal account id anywhere (the last column counts attempts).
    ids = {str(p.uid) for p in school.logins.values()}
    assert not ids & {cell for row in rows for cell in row[:5]}

    # The page lists at most REPORT_ROWS rows; the CSV holds them all.
    from flask_publipostage.mail import views as mail_views

    monkeypatch.setattr(mail_views, "REPORT_ROWS", 4)
    page = text(client.get(f"{BASE}/mail/campaigns/{campaign.id}", "adml_a"))
    assert _report_rows(page) == REPORT_ORDER[:4]
    assert "Seuls les 4 premiers sont listés : le CSV les contient tous." in page

    result = app.test_cli_runner().invoke(args=["publipostage", "status", str(campaign.id), "--failures"])
    assert result.exit_code == 0, result.output
    assert "Échec\tJean Dupont\tjean.prof\tjean.prof@example.org\t" in result.output


@pytest.mark.parametrize("smtp_options", [{"tempfail": {"sam.pers@example.org": 2}}], indirect=True)
def test_temporary_refusal_is_retried(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    assert campaign.state == "done" and campaign.sent == 4
    sam = deliveries(campaign.id)["sam.pers@example.org"]
    assert (sam.state, sam.attempts) == ("sent", 3)
    assert smtp.by_recipient()["sam.pers@example.org"] == 1


@pytest.mark.parametrize("mail_config", [{"PUBLIPOSTAGE_MAIL_MAX_ATTEMPTS": 2}], indirect=True)
@pytest.mark.parametrize("smtp_options", [{"tempfail": {"sam.pers@example.org": 5}}], indirect=True)
def test_temporary_refusal_gives_up_after_max_attempts(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    sam = deliveries(campaign.id)["sam.pers@example.org"]
    assert (sam.state, sam.attempts) == ("failed", 2)
    assert "451" in sam.reason


def test_cancel_keeps_what_was_sent(client: RoleClient, app_ctx: Flask, school: Any, smtp: SmtpServer, held: None) -> None:
    scope = scope_a()
    campaign, _created = campaigns.start(Selection.from_args({}, scope))
    assert client.post(f"{BASE}/mail/campaigns/{campaign.id}/cancel", "adml_a").status_code == 303
    (campaign,) = campaign_rows()
    assert campaign.state == "cancelled" and campaign.active_key is None
    # Never sent: all of them are to be printed.
    assert len(list(db.session.execute(unreached_user_ids(campaign.id)).scalars())) == 10
    page = text(client.get(f"{BASE}/mail/campaigns/{campaign.id}", "adml_a"))
    assert "Annulée" in page and "4 non envoyés" in page


def test_no_activation_code_in_logs_or_journal(
    client: RoleClient, school: Any, smtp: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("flask_publipostage").setLevel(logging.DEBUG)
    client.post(f"{BASE}/mail/sample", "adml_a")
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    assert campaign.state == "done"
    codes = [p.jeton for p in db.session.execute(sa.select(Personne)).scalars() if p.jeton]
    assert codes
    # The test SMTP server ("mail.log") logs what it receives: it plays the relay, not us.
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]
    assert any(r.name.startswith("flask_publipostage.mail") for r in ours)
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {getattr(r, 'stack_info', '') or ''}" for r in ours
    )
    for code in codes:
        assert code not in logged
    journal = json.dumps(
        [
            [str(v) for v in row]
            for table in ("publipostage_run", "publipostage_run_item", "publipostage_audit")
            for row in db.session.execute(sa.text(f"SELECT * FROM {table}")).all()
        ]
    )
    for code in codes:
        assert code not in journal
    assert smtp.count() == 5  # the codes did leave, by mail only


# -- command line ----------------------------------------------------------------------


def test_cli_dry_run_send_and_status(app: Flask, school: Any, smtp: SmtpServer) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["publipostage", "send", "--profile", "Teacher", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "2 courriels à envoyer" in result.output
    assert "Anne Œillet" in result.output or "Jean Dupont" in result.output
    assert "CODE-" not in result.output
    assert smtp.count() == 0

    result = runner.invoke(args=["publipostage", "send", "--profile", "Teacher", "--scope-key", "ecole:A", "--as-actor", "rentree", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Campagne 1 créée" in result.output
    assert "2 envoyés, 0 en échec" in result.output
    assert smtp.by_recipient() == {"anne.prof@example.org": 1, "jean.prof@example.org": 1}
    with app.app_context():
        (campaign,) = campaign_rows()
        assert (campaign.actor, campaign.scope_key, campaign.state) == ("rentree", "ecole:A", "done")

    result = runner.invoke(args=["publipostage", "status"])
    assert result.exit_code == 0 and "Terminée" in result.output and "rentree" in result.output
    result = runner.invoke(args=["publipostage", "status", "1", "--failures"])
    assert result.exit_code == 0 and "Campagne 1 : Terminée." in result.output
    result = runner.invoke(args=["publipostage", "resume", "1"])
    assert result.exit_code == 0 and "rien à reprendre" in result.output
    result = runner.invoke(args=["publipostage", "status", "42"])
    assert result.exit_code != 0 and "Aucune campagne 42" in result.output
    result = runner.invoke(args=["publipostage", "send", "--activation", "maybe"])
    assert result.exit_code != 0


@pytest.mark.parametrize("mail_config", [{"PUBLIPOSTAGE_MAIL_RATE_LIMIT": 240}], indirect=True)
def test_rate_limit_spaces_the_messages(client: RoleClient, school: Any, smtp: SmtpServer) -> None:
    started = time.monotonic()
    client.post(f"{BASE}/mail/send", "adml_a")
    elapsed = time.monotonic() - started
    (campaign,) = campaign_rows()
    assert campaign.sent == 4
    # 240 a minute over both connections: one every 0.25 s, the first at once.
    assert elapsed >= 0.7, elapsed


def test_report_csv_neutralises_formulas(client: RoleClient, app_ctx: Flask, school: Any, smtp: SmtpServer) -> None:
    add_person("formula", "=HYPERLINK(\"http://evil.example\")", "+Sum", "ELEVE")
    db.session.commit()
    client.post(f"{BASE}/mail/send", "adml_a")
    (campaign,) = campaign_rows()
    report = client.get(f"{BASE}/mail/campaigns/{campaign.id}/report.csv", "adml_a").data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(report), delimiter=";"))
    names = [r[0] for r in rows[1:]]
    assert "'=HYPERLINK(\"http://evil.example\") +Sum" in names
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_messages_name_only_children_within_the_perimeter(client: RoleClient, app_ctx: Flask, school: Any, smtp: SmtpServer) -> None:
    zoe = db.session.get(Personne, school.logins["zoe.abel"].uid)
    bob = db.session.get(Personne, school.logins["bob.b"].uid)  # a pupil of school B
    add_person("mixed.parent", "Mixte", "Aaron", "PARENT", email="mixed@example.org", enfants=[zoe, bob])
    db.session.commit()
    client.post(f"{BASE}/mail/send?profile=Relative", "adml_a")
    (campaign,) = campaign_rows()
    assert campaign.scope_users and campaign.state == "done"
    (message,) = [m for m in smtp.messages if m.rcpt_tos == ("mixed@example.org",)]
    body = message.content.decode()
    assert "Zoé Abel" in body
    assert "Bob" not in body and "Bernard" not in body and "école B" not in body


def test_unreached_ids_of_another_perimeter_are_none(client: RoleClient, app_ctx: Flask, school: Any, smtp: SmtpServer) -> None:
    client.post(f"{BASE}/mail/send", "super")
    (campaign,) = campaign_rows()
    everyone = set(db.session.execute(unreached_user_ids(campaign.id)).scalars())
    assert everyone
    assert set(db.session.execute(unreached_user_ids(campaign.id, scope_a())).scalars()) == set()
    assert set(db.session.execute(unreached_user_ids(campaign.id, Scope(actor="super", key="*"))).scalars()) == everyone


def test_codes_in_preview_and_sample_need_print(
    client: RoleClient, school: Any, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from . import hosts

    monkeypatch.setitem(hosts.ROLES, "sender_a", {"actor": "sender_a", "school": "A", "caps": {"view", "send"}})
    page = client.get(f"{BASE}/mail?profile=Relative", "sender_a")
    assert page.status_code == 200
    assert "no-store" in page.headers["Cache-Control"]
    assert "CODE-marie.abel" not in text(page) and "•" * len("CODE-marie.abel") in text(page)
    assert "CODE-marie.abel" in text(client.get(f"{BASE}/mail?profile=Relative", "adml_a"))
    client.post(f"{BASE}/mail/sample?profile=Relative", "sender_a")
    (sample,) = smtp.messages
    assert sample.rcpt_tos == ("sender_a@example.org",)
    assert b"CODE-marie.abel" not in sample.content
    # The campaign itself sends the real codes.
    client.post(f"{BASE}/mail/send?profile=Relative", "sender_a")
    assert any(b"CODE-marie.abel" in m.content for m in smtp.messages[1:])
