"""Random query strings and form posts at every route: no 500, nothing changed.

Routes are read from the app's URL map, so a new route is fuzzed without touching
this file. CSRF is on, as in production: no forged post may change anything; and
with a valid token, random forms reach the validation behind it and still never
crash nor leave a partial trace when refused.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from .hosts import db
from .school import build_school
from .test_security_support import snapshot, table_state, token_from

PARAM_NAMES = [
    "profile", "class", "activation", "email", "local_admin", "created_before",
    "created_since", "sort", "then", "page", "campaign", "template", "csrf_token",
    "every_class", "zip", "options", "x", "",
]
VALUES = st.one_of(
    st.sampled_from(
        ["", "all", "Student", "Relative", "inactive", "with", "only", "class", "profile",
         "2025-09-01", "2025-02-30", "1", "0", "-1", "99999999999999999999", "4", "cards",
         "letter", "<script>alert(1)</script>", "' OR 1=1 --", "%00", "\u202e", "é" * 300,
         "{{7*7}}", "<pdf:nextpage/>"]
    ),
    st.text(max_size=40),
)
QUERY = st.lists(st.tuples(st.sampled_from(PARAM_NAMES), VALUES), max_size=8)
ROLES = st.sampled_from([None, "teacher", "viewer_a", "adml_a", "adml_b", "super"])
#: Mostly plausible filters and options, so that requests also get through.
PLAUSIBLE = st.sampled_from([
    ("profile", "Student"), ("profile", "Relative"), ("profile", "Teacher"), ("profile", "Guest"),
    ("class", "1"), ("class", "2"), ("class", "4"), ("activation", "inactive"), ("activation", "active"),
    ("email", "with"), ("email", "without"), ("local_admin", "exclude"), ("sort", "class"),
    ("sort", "profile"), ("then", "profile"), ("created_since", "2025-09-01"), ("campaign", "1"),
    ("template", "letter"), ("template", "cards"), ("postal", "y"), ("signoff", "y"),
    ("then", "class"), ("every_class", "y"), ("zip", "y"),
])
PLAUSIBLE_QUERY = st.lists(st.one_of(PLAUSIBLE, PLAUSIBLE, PLAUSIBLE, st.tuples(st.sampled_from(PARAM_NAMES), VALUES)), max_size=5)
ADMINS = st.sampled_from(["adml_a", "adml_a", "adml_b", "super", "viewer_a", None])


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"WTF_CSRF_ENABLED": True}


def _routes(app: Flask) -> list[tuple[str, str, list[str]]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("publipostage.") or rule.endpoint == "publipostage.static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.rule, method, sorted(rule.arguments)))
    return routes


def _snapshot(app: Flask) -> dict[str, int]:
    return snapshot(app)


def test_routes_are_discovered(app: Flask) -> None:
    endpoints = {rule for rule, _method, _args in _routes(app)}
    assert "/imports-exports/publipostage/" in endpoints
    assert "/imports-exports/publipostage/export.csv" in endpoints


def _fuzz(app: Flask, *, with_token: bool, ids: list[str], examples: int) -> Counter[tuple[str, int]]:
    """Random requests at every route; ``with_token``: every form carries a valid
    CSRF token, so the posts get past it and reach the validation behind."""
    routes = _routes(app)
    client = app.test_client()
    token = None
    seen: Counter[tuple[str, int]] = Counter()
    if with_token:
        # The token belongs to this client's session.
        page = client.get("/imports-exports/publipostage/", headers={"X-Test-User": "adml_a"})
        token = token_from(page.get_data(as_text=True))
    app.config["PROPAGATE_EXCEPTIONS"] = False
    args = st.one_of(
        st.sampled_from(["1", "0", "abc", "../../etc/passwd", "x" * 200, *ids]),
        st.text(min_size=1, max_size=20),
    )

    posts = [r for r in routes if r[1] == "POST"]
    if with_token:
        strategies = {
            "route": st.one_of(st.sampled_from(posts), st.sampled_from(routes)),
            "query": PLAUSIBLE_QUERY,
            "form": PLAUSIBLE_QUERY,
            "role": ADMINS,
        }
    else:
        strategies = {"route": st.sampled_from(routes), "query": QUERY, "form": QUERY, "role": ROLES}

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
    )
    @given(arg=args, **strategies)
    def check(route: tuple[str, str, list[str]], query: list[tuple[str, str]],
              form: list[tuple[str, str]], role: str | None, arg: str) -> None:
        rule, method, arguments = route
        url = rule
        for name in arguments:
            # As a browser sends it: a "?" or "#" in an id is part of the path.
            url = url.replace(f"<{name}>", quote(arg.replace("/", "_"), safe="") or "x")
            url = url.replace(f"<int:{name}>", arg if arg.isascii() and arg.isdigit() and len(arg) < 9 else "1")
        headers = {"X-Test-User": role} if role else {}
        data = MultiDict(form)
        if token is not None:
            data.setlist("csrf_token", [token])
        before = _state(app)
        if method == "GET":
            response = client.get(url, query_string=query, headers=headers)
        else:
            response = client.open(url, method=method, query_string=query, data=data, headers=headers)
        body = response.get_data()  # a download is a PDF, not text
        seen[(method, response.status_code)] += 1
        assert response.status_code < 500, (method, url, query, form, role, response.status_code)
        assert b"Traceback" not in body
        after = _state(app)
        if response.status_code >= 400:
            # A refused or forged request leaves no trace at all.
            assert before == after, (method, url, query, form, role, response.status_code)
        elif method == "GET":
            # A successful export adds exactly its audit row and its run (the history).
            changed = {k for k in after if after[k] != before[k]}
            assert changed <= {"publipostage_audit", "publipostage_run", "publipostage_run_item"}, changed

    check()
    return seen


def _state(app: Flask) -> dict[str, int]:
    return table_state(app)


@pytest.fixture
def objects(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """School A's admin's PDF job and campaign, so ids that exist are fuzzed too;
    rendering is stubbed (the fuzz is about the web layer) and mail suppressed."""
    from flask_publipostage.pdf import worker

    with app.app_context():
        build_school()
        db.session.remove()
    pdf = worker.render_bytes("<p>x</p>", ())
    monkeypatch.setattr(worker, "_render", lambda html, out, roots: out.write(pdf))
    app.config.update(MAIL_SUPPRESS_SEND=True, PUBLIPOSTAGE_PDF_SYNC_LIMIT=3, PUBLIPOSTAGE_PDF_WORKERS=1)
    client = app.test_client()
    headers = {"X-Test-User": "adml_a"}
    page = client.get("/imports-exports/publipostage/", headers=headers).get_data(as_text=True)
    token = token_from(page)
    job = client.post("/imports-exports/publipostage/pdf", data={"template": "letter", "csrf_token": token}, headers=headers)
    campaign = client.post("/imports-exports/publipostage/mail/send", data={"csrf_token": token}, headers=headers)
    ids = [r.headers["Location"].rstrip("/").rsplit("/", 1)[-1] for r in (job, campaign)]
    assert job.status_code == campaign.status_code == 303, ids
    return ids


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_random_requests_never_crash_nor_change_anything(app: Flask, objects: list[str]) -> None:
    seen = _fuzz(app, with_token=False, ids=objects, examples=300)
    assert not any(method == "POST" and status < 400 for method, status in seen), seen


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_random_forms_with_a_valid_token_never_crash(app: Flask, objects: list[str]) -> None:
    seen = _fuzz(app, with_token=True, ids=objects, examples=300)
    # Some random posts get through: the fuzz reaches past the CSRF check.
    assert any(method == "POST" and status < 400 for method, status in seen), seen
