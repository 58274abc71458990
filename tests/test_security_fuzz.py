"""Random query strings and form posts at every route: no 500, nothing changed.

Routes are read from the app's URL map, so a new route is fuzzed without touching
this file. CSRF is on, as in production: no forged post may change anything.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from flask_publipostage.models import metadata

from .hosts import db
from .school import build_school

PARAM_NAMES = [
    "profile", "class", "activation", "email", "local_admin", "created_before",
    "created_since", "sort", "then", "page", "campaign", "template", "csrf_token",
    "options", "x", "",
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
    with app.app_context():
        counts = {}
        for table in [*db.metadata.sorted_tables, *metadata.sorted_tables]:
            counts[table.name] = db.session.execute(
                sa.select(sa.func.count()).select_from(table)
            ).scalar_one()
        db.session.remove()
        return counts


def test_routes_are_discovered(app: Flask) -> None:
    endpoints = {rule for rule, _method, _args in _routes(app)}
    assert "/imports-exports/publipostage/" in endpoints
    assert "/imports-exports/publipostage/export.csv" in endpoints


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_random_requests_never_crash_nor_change_anything(app: Flask) -> None:
    with app.app_context():
        build_school()
        db.session.remove()
    routes = _routes(app)
    client = app.test_client()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        derandomize=True,
    )
    @given(
        route=st.sampled_from(routes),
        query=QUERY,
        form=QUERY,
        role=ROLES,
        arg=st.one_of(st.sampled_from(["1", "0", "abc", "../../etc/passwd", "x" * 200]), st.text(min_size=1, max_size=20)),
    )
    def check(route: tuple[str, str, list[str]], query: list[tuple[str, str]],
              form: list[tuple[str, str]], role: str | None, arg: str) -> None:
        rule, method, arguments = route
        url = rule
        for name in arguments:
            url = url.replace(f"<{name}>", arg.replace("/", "_") or "x")
            url = url.replace(f"<int:{name}>", "1")
        headers = {"X-Test-User": role} if role else {}
        before = _snapshot(app)
        if method == "GET":
            response = client.get(url, query_string=query, headers=headers)
        else:
            response = client.open(
                url, method=method, query_string=query, data=MultiDict(form), headers=headers
            )
        body = response.get_data(as_text=True)
        assert response.status_code < 500, (method, url, query, form, role, response.status_code)
        assert "Traceback" not in body
        after = _snapshot(app)
        if method != "GET" or response.status_code >= 400:
            # A failed or forged request leaves no trace; a successful export
            # adds exactly its audit row.
            assert before == after, (method, url, query, form, role)
        else:
            changed = {k for k in after if after[k] != before[k]}
            assert changed <= {"publipostage_audit"}, changed

    check()
