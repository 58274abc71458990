"""Shared helpers of the security tests (no test here): the school with a second
reachable school, CSRF tokens read from the rendered pages, table snapshots,
statement counters, and the objects (PDF job, campaign) the id routes need."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from flask_publipostage.models import metadata

from .hosts import add_person, db
from .school import School, build_school

BASE = "/imports-exports/publipostage"
#: Every role of the test host, ``None`` being nobody logged in.
ROLES: tuple[str | None, ...] = (None, "teacher", "viewer_a", "adml_a", "adml_b", "super")
ROLE_NAMES = {None: "anonymous", "teacher": "teacher", "viewer_a": "viewer_a",
              "adml_a": "adml_a", "adml_b": "adml_b", "super": "super"}
#: Every activation code of :func:`build_security_school` (``add_person``'s default).
CODE_PREFIX = "CODE-"
_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def build_security_school() -> School:
    """The hand-built school, plus a parent with an address in school B (so school
    B's admin can send too)."""
    school = build_school()
    bob = school.logins["bob.b"]
    school.logins["bea.b"] = add_person(
        "bea.b", "Béa", "Bernard", "PARENT", school="B", email="bea.b@example.org", enfants=[bob]
    )
    db.session.commit()
    return school


def all_codes() -> set[str]:
    """Every activation code in the host database (the secrets of the run)."""
    from .hosts import Personne

    return {c for c in db.session.execute(sa.select(Personne.jeton)).scalars() if c}


def token_from(html: str) -> str:
    """The CSRF token of the first form of a rendered page."""
    found = _TOKEN.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def page_token(client: Any, url: str, role: str = "adml_a") -> str:
    response = client.get(url, role)
    assert response.status_code == 200, (url, response.status_code)
    return token_from(response.get_data(as_text=True))


def snapshot(app: Flask) -> dict[str, int]:
    """Row counts of every table, the host's and the extension's (one statement)."""
    tables = [*db.metadata.sorted_tables, *metadata.sorted_tables]
    counts = [sa.select(sa.func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables]
    with app.app_context():
        row = db.session.execute(sa.select(*counts)).one()
        db.session.remove()
    return dict(row._mapping)


def table_state(app: Flask) -> dict[str, int]:
    """Row counts, plus PDF and mail runs per state (a cancel changes no count)."""
    from flask_publipostage.runs.models import Run

    tables = [*db.metadata.sorted_tables, *metadata.sorted_tables]
    columns = [sa.select(sa.func.count()).select_from(t).scalar_subquery().label(t.name) for t in tables]
    for kind in ("pdf", "mail"):
        for state in ("queued", "running", "waiting", "done", "failed", "cancelled"):
            count = sa.select(sa.func.count()).select_from(Run).where(Run.kind == kind, Run.state == state)
            columns.append(count.scalar_subquery().label(f"{kind}:{state}"))
    downloaded = sa.select(sa.func.count()).select_from(Run).where(Run.downloaded_at.is_not(None))
    columns.append(downloaded.scalar_subquery().label("downloaded"))
    with app.app_context():
        row = db.session.execute(sa.select(*columns)).one()
        db.session.remove()
    return dict(row._mapping)


@contextmanager
def count_statements(app: Flask) -> Iterator[list[str]]:
    """The SQL statements run meanwhile (same path, same work: no timing oracle)."""
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@contextmanager
def count_rows() -> Iterator[list[int]]:
    """The rows each statement run through a session meanwhile brought back
    (what the page reads, whatever the time it takes)."""
    counts: list[int] = []

    def record(execute_state: Any) -> Any:
        result = execute_state.invoke_statement()
        if not getattr(result, "returns_rows", True):
            return result
        frozen = result.freeze()
        counts.append(len(frozen().all()))
        return frozen()

    sa.event.listen(Session, "do_orm_execute", record)
    try:
        yield counts
    finally:
        sa.event.remove(Session, "do_orm_execute", record)


def job_id_of(response: Any) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return str(response.headers["Location"].rstrip("/").rsplit("/", 1)[-1])


def campaign_id_of(response: Any) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[-1])


def post_pdf(client: Any, role: str, query: str = "", token: str | None = None, **form: str) -> Any:
    data = {"template": "letter", **form}
    if token is not None:
        data["csrf_token"] = token
    return client.post(f"{BASE}/pdf?{query}", role, data=data)


def post_mail(client: Any, role: str, query: str = "", token: str | None = None, what: str = "send") -> Any:
    data = {"csrf_token": token} if token is not None else {}
    return client.post(f"{BASE}/mail/{what}?{query}", role, data=data)


def no_store(response: Any) -> bool:
    return "no-store" in response.headers.get("Cache-Control", "")
