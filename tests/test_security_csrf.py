"""CSRF: every state-changing request needs the token of a page the admin opened.

Without it, with a forged one or with another browser's, the answer is a 400 in
French and nothing happens: no job, no campaign, no cancel, no audit row, no mail,
no file. With the token read from the rendered page, the same request works.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_wtf.csrf import CSRFProtect

from flask_publipostage.runs import backends
from flask_publipostage.runs.models import Run, new_token
from flask_publipostage.saved import SavedSelection

from .hosts import db
from .runs import run_of
from .smtp import SmtpServer
from .test_security_matrix import blueprint_routes
from .test_security_support import (
    BASE,
    build_security_school,
    campaign_id_of,
    job_id_of,
    page_token,
    post_mail,
    post_pdf,
    table_state,
    token_from,
)

EXPIRED = "Le formulaire a expiré"


@pytest.fixture
def app_config(smtp: SmtpServer, tmp_path: Path) -> dict[str, Any]:
    return {
        **smtp.config(),
        "WTF_CSRF_ENABLED": True,
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 3,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
        "PUBLIPOSTAGE_STORAGE_DIR": str(tmp_path / "storage"),
    }


def _state(app: Flask, smtp: SmtpServer, tmp_path: Path) -> dict[str, Any]:
    state = table_state(app)
    with app.app_context():
        # A rename changes no count.
        state["saved"] = sorted(db.session.execute(sa.select(SavedSelection.name)).scalars())
        db.session.remove()
    state["mails"] = smtp.count()
    storage = tmp_path / "storage"
    state["files"] = sorted(p.name for p in storage.rglob("*") if p.is_file())
    return state


class Objects:
    """An active PDF job, an active campaign and a stopped one, and a saved
    selection, all school A's admin's."""

    def __init__(self, app: Flask, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        token = page_token(client, f"{BASE}/")
        with monkeypatch.context() as m:
            m.setattr(backends, "submit", lambda *args, **kwargs: None)  # queued, never run
            self.job = job_id_of(post_pdf(client, "adml_a", "", token))
            self.campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher", token))
        self.stopped = campaign_id_of(post_mail(client, "adml_a", "profile=Relative", token))
        with app.app_context():
            assert run_of(self.job).state == "queued"
            assert run_of(self.campaign).state == "queued"
            db.session.execute(sa.update(Run).where(Run.id == self.stopped).values(state="failed"))
            db.session.add(SavedSelection(actor="adml_a", scope_key="ecole:A", name="Élèves", selection="{}"))
            db.session.commit()
            self.saved = db.session.execute(sa.select(SavedSelection.id)).scalar_one()
            db.session.remove()


#: POST endpoint -> (its URL, the page whose form carries the token, what success looks like).
def _posts(o: Objects) -> dict[str, tuple[str, str, int]]:
    return {
        "publipostage.generate_pdf": (f"{BASE}/pdf?profile=Teacher", f"{BASE}/?profile=Teacher", 200),
        "publipostage.pdf_cancel": (f"{BASE}/pdf/jobs/{o.job}/cancel", f"{BASE}/pdf/jobs/{o.job}", 303),
        "publipostage.mail_send": (f"{BASE}/mail/send?profile=Personnel", f"{BASE}/mail?profile=Personnel", 303),
        "publipostage.mail_sample": (f"{BASE}/mail/sample?profile=Personnel", f"{BASE}/mail?profile=Personnel", 303),
        "publipostage.mail_campaign_cancel": (
            f"{BASE}/mail/campaigns/{o.campaign}/cancel", f"{BASE}/mail/campaigns/{o.campaign}", 303),
        "publipostage.mail_campaign_resume": (
            f"{BASE}/mail/campaigns/{o.stopped}/resume", f"{BASE}/mail/campaigns/{o.stopped}", 303),
        "publipostage.save_selection": (f"{BASE}/selections?profile=Teacher", f"{BASE}/?profile=Teacher", 303),
        "publipostage.rename_selection": (f"{BASE}/selections/{o.saved}/rename", f"{BASE}/", 303),
        "publipostage.delete_selection": (f"{BASE}/selections/{o.saved}/delete", f"{BASE}/", 303),
    }


#: The fields a POST needs besides its token.
FORMS = {
    "publipostage.generate_pdf": {"template": "cards"},
    "publipostage.save_selection": {"name": "Enseignants"},
    "publipostage.rename_selection": {"name": "Pupils"},
}


def test_every_post_needs_the_token_of_the_page(
    app: Flask, client: Any, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()
    objects = Objects(app, client, monkeypatch)
    posts = _posts(objects)
    discovered = {endpoint for endpoint, method in blueprint_routes(app) if method == "POST"}
    assert discovered == set(posts), f"POST routes without a CSRF case: {discovered ^ set(posts)}"
    # Another browser's token: valid, but not for this session.
    other = app.test_client()
    foreign = token_from(other.get(f"{BASE}/", headers={"X-Test-User": "adml_a"}).get_data(as_text=True))
    for endpoint, (url, page, success) in posts.items():
        form = FORMS.get(endpoint, {})
        before = _state(app, smtp, tmp_path)
        for token in (None, "", "forged", foreign, foreign + "x"):
            data = dict(form) if token is None else {**form, "csrf_token": token}
            for headers in ({}, {"X-Requested-With": "fetch"}):
                response = client.client.post(url, data=data, headers={"X-Test-User": "adml_a", **headers})
                assert response.status_code == 400, (endpoint, token, response.status_code)
                assert EXPIRED in response.get_data(as_text=True), endpoint
                assert _state(app, smtp, tmp_path) == before, (endpoint, token)
        # The token of the page the form is on: it works.
        token = page_token(client, page)
        response = client.post(url, "adml_a", data={**form, "csrf_token": token})
        response.get_data()  # a download goes to its end
        assert response.status_code == success, (endpoint, response.get_data(as_text=True)[:300])
        assert _state(app, smtp, tmp_path) != before, endpoint
    with app.app_context():
        assert run_of(objects.job).state == "cancelled"
        assert run_of(objects.campaign).state == "cancelled"
        assert run_of(objects.stopped).state == "done"
        db.session.remove()


def test_host_wide_csrf_protection_answers_in_french(app: Flask, client: Any) -> None:
    """A host using ``CSRFProtect`` refuses before the view: still a French page."""
    CSRFProtect(app)
    with app.app_context():
        build_security_school()
        db.session.remove()
    before = table_state(app)
    response = client.post(f"{BASE}/pdf?profile=Teacher", "adml_a", data={"template": "letter"})
    assert response.status_code == 400
    assert "ne vient pas de cette page" in response.get_data(as_text=True)
    assert table_state(app) == before
    token = page_token(client, f"{BASE}/?profile=Teacher")
    ok = client.post(f"{BASE}/pdf?profile=Teacher", "adml_a", data={"template": "letter", "csrf_token": token})
    assert ok.status_code == 200 and ok.data.startswith(b"%PDF")


def test_get_routes_change_nothing_but_the_audit_trail(app: Flask, client: Any, smtp: SmtpServer, tmp_path: Path) -> None:
    """A GET only reads: pages, the CSV (which writes its audit row and, as each
    account's history, its run), a job's status. No GET starts, cancels or sends;
    and a cross-site link, like a HEAD, changes nothing at all."""
    with app.app_context():
        build_security_school()
        db.session.remove()
    gets = sorted(rule.rule for rule in app.url_map.iter_rules()
                  if rule.endpoint.startswith("publipostage.") and "GET" in (rule.methods or ())
                  and not rule.arguments)
    before = _state(app, smtp, tmp_path)
    for url in gets:
        for role in ("adml_a", "super"):
            client.client.get(url, headers={"X-Test-User": role, "Sec-Fetch-Site": "cross-site"}).get_data()
            client.client.head(url, headers={"X-Test-User": role}).get_data()
    assert _state(app, smtp, tmp_path) == before
    for url in gets:
        for role in ("adml_a", "super"):
            client.get(url, role).get_data()
    after = _state(app, smtp, tmp_path)
    changed = {k for k in after if after[k] != before[k]}
    assert changed <= {"publipostage_audit", "publipostage_run", "publipostage_run_item"}, changed


def _audit_rows(app: Flask) -> int:
    return table_state(app)["publipostage_audit"]


CROSS_SITE = "L'export ne peut être lancé que depuis la page « Publipostage des comptes »"


def test_an_export_from_another_site_is_refused(app: Flask, client: Any, smtp: SmtpServer, tmp_path: Path) -> None:
    """Sec-Fetch-Site (every current browser), else Origin: a link or a form on
    another site cannot make the admin's browser export the list (and write the
    audit row saying the admin did)."""
    with app.app_context():
        build_security_school()
        db.session.remove()
    url = f"{BASE}/export.csv?profile=Teacher"
    before = _state(app, smtp, tmp_path)
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain is another site too
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "null"},
    ):
        response = client.client.get(url, headers={"X-Test-User": "adml_a", **headers})
        assert response.status_code == 403, headers
        body = re.sub("[\u00a0\u202f]", " ", response.get_data(as_text=True).replace("&#39;", "'"))
        assert CROSS_SITE in body and "CODE-" not in body, headers
    assert _state(app, smtp, tmp_path) == before
    rows = _audit_rows(app)
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},  # the page's link; a bookmark
                    {"Origin": "http://localhost"}, {}):  # a browser without Sec-Fetch-Site; a script
        response = client.client.get(url, headers={"X-Test-User": "adml_a", **headers})
        assert response.status_code == 200 and "CODE-jean.prof" in response.data.decode("utf-8-sig"), headers
        rows += 1
        assert _audit_rows(app) == rows, headers


def test_a_head_request_writes_no_audit_row(app: Flask, client: Any, smtp: SmtpServer, tmp_path: Path) -> None:
    """A HEAD sends no file: it answers like the GET would (status, headers) and
    records nothing."""
    with app.app_context():
        build_security_school()
        db.session.remove()
    before = _state(app, smtp, tmp_path)
    response = client.client.head(f"{BASE}/export.csv?profile=Teacher", headers={"X-Test-User": "adml_a"})
    assert response.status_code == 200 and response.data == b""
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    assert response.mimetype == "text/csv"
    assert client.client.head(f"{BASE}/export.csv?class=999999", headers={"X-Test-User": "adml_a"}).status_code == 403
    assert _state(app, smtp, tmp_path) == before
    # The GET does write it.
    assert client.get(f"{BASE}/export.csv?profile=Teacher", "adml_a").status_code == 200
    assert _audit_rows(app) == before["publipostage_audit"] + 1


def test_in_chromium_the_page_link_exports_and_another_site_cannot(app: Flask, smtp: SmtpServer, tmp_path: Path) -> None:
    """What a real browser sends: the page's link exports (one audit row); the
    same link on another site gets the French 403 and records nothing."""
    from .browser import launched_browser, live_server, require_chromium

    sync_api = require_chromium()
    with app.app_context():
        build_security_school()
        db.session.remove()
    with live_server(app) as url, launched_browser(sync_api) as browser:
        context = browser.new_context(accept_downloads=True, locale="fr-FR")
        context.set_extra_http_headers({"X-Test-User": "adml_a"})
        page = context.new_page()
        export = f"{url}{BASE}/export.csv?profile=Teacher"
        page.route("http://evil.example/", lambda route: route.fulfill(
            status=200, content_type="text/html", body=f'<a id="go" href="{export}">Cliquez ici</a>'))
        before = _state(app, smtp, tmp_path)
        page.goto("http://evil.example/")
        with page.expect_navigation() as navigation:
            page.click("#go")
        assert navigation.value.status == 403
        assert CROSS_SITE in re.sub("[\u00a0\u202f]", " ", page.inner_text("body"))
        assert _state(app, smtp, tmp_path) == before

        page.goto(f"{url}{BASE}/?profile=Teacher")
        with page.expect_download() as download:
            page.click("a.pp-csv")
        content = Path(download.value.path()).read_text(encoding="utf-8-sig")
        assert "CODE-jean.prof" in content
        assert _audit_rows(app) == before["publipostage_audit"] + 1
        context.close()


def test_job_ids_cannot_be_guessed(app: Flask, client: Any) -> None:
    tokens = {new_token() for _ in range(2000)}
    assert len(tokens) == 2000
    alphabet = set(string.ascii_letters + string.digits + "-_")
    for token in tokens:
        # 24 random bytes: 192 bits, written as 32 URL-safe characters.
        assert len(token) == 32 and set(token) <= alphabet
    with app.app_context():
        build_security_school()
        db.session.remove()
    token = page_token(client, f"{BASE}/")
    job = job_id_of(post_pdf(client, "adml_a", "", token, template="cards"))
    assert len(job) == 32 and set(job) <= alphabet
    page = client.get(f"{BASE}/pdf/jobs/{job}", "adml_a").get_data(as_text=True)
    # The download link is the only way to the file, and it names the job only.
    links = set(re.findall(r'href="([^"]*download[^"]*)"', page))
    assert links == {f"{BASE}/pdf/jobs/{job}/download"}
    with app.app_context():
        path = Path(run_of(job).file_path)
        db.session.remove()
    # The file is named after the job, in a folder only the server reads.
    assert path.name == f"{job}.pdf"
    assert path.parent.stat().st_mode & 0o077 == 0
