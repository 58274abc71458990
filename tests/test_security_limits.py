"""Limits: running PDF jobs and campaigns per admin and selection, and the largest
selection any output accepts."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import jobs
from flask_publipostage.mail.models import Campaign
from flask_publipostage.pdf import background
from flask_publipostage.pdf.models import PdfJob

from .hosts import db
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

BUSY = "déjà en préparation"


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 1,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
    }


@pytest.fixture
def held(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs and campaigns stay queued: "while one runs"."""
    with app.app_context():
        build_security_school()
        db.session.remove()
    monkeypatch.setattr(jobs, "submit", lambda *args, **kwargs: None)


def _jobs(app: Flask) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.execute(sa.select(PdfJob.owner, PdfJob.template, PdfJob.state).order_by(PdfJob.created_at)).all()
        db.session.remove()
    return [tuple(r) for r in rows]


def test_one_running_pdf_job_per_admin_and_selection(app: Flask, client: Any, held: None) -> None:
    first = job_id_of(post_pdf(client, "adml_a", "sort=class"))
    # The same run again (a double click): the running one is shown.
    assert job_id_of(post_pdf(client, "adml_a", "sort=class")) == first
    before = snapshot(app)
    # Another template or option for the same selection: a clear message, nothing started.
    for form in ({"template": "cards"}, {"template": "letter", "signoff": "y"}):
        refused = post_pdf(client, "adml_a", "sort=class", **form)
        assert refused.status_code == 409
        assert BUSY in refused.get_data(as_text=True)
        assert snapshot(app) == before
    # Another selection, or another admin: their own job.
    other = job_id_of(post_pdf(client, "adml_a", "sort=profile"))
    assert other != first
    assert job_id_of(post_pdf(client, "super", "sort=class")) not in (first, other)
    # Once the first is over, the same selection may run again.
    assert client.post(f"{BASE}/pdf/jobs/{first}/cancel", "adml_a").status_code == 303
    assert job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards")) not in (first, other)
    assert [s for _o, _t, s in _jobs(app)].count("queued") == 3


def test_max_running_jobs_is_configurable(app: Flask, client: Any, held: None) -> None:
    app.config["PUBLIPOSTAGE_MAX_RUNNING_JOBS"] = 2
    job_id_of(post_pdf(client, "adml_a", "sort=class"))
    job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards"))
    refused = post_pdf(client, "adml_a", "sort=class", signoff="y")
    assert refused.status_code == 409 and BUSY in refused.get_data(as_text=True)
    assert len(_jobs(app)) == 2


def test_two_starts_at_the_same_moment_make_one_job(app: Flask, client: Any, held: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests read "nothing running" before either writes: the unique slot
    key lets one job through, the other request is shown that job (or, for
    another template, refused)."""
    first = job_id_of(post_pdf(client, "adml_a", "sort=class"))
    real = background._running_jobs
    calls: list[int] = []

    def late_reader(*args: Any) -> list[PdfJob]:
        calls.append(1)
        return [] if len(calls) == 1 else real(*args)  # the first look misses the other job

    monkeypatch.setattr(background, "_running_jobs", late_reader)
    assert job_id_of(post_pdf(client, "adml_a", "sort=class")) == first
    calls.clear()
    refused = post_pdf(client, "adml_a", "sort=class", template="cards")
    assert refused.status_code == 409 and BUSY in refused.get_data(as_text=True)
    assert len(_jobs(app)) == 1


def test_one_running_campaign_per_admin_and_selection(app: Flask, client: Any, held: None, smtp: SmtpServer) -> None:
    first = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    assert campaign_id_of(post_mail(client, "adml_a", "profile=Teacher")) == first
    page = client.get(f"{BASE}/mail?profile=Teacher", "adml_a").get_data(as_text=True)
    assert "déjà en cours" in page and f"/mail/campaigns/{first}" in page
    other = campaign_id_of(post_mail(client, "adml_a", "profile=Personnel"))
    assert other != first
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Campaign)).scalar_one() == 2
        db.session.remove()
    assert smtp.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("GET", "/export.csv", None),
        ("POST", "/pdf", {"template": "letter"}),
        ("GET", "/mail", None),
        ("POST", "/mail/send", {}),
    ],
)
def test_selection_over_the_limit_is_refused(app: Flask, client: Any, method: str, path: str, form: Any, smtp: SmtpServer) -> None:
    app.config["PUBLIPOSTAGE_MAX_SELECTION"] = 9
    with app.app_context():
        build_security_school()
        db.session.remove()
    before = snapshot(app)
    url = f"{BASE}{path}"
    response = client.get(url, "adml_a") if method == "GET" else client.post(url, "adml_a", data=form)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert "Cette sélection compte 10 comptes, plus que les 9 autorisés en une fois" in text
    assert snapshot(app) == before and smtp.count() == 0
    # Narrowed, it goes through.
    narrowed = f"{url}?profile=Teacher"
    ok = client.get(narrowed, "adml_a") if method == "GET" else client.post(narrowed, "adml_a", data=form)
    assert ok.status_code in (200, 303)
