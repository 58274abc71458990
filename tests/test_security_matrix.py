"""Every route of the blueprint × every role of the test host: the expected status
and the capability asked, on real objects (a PDF job and a campaign started by
school A's admin), with CSRF on and the token of the rendered page.

The routes come from the URL map: a new route without a row here fails
:func:`test_every_route_has_a_row`. SECURITY.md shows the same table
(:func:`test_security_md_shows_the_matrix`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.runs.models import Run
from flask_publipostage.saved import SavedSelection

from .hosts import db
from .runs import run_of
from .smtp import SmtpServer
from .test_security_support import (
    BASE,
    ROLE_NAMES,
    ROLES,
    build_security_school,
    campaign_id_of,
    job_id_of,
    page_token,
    post_mail,
    post_pdf,
)

ANON, TEACHER, VIEWER, ADML_A, ADML_B, SUPER = ROLES
#: The owner of the objects goes last: its download deletes the file.
RUN_ORDER = (ANON, TEACHER, VIEWER, ADML_B, SUPER, ADML_A)


@dataclass(frozen=True)
class Row:
    endpoint: str
    method: str
    #: The capability the route asks of the host (None: public).
    capability: str | None
    #: Statuses for anonymous, teacher, viewer_a, adml_a, adml_b, super.
    statuses: tuple[int, int, int, int, int, int]
    path: str
    query: str = ""
    form: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def expected(self, role: str | None) -> int:
        return self.statuses[ROLES.index(role)]


DENIED = (401, 403, 403)
ALL_VIEW = (401, 403, 200, 200, 200, 200)
ALL_PRINT = (*DENIED, 200, 200, 200)
ALL_SEND = (*DENIED, 200, 200, 200)
OWNER_ONLY = (*DENIED, 200, 404, 404)
PERIMETER = (*DENIED, 200, 404, 200)
#: A saved selection is its admin's, in its perimeter: another admin of the school too gets 404.
OWN_SAVED = (401, 403, 404, 303, 404, 404)

MATRIX: tuple[Row, ...] = (
    Row("publipostage.static", "GET", None, (200,) * 6, "/assets/publipostage.css",
        note="CSS, JS and fonts only"),
    Row("publipostage.index", "GET", "view", ALL_VIEW, "/"),
    Row("publipostage.preview", "GET", "view", ALL_VIEW, "/preview"),
    Row("publipostage.preview_json", "GET", "view", ALL_VIEW, "/preview.json", note="codes to those who may print"),
    Row("publipostage.audit_log", "GET", "view", ALL_VIEW, "/journal", note="rows of the perimeter"),
    Row("publipostage.audit_csv", "GET", "view", ALL_VIEW, "/journal.csv", note="rows of the perimeter"),
    Row("publipostage.follow_up", "GET", "view", ALL_VIEW, "/follow-up", note="counts of the perimeter"),
    Row("publipostage.follow_up_csv", "GET", "view", ALL_VIEW, "/follow-up.csv", note="counts of the perimeter"),
    Row("publipostage.save_selection", "POST", "view", (401, 403, 303, 303, 303, 303), "/selections",
        query="profile=Teacher", form={"name": "Rentrée"}, note="in the admin's own list"),
    Row("publipostage.rename_selection", "POST", "view", OWN_SAVED, "/selections/{saved}/rename",
        form={"name": "Renommée"}),
    Row("publipostage.delete_selection", "POST", "view", OWN_SAVED, "/selections/{saved}/delete"),
    Row("publipostage.export_csv", "GET", "print", ALL_PRINT, "/export.csv"),
    Row("publipostage.generate_pdf", "POST", "print", ALL_PRINT, "/pdf",
        query="profile=Student&activation=inactive", form={"template": "cards"},
        note="small run: the PDF itself; above `PDF_SYNC_LIMIT`: 303 to the job"),
    Row("publipostage.pdf_jobs", "GET", "print", ALL_PRINT, "/pdf/jobs", note="own jobs only"),
    Row("publipostage.pdf_job", "GET", "print", OWNER_ONLY, "/pdf/jobs/{job}"),
    Row("publipostage.pdf_job_status", "GET", "print", OWNER_ONLY, "/pdf/jobs/{job}/status"),
    Row("publipostage.pdf_cancel", "POST", "print", (*DENIED, 303, 404, 404), "/pdf/jobs/{job}/cancel"),
    Row("publipostage.pdf_download", "GET", "print", OWNER_ONLY, "/pdf/jobs/{job}/download",
        note="then 410: the file is deleted"),
    Row("publipostage.mail_confirm", "GET", "send", ALL_SEND, "/mail"),
    Row("publipostage.mail_preview", "GET", "send", ALL_SEND, "/mail/preview",
        note="the message of the confirmation's frame, under its own policy"),
    Row("publipostage.mail_send", "POST", "send", (*DENIED, 303, 303, 303), "/mail/send",
        query="profile=Relative&email=with", note="303 to the campaign"),
    Row("publipostage.mail_sample", "POST", "send", (*DENIED, 303, 303, 303), "/mail/sample",
        query="profile=Relative&email=with", note="to the admin's own address"),
    Row("publipostage.mail_campaigns", "GET", "send", ALL_SEND, "/mail/campaigns", note="campaigns of the perimeter"),
    Row("publipostage.mail_campaign", "GET", "send", PERIMETER, "/mail/campaigns/{campaign}"),
    Row("publipostage.mail_campaign_status", "GET", "send", PERIMETER, "/mail/campaigns/{campaign}/status"),
    Row("publipostage.mail_campaign_csv", "GET", "send", PERIMETER, "/mail/campaigns/{campaign}/report.csv"),
    Row("publipostage.mail_campaign_cancel", "POST", "send", (*DENIED, 303, 404, 303),
        "/mail/campaigns/{campaign}/cancel"),
    Row("publipostage.mail_campaign_resume", "POST", "send", (*DENIED, 303, 404, 303),
        "/mail/campaigns/{campaign}/resume", note="a stopped campaign"),
)


def matrix_table() -> str:
    """The matrix as the Markdown table of SECURITY.md."""
    names = [ROLE_NAMES[r] for r in ROLES]
    lines = [
        "| route | method | capability | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in MATRIX:
        path = row.path.replace("{job}", "<job>").replace("{campaign}", "<campaign>").replace("{saved}", "<saved>")
        cells = [str(s) for s in row.statuses]
        note = f" ({row.note})" if row.note else ""
        lines.append(
            f"| `{path}`{note} | {row.method} | {row.capability or 'none'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def blueprint_routes(app: Flask) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("publipostage."):
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                found.add((rule.endpoint, method))
    return found


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "WTF_CSRF_ENABLED": True,
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 4,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
    }


def test_every_route_has_a_row(app: Flask) -> None:
    rows = {(r.endpoint, r.method) for r in MATRIX}
    assert len(rows) == len(MATRIX), "one row per route and method"
    missing = blueprint_routes(app) - rows
    assert not missing, f"routes without a row in the permission matrix: {sorted(missing)}"
    assert not rows - blueprint_routes(app), "rows for routes that no longer exist"


def test_security_md_shows_the_matrix() -> None:
    text = (Path(__file__).parent.parent / "SECURITY.md").read_text(encoding="utf-8")
    assert matrix_table() in text, "SECURITY.md's matrix differs: paste matrix_table() there\n" + matrix_table()


def _ask_log(app: Flask) -> list[str]:
    """Wrap the host's permission callable to record the capabilities asked."""
    state = app.extensions["publipostage"]
    asked: list[str] = []
    original = state.permission_callback

    def recording(capability: str) -> bool:
        asked.append(capability)
        return bool(original(capability))

    state.permission_callback = recording
    return asked


def test_route_role_matrix(app: Flask, client: Any, smtp: SmtpServer) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()
    token = page_token(client, f"{BASE}/")
    # Real objects of school A's admin: a background PDF job (10 accounts > the
    # sync limit of 4) and a campaign, both finished.
    job = job_id_of(post_pdf(client, ADML_A, "", token, template="cards"))
    campaign = campaign_id_of(post_mail(client, ADML_A, "", token))
    saved = client.post(f"{BASE}/selections?profile=Student", ADML_A, data={"name": "Élèves", "csrf_token": token})
    assert saved.status_code == 303
    with app.app_context():
        assert run_of(job).state == "done"
        assert run_of(campaign).state == "done"
        saved_id = db.session.execute(sa.select(SavedSelection.id)).scalar_one()
        db.session.remove()

    def stop_campaign() -> None:
        with app.app_context():
            db.session.execute(sa.update(Run).where(Run.id == campaign).values(state="failed"))
            db.session.commit()
            db.session.remove()

    prepare: dict[str, Callable[[], None]] = {"publipostage.mail_campaign_resume": stop_campaign}
    asked = _ask_log(app)
    mismatches: list[str] = []
    for row in MATRIX:
        url = BASE + row.path.format(job=job, campaign=campaign, saved=saved_id) + (f"?{row.query}" if row.query else "")
        for role in RUN_ORDER:
            if row.endpoint in prepare:
                prepare[row.endpoint]()
            asked.clear()
            if row.method == "GET":
                response = client.get(url, role)
            else:
                response = client.post(url, role, data={**row.form, "csrf_token": token})
            response.get_data()  # a download deletes its file once read whole
            expected = row.expected(role)
            if response.status_code != expected:
                mismatches.append(
                    f"{row.method} {row.path} as {ROLE_NAMES[role]}: {response.status_code}, expected {expected}"
                    f" — {response.get_data(as_text=True)[:200]!r}"
                )
            # The route asks the host for exactly its capability, first.
            if role is not None and row.capability is not None:
                if not asked or asked[0] != row.capability:
                    mismatches.append(f"{row.method} {row.path} as {ROLE_NAMES[role]} asked {asked}")
            if row.capability is None:
                assert not asked
    assert not mismatches, "\n".join(mismatches)
    # The file is gone after its owner's download: a second one says so.
    again = client.get(f"{BASE}/pdf/jobs/{job}/download", ADML_A)
    assert again.status_code == 410
    assert "supprimé" in again.get_data(as_text=True)


def test_ownership_is_deliberate(app: Flask, client: Any, smtp: SmtpServer) -> None:
    """A PDF file holds codes and is a one-off download: its creator only (same
    actor *and* same perimeter). A campaign holds no code (its report lists names,
    addresses and outcomes): like the audit trail, it belongs to the perimeter, so a
    super admin (perimeter "*") follows and stops every campaign, and a local admin
    those of the school."""
    from flask_publipostage.access import Scope
    from flask_publipostage.mail.sender import KIND as MAIL
    from flask_publipostage.pdf.pipeline import KIND as PDF
    from flask_publipostage.runs import core

    with app.app_context():
        build_security_school()
        db.session.remove()
    token = page_token(client, f"{BASE}/")
    job = job_id_of(post_pdf(client, ADML_A, "", token, template="cards"))
    campaign = campaign_id_of(post_mail(client, ADML_A, "", token))
    with app.test_request_context():
        own = Scope(actor="adml_a", key="ecole:A")
        assert core.find_visible(PDF, job, own) is not None
        # Same actor name in another perimeter, or another actor of the same perimeter.
        assert core.find_visible(PDF, job, Scope(actor="adml_a", key="ecole:B")) is None
        assert core.find_visible(PDF, job, Scope(actor="other", key="ecole:A")) is None
        assert core.find_visible(PDF, job, Scope(actor="super", key="*")) is None
        assert core.get_visible(MAIL, str(campaign), Scope(actor="other", key="ecole:A")).id == campaign
        assert core.get_visible(MAIL, str(campaign), Scope(actor="super", key="*")).id == campaign
        with pytest.raises(Exception) as refused:
            core.get_visible(MAIL, str(campaign), Scope(actor="adml_a", key="ecole:B"))
        assert getattr(refused.value, "code", None) == 404
    # The super admin's own list shows the campaign, never the PDF job.
    assert f"/mail/campaigns/{campaign}" in client.get(f"{BASE}/mail/campaigns", SUPER).get_data(as_text=True)
    assert job not in client.get(f"{BASE}/pdf/jobs", SUPER).get_data(as_text=True)
    assert job not in client.get(f"{BASE}/pdf/jobs", ADML_B).get_data(as_text=True)
    assert job in client.get(f"{BASE}/pdf/jobs", ADML_A).get_data(as_text=True)
    assert f"/mail/campaigns/{campaign}" not in client.get(f"{BASE}/mail/campaigns", ADML_B).get_data(as_text=True)
