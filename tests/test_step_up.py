"""Step-up authentication: with the host's ``step_up`` check, codes are shown,
printed, exported, downloaded and sent only after a recent authentication. A
stale one is sent to the host's re-authentication page, nothing done on the way,
and comes back to the same selection."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import Publipostage
from flask_publipostage.runs.models import Run

from .hosts import FIELDS, Division, Personne, db, permission, scope
from .smtp import SmtpServer
from .test_security_support import (
    BASE,
    build_security_school,
    campaign_id_of,
    job_id_of,
    post_mail,
    post_pdf,
    snapshot,
)


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "step_up": True,
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 4,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
    }


@pytest.fixture
def school(app: Flask) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()


def reauthenticate(client: Any) -> None:
    client.get("/reauth?next=/", "adml_a")


def go_stale(app: Flask) -> None:
    app.config["TEST_STEP_UP_SECONDS"] = 0


def back_from(response: Any) -> str:
    """The page the host's re-authentication returns to, from a redirect to it."""
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    location = urlsplit(response.headers["Location"])
    assert location.path == "/reauth"
    return parse_qs(location.query)["next"][0]


def chosen(page: str) -> tuple[bool, bool]:
    """Whether the page has the profile "Student" ticked, and the cards chosen."""
    return (re.search(r'value="Student"\s+checked', page) is not None,
            re.search(r'<input checked [^>]*value="cards"', page) is not None)


def round_trip(client: Any, response: Any) -> Any:
    """Re-authenticate where ``response`` sends the admin; the page it returns to."""
    reauth = client.get(response.headers["Location"], "adml_a")
    assert reauth.status_code == 302
    return client.get(reauth.headers["Location"], "adml_a")


def test_codes_in_the_preview_wait_for_a_recent_authentication(client: Any, school: None) -> None:
    url = f"{BASE}/?profile=Student&activation=inactive&template=cards"
    stale = html.unescape(client.get(url, "adml_a").get_data(as_text=True))
    assert "CODE-" not in stale and "Non activé (code masqué)" in stale
    assert "Les codes d'activation sont masqués tant que vous n'avez pas confirmé votre identité." in stale
    link = re.search(r"<a href=\"(/reauth\?[^\"]+)\">Confirmer mon identité</a>", stale).group(1)
    assert parse_qs(urlsplit(link).query)["next"] == [f"{BASE}/?profile=Student&activation=inactive&template=cards"]
    # The JSON says where to go too, without codes.
    data = client.get(f"{BASE}/preview.json?profile=Student&activation=inactive", "adml_a").get_json()
    assert {a["activation_code"] for a in data["accounts"]} == {None}
    assert data["step_up_url"].startswith("/reauth?next=")
    reauth = client.get(link, "adml_a")
    page = client.get(reauth.headers["Location"], "adml_a").get_data(as_text=True)
    assert "CODE-zoe.abel" in page and "confirmé votre identité" not in page
    # Back to the same selection and template.
    assert chosen(page) == (True, True)
    data = client.get(f"{BASE}/preview.json?profile=Student&activation=inactive", "adml_a").get_json()
    assert "CODE-zoe.abel" in {a["activation_code"] for a in data["accounts"]} and data["step_up_url"] is None


def test_csv_export(app: Flask, client: Any, school: None) -> None:
    before = snapshot(app)
    refused = client.get(f"{BASE}/export.csv?profile=Teacher&sort=class", "adml_a")
    assert back_from(refused) == f"{BASE}/?profile=Teacher&sort=class"
    assert snapshot(app) == before  # no audit row: nothing went out
    page = round_trip(client, refused)
    assert page.status_code == 200
    export = client.get(f"{BASE}/export.csv?profile=Teacher&sort=class", "adml_a")
    assert export.status_code == 200 and "CODE-jean.prof" in export.data.decode("utf-8-sig")


def test_pdf_small_and_in_the_background(app: Flask, client: Any, school: None) -> None:
    before = snapshot(app)
    refused = post_pdf(client, "adml_a", "profile=Student&sort=class", template="cards")
    assert back_from(refused) == f"{BASE}/?profile=Student&sort=class&template=cards#pp-pdf"
    assert snapshot(app) == before
    page = round_trip(client, refused).get_data(as_text=True)
    assert chosen(page) == (True, True)
    small = post_pdf(client, "adml_a", "profile=Student&sort=class", template="cards")
    assert small.status_code == 200 and small.mimetype == "application/pdf"
    # A file prepared in the background holds codes too: its download asks again.
    job = job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards"))
    go_stale(app)
    refused = client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a")
    assert back_from(refused) == f"{BASE}/pdf/jobs/{job}"
    with app.app_context():
        assert db.session.execute(sa.select(Run.downloaded_at).where(Run.token == job)).scalar() is None
    app.config["TEST_STEP_UP_SECONDS"] = 600
    assert "Télécharger le PDF" in round_trip(client, refused).get_data(as_text=True)
    download = client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a")
    assert download.status_code == 200 and download.data.startswith(b"%PDF")


def test_sending_a_campaign_a_sample_and_resuming(app: Flask, client: Any, school: None, smtp: SmtpServer) -> None:
    confirm = client.get(f"{BASE}/mail?profile=Relative&email=with", "adml_a").get_data(as_text=True)
    assert "CODE-marie.abel" not in confirm and "••••" in confirm
    assert "l'envoi vous demande d'abord de confirmer votre identité" in html.unescape(confirm)
    frame = client.get(f"{BASE}/mail/preview?profile=Relative&email=with", "adml_a").get_data(as_text=True)
    assert "CODE-marie.abel" not in frame
    before = snapshot(app)
    for what in ("send", "sample"):
        refused = post_mail(client, "adml_a", "profile=Relative&email=with", what=what)
        assert back_from(refused) == f"{BASE}/mail?profile=Relative&email=with", what
    assert snapshot(app) == before and smtp.count() == 0
    confirm = round_trip(client, refused).get_data(as_text=True)
    assert "CODE-marie.abel" in confirm and "confirmer votre identité" not in html.unescape(confirm)
    assert post_mail(client, "adml_a", "profile=Relative&email=with", what="sample").status_code == 303
    campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Relative&email=with"))
    assert smtp.count() == 1 + 1  # the sample, then the campaign's one message
    # Resuming a stopped campaign sends again: it asks too.
    with app.app_context():
        db.session.execute(sa.update(Run).where(Run.id == campaign).values(state="failed"))
        db.session.commit()
        db.session.remove()
    go_stale(app)
    refused = client.post(f"{BASE}/mail/campaigns/{campaign}/resume", "adml_a")
    assert back_from(refused) == f"{BASE}/mail/campaigns/{campaign}"
    with app.app_context():
        assert db.session.get(Run, campaign).state == "failed"
        db.session.remove()


def test_cancelling_and_viewing_need_no_step_up(app: Flask, client: Any, school: None) -> None:
    """Stopping is always safe, and a list without codes is no secret."""
    reauthenticate(client)
    campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    go_stale(app)
    assert client.get(f"{BASE}/journal", "adml_a").status_code == 200
    assert client.get(f"{BASE}/mail/campaigns/{campaign}", "adml_a").status_code == 200
    assert client.post(f"{BASE}/mail/campaigns/{campaign}/cancel", "adml_a").status_code == 303
    assert client.get(f"{BASE}/?profile=Teacher", "viewer_a").status_code == 200


def test_init_app_takes_both_callables_or_neither(tmp_path: Any) -> None:
    for options in ({"step_up": lambda: True}, {"step_up_url": lambda back: back},
                    {"step_up": True, "step_up_url": lambda back: back}):
        app = Flask(__name__, instance_path=str(tmp_path))
        app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI="sqlite://")
        db.init_app(app)
        with pytest.raises(TypeError, match="step_up"):
            Publipostage(app, db=db, user_model=Personne, class_model=Division, fields=FIELDS,
                         scope=scope, permission=permission, **options)
