"""Scope everywhere: what a local admin of school A learns about school B, about
another admin's files, jobs and campaigns, and about super-admin accounts.

"Learns nothing" is checked three ways: the same status, the same body, and the
same SQL statements (the same work, so no timing difference either).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.runs.models import Run, RunItem

from .hosts import Division, db
from .runs import run_of
from .smtp import SmtpServer
from .test_pdf_support import pdftotext
from .test_security_support import (
    BASE,
    build_security_school,
    campaign_id_of,
    count_statements,
    job_id_of,
    post_mail,
    post_pdf,
    snapshot,
)

#: What would betray the super-admin account of school A.
SUPER_TRACES = ("root.admin", "root@example.org", "CODE-root.admin", "Root Admin", "Admin Root")


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 1,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
        "PROPAGATE_EXCEPTIONS": False,
    }


@pytest.fixture
def school(app_ctx: Flask) -> Any:
    school = build_security_school()
    yield school
    db.session.remove()


def _request(client: Any, method: str, url: str, role: str = "adml_a") -> Any:
    if method == "GET":
        return client.get(url, role)
    return client.post(url, role, data={"template": "letter"})


SELECTION_ROUTES = (
    ("GET", "/"),
    ("GET", "/preview"),
    ("GET", "/export.csv"),
    ("POST", "/pdf"),
    ("GET", "/mail"),
    ("GET", "/mail/preview"),
    ("POST", "/mail/send"),
    ("POST", "/mail/sample"),
)


def _same_answer(app: Flask, client: Any, method: str, urls: list[str]) -> tuple[int, str]:
    """Status, body and statements are the same for every URL; nothing changes."""
    before = snapshot(app)
    answers = []
    for url in urls:
        with count_statements(app) as statements:
            response = _request(client, method, url)
            body = response.get_data(as_text=True)
        answers.append((response.status_code, body, [re.sub(r"\d+", "N", s) for s in statements]))
    assert snapshot(app) == before, (method, urls)
    first = answers[0]
    for url, answer in zip(urls[1:], answers[1:]):
        assert answer[0] == first[0], (url, answer[0], first[0])
        assert answer[1] == first[1], (url, answer[1][:300], first[1][:300])
        assert answer[2] == first[2], (url, answer[2], first[2])
    return first[0], first[1]


def test_class_of_school_b_answers_like_a_missing_class(app: Flask, client: Any, school: Any) -> None:
    b_class = school.other_school_class.ref
    missing = db.session.execute(sa.select(sa.func.max(Division.ref))).scalar_one() + 1000
    cp = school.cp.ref
    db.session.remove()
    for method, path in SELECTION_ROUTES:
        for template in ("class={}", "class=%d&class={}" % cp, "class={}&sort=class&profile=Student"):
            urls = [f"{BASE}{path}?{template.format(v)}" for v in (b_class, missing)]
            status, body = _same_answer(app, client, method, urls)
            assert status == 403, (path, status)
            assert "hors de votre périmètre" in body
            assert "CP de l'école B" not in body and "bob.b" not in body and "Bernard" not in body


def test_ids_of_others_answer_like_missing_ids(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    db.session.remove()
    # School B's admin and the super admin each have a PDF job and a campaign.
    b_job = job_id_of(post_pdf(client, "adml_b", template="cards"))
    super_job = job_id_of(post_pdf(client, "super", "profile=Relative", template="cards"))
    b_campaign = campaign_id_of(post_mail(client, "adml_b"))
    with app.app_context():
        missing_campaign = db.session.execute(sa.select(sa.func.max(Run.id))).scalar_one() + 1000
        b_file = run_of(b_job).file_path
        db.session.remove()
    never_issued = "x" * len(b_job)
    for suffix, method in (("", "GET"), ("/status", "GET"), ("/download", "GET"), ("/cancel", "POST")):
        urls = [f"{BASE}/pdf/jobs/{i}{suffix}" for i in (b_job, super_job, never_issued)]
        status, _body = _same_answer(app, client, method, urls)
        assert status == 404, (suffix, status)
        # A long or odd id is just as missing.
        for odd in ("a" * 65, "..%2F..%2Fetc%2Fpasswd", b_job.upper(), b_job[:-1]):
            assert _request(client, method, f"{BASE}/pdf/jobs/{odd}{suffix}").status_code == 404
    for suffix, method in (("", "GET"), ("/status", "GET"), ("/report.csv", "GET"), ("/cancel", "POST"), ("/resume", "POST")):
        urls = [f"{BASE}/mail/campaigns/{i}{suffix}" for i in (b_campaign, missing_campaign)]
        status, _body = _same_answer(app, client, method, urls)
        assert status == 404, (suffix, status)
    # Nothing was touched: school B's file is still there for its owner.
    assert b_file and Path(b_file).exists()
    download = client.get(f"{BASE}/pdf/jobs/{b_job}/download", "adml_b")
    assert download.status_code == 200 and download.data.startswith(b"%PDF")


def test_campaign_filter_of_school_b_answers_like_a_missing_campaign(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    db.session.remove()
    b_campaign = campaign_id_of(post_mail(client, "adml_b"))
    missing = b_campaign + 1000
    for path in ("/", "/preview", "/export.csv", "/mail"):
        answers = []
        for campaign in (b_campaign, missing):
            response = client.get(f"{BASE}{path}?campaign={campaign}", "adml_a")
            # Today an empty selection; refused alike once the filter checks visibility.
            assert response.status_code in (200, 403, 404), (path, response.status_code)
            # The id the admin typed comes back in the links and the filter form.
            body = re.sub(rf'(campaign=|campaign%3D|name="campaign" value="){campaign}\b', r'\1ID', response.get_data(as_text=True))
            answers.append((response.status_code, body))
        assert answers[0] == answers[1], path
        assert "bob.b" not in answers[0][1] and "bea.b" not in answers[0][1]


def test_campaign_filter_of_a_super_admin_campaign_is_refused(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    db.session.remove()
    super_campaign = campaign_id_of(post_mail(client, "super"))
    missing = super_campaign + 1000
    answers = []
    for campaign in (super_campaign, missing):
        response = client.get(f"{BASE}/export.csv?campaign={campaign}", "adml_a")
        answers.append((response.status_code, response.get_data(as_text=True)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 403


def _csv_logins(data: bytes) -> list[str]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    return [r[3] for r in rows[1:]]


QUERIES = ("", "profile=Personnel", "email=with", "local_admin=exclude", "activation=inactive",
           "sort=profile", "sort=class&then=profile", "profile=Personnel&email=with&activation=inactive")


def test_super_admin_accounts_never_reach_a_local_admin(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    db.session.remove()
    # The control: the super admin does see the account, so its absence below means something.
    assert "root.admin" in _csv_logins(client.get(f"{BASE}/export.csv?profile=Personnel", "super").data)

    def clean(text: str, where: str) -> None:
        for trace in SUPER_TRACES:
            assert trace not in text, (where, trace)

    for query in QUERIES:
        for path in ("/", "/preview", "/mail"):
            response = client.get(f"{BASE}{path}?{query}", "adml_a")
            assert response.status_code == 200, (path, query)
            clean(response.get_data(as_text=True), f"{path}?{query}")
        logins = _csv_logins(client.get(f"{BASE}/export.csv?{query}", "adml_a").data)
        assert logins and "root.admin" not in logins, query
    # Counters: the only other staff member is Sam.
    assert _csv_logins(client.get(f"{BASE}/export.csv?profile=Personnel", "adml_a").data) == ["sam.pers"]

    # PDF in the request (one account) and in the background (all of school A).
    small = post_pdf(client, "adml_a", "profile=Personnel")
    assert small.status_code == 200 and small.data.startswith(b"%PDF")
    text = pdftotext(small.data)
    assert "sam.pers" in text
    clean(text, "sync PDF")
    job = job_id_of(post_pdf(client, "adml_a", "sort=profile", template="cards"))
    big = client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a")
    assert big.status_code == 200
    text = pdftotext(big.data)
    assert "sam.pers" in text and "zoe.abel" in text
    clean(text, "background PDF")

    # Mail: the sample, then a campaign to the staff with an address.
    assert post_mail(client, "adml_a", "profile=Personnel", what="sample").status_code == 303
    campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Personnel&email=with"))
    campaign_all = campaign_id_of(post_mail(client, "adml_a", "email=with"))
    with app.app_context():
        delivered = set(db.session.execute(
            sa.select(RunItem.email).where(RunItem.run_id.in_((campaign, campaign_all)))
        ).scalars())
        db.session.remove()
    assert "sam.pers@example.org" in delivered and "root@example.org" not in delivered
    for message in smtp.messages:
        assert "root@example.org" not in message.rcpt_tos
        clean(message.content.decode("utf-8", "replace"), "mail")
    assert "sam.pers@example.org" in smtp.by_recipient()
    for suffix in ("", "/report.csv", "/status"):
        clean(client.get(f"{BASE}/mail/campaigns/{campaign_all}{suffix}", "adml_a").get_data(as_text=True), suffix)


def _mixed_families(app: Flask, school: Any) -> None:
    """A parent of school A whose children include a pupil of school B and the super
    admin's account; a pupil of A also enrolled in school B's class."""
    from .hosts import Personne, add_person

    zoe = db.session.get(Personne, school.logins["zoe.abel"].uid)
    bob = db.session.get(Personne, school.logins["bob.b"].uid)
    root = db.session.get(Personne, school.logins["root.admin"].uid)
    b_class = db.session.get(Division, school.other_school_class.ref)
    cp = db.session.get(Division, school.cp.ref)
    add_person("mixed.parent", "Mixte", "Aaron", "PARENT", email="mixed@example.org", enfants=[zoe, bob, root])
    add_person("two.schools", "Double", "Inscription", "ELEVE", email="double@example.org", divisions=[cp, b_class])
    db.session.commit()
    db.session.remove()


HIDDEN = ("Bob", "Bernard", "CP de l'école B", "CP de l&#39;école B", *SUPER_TRACES)


def test_relations_across_perimeters_stay_hidden(app: Flask, client: Any, school: Any) -> None:
    _mixed_families(app, school)
    app.config["PUBLIPOSTAGE_PDF_SYNC_LIMIT"] = 50
    outputs = {
        "page": client.get(f"{BASE}/?sort=class", "adml_a").get_data(as_text=True),
        "preview": client.get(f"{BASE}/preview?sort=class", "adml_a").get_data(as_text=True),
        "csv": client.get(f"{BASE}/export.csv?sort=class", "adml_a").data.decode("utf-8-sig"),
        "pdf": pdftotext(post_pdf(client, "adml_a", "profile=Relative&profile=Student&email=with&sort=class").data),
        "mail preview": client.get(f"{BASE}/mail?email=with&profile=Relative", "adml_a").get_data(as_text=True),
        "mail message": client.get(f"{BASE}/mail/preview?email=with&profile=Relative", "adml_a").get_data(as_text=True),
    }
    app.config["PUBLIPOSTAGE_PDF_SYNC_LIMIT"] = 1
    job = job_id_of(post_pdf(client, "adml_a", "profile=Relative&profile=Student&sort=class"))
    outputs["background pdf"] = pdftotext(client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a").data)
    for name, text in outputs.items():
        assert "Aaron" in text or "Double" in text, name
        for trace in HIDDEN:
            assert trace not in text, (name, trace)
    assert "Parent de Zoé Abel" in outputs["csv"]


def test_campaign_emails_stay_within_the_perimeter(app: Flask, client: Any, school: Any, smtp: SmtpServer) -> None:
    _mixed_families(app, school)
    assert post_mail(client, "adml_a", "email=with&profile=Relative&profile=Student").status_code == 303
    sent = "\n".join(m.content.decode("utf-8", "replace") for m in smtp.messages)
    assert "Aaron" in sent
    for trace in HIDDEN:
        assert trace not in sent, trace


def _families_through_hidden_children(school: Any) -> None:
    """Two parents of school A whose only child in the CP is outside the local
    admin's perimeter: a super-admin account, and a pupil of school B."""
    from .hosts import Personne, add_person

    cp = db.session.get(Division, school.cp.ref)
    hidden = add_person("hidden.pupil", "Caché", "Secret", "ELEVE", super_admin=True, divisions=[cp])
    elsewhere = add_person("b.pupil", "Ailleurs", "Bernard", "ELEVE", school="B", divisions=[cp])
    add_person("hidden.parent", "Parent", "Cachette", "PARENT", enfants=[hidden])
    add_person("b.family", "Parent", "Lointain", "PARENT", enfants=[elsewhere])
    # A parent with a visible child in the CE2 and a hidden one in the CP.
    lucas = db.session.get(Personne, school.logins["lucas.etienne"].uid)
    add_person("half.parent", "Parent", "Moitié", "PARENT", enfants=[lucas, hidden])
    db.session.commit()


def test_a_parent_is_selected_through_children_of_the_perimeter_only(app: Flask, client: Any, school: Any) -> None:
    _families_through_hidden_children(school)
    cp, ce2 = school.cp.ref, school.ce2.ref
    db.session.remove()

    def logins(url: str, role: str) -> list[str]:
        response = client.get(url, role)
        assert response.status_code == 200, url
        return re.findall(r'data-login="([^"]+)"', response.get_data(as_text=True))

    # The control: the super admin sees every child, so selects every parent.
    assert set(logins(f"{BASE}/preview?profile=Relative&class={cp}", "super")) == {
        "marie.abel", "hidden.parent", "b.family", "half.parent",
    }
    # The local admin: only the parent of a child they may see.
    assert logins(f"{BASE}/preview?profile=Relative&class={cp}", "adml_a") == ["marie.abel"]
    page = client.get(f"{BASE}/?profile=Relative&class={cp}", "adml_a").get_data(as_text=True)
    assert 'data-selected="1"' in page  # the counters too
    exported = _csv_logins(client.get(f"{BASE}/export.csv?profile=Relative&class={cp}", "adml_a").data)
    assert exported == ["marie.abel"]
    # Through a child of the perimeter, the parent is selected (and only that child shows).
    assert "half.parent" in logins(f"{BASE}/preview?profile=Relative&class={ce2}", "adml_a")
