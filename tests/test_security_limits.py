"""Limits: queued and running PDF files and campaigns per admin (all selections
together), and the largest selection any output accepts."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.runs import backends, core
from flask_publipostage.runs.models import Run

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

BUSY = "en préparation"
BUSY_MAIL = "campagnes en cours"


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
    """Runs stay queued: "while one runs"."""
    with app.app_context():
        build_security_school()
        db.session.remove()
    monkeypatch.setattr(backends, "submit", lambda *args, **kwargs: None)


def _runs(app: Flask, kind: str = "pdf") -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Run.actor, Run.options, Run.state).where(Run.kind == kind).order_by(Run.id)
        ).all()
        db.session.remove()
    return [tuple(r) for r in rows]


def test_running_pdf_files_are_limited_per_admin(app: Flask, client: Any, held: None) -> None:
    first = job_id_of(post_pdf(client, "adml_a", "sort=class"))
    # The same run again (a double click): the running one is shown.
    assert job_id_of(post_pdf(client, "adml_a", "sort=class")) == first
    # A second one, whatever it prints (MAX_RUNNING_JOBS is 2).
    second = job_id_of(post_pdf(client, "adml_a", "sort=class", template="cards"))
    assert second != first
    before = snapshot(app)
    # A third: another option, another selection: a clear message, nothing started.
    for query, form in (("sort=class", {"signoff": "y"}), ("sort=profile", {}), ("profile=Teacher", {})):
        refused = post_pdf(client, "adml_a", query, **form)
        assert refused.status_code == 409
        assert BUSY in refused.get_data(as_text=True)
        assert snapshot(app) == before
    # Another admin has slots of their own.
    assert job_id_of(post_pdf(client, "super", "sort=class")) not in (first, second)
    # Once one is over, the admin may start another.
    assert client.post(f"{BASE}/pdf/jobs/{first}/cancel", "adml_a").status_code == 303
    assert job_id_of(post_pdf(client, "adml_a", "sort=profile")) not in (first, second)
    assert [s for _o, _t, s in _runs(app)].count("queued") == 3


def test_many_selections_do_not_get_around_the_limit(app: Flask, client: Any, held: None) -> None:
    """One filter changed at each click used to start a run each time."""
    answers = [post_pdf(client, "adml_a", f"created_since=2020-01-{day:02d}").status_code for day in range(1, 26)]
    assert answers.count(303) == 2 and answers.count(409) == 23
    assert len(_runs(app)) == 2


def test_max_running_jobs_is_configurable(app: Flask, client: Any, held: None) -> None:
    app.config["PUBLIPOSTAGE_MAX_RUNNING_JOBS"] = 1
    job_id_of(post_pdf(client, "adml_a", "sort=class"))
    refused = post_pdf(client, "adml_a", "sort=profile")
    assert refused.status_code == 409 and BUSY in refused.get_data(as_text=True)
    assert len(_runs(app)) == 1


def test_two_starts_at_the_same_moment_make_one_job(app: Flask, client: Any, held: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both requests read "nothing running" before either writes: the unique slot
    key lets one run through, the other request is shown that run (or, for
    another run with no slot left, refused)."""
    app.config["PUBLIPOSTAGE_MAX_RUNNING_JOBS"] = 1
    first = job_id_of(post_pdf(client, "adml_a", "sort=class"))
    real = core.active_runs
    calls: list[int] = []

    def late_reader(*args: Any) -> list[Run]:
        calls.append(1)
        return [] if len(calls) == 1 else real(*args)  # the first look misses the other run

    monkeypatch.setattr(core, "active_runs", late_reader)
    assert job_id_of(post_pdf(client, "adml_a", "sort=class")) == first
    calls.clear()
    refused = post_pdf(client, "adml_a", "sort=class", template="cards")
    assert refused.status_code == 409 and BUSY in refused.get_data(as_text=True)
    assert len(_runs(app)) == 1


def test_running_campaigns_are_limited_per_admin(app: Flask, client: Any, held: None, smtp: SmtpServer) -> None:
    first = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    assert campaign_id_of(post_mail(client, "adml_a", "profile=Teacher")) == first
    page = client.get(f"{BASE}/mail?profile=Teacher", "adml_a").get_data(as_text=True)
    assert "déjà en cours" in page and f"/mail/campaigns/{first}" in page
    other = campaign_id_of(post_mail(client, "adml_a", "profile=Personnel"))
    assert other != first
    refused = post_mail(client, "adml_a", "profile=Relative")
    assert refused.status_code == 409 and BUSY_MAIL in refused.get_data(as_text=True)
    assert len(_runs(app, "mail")) == 2
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
