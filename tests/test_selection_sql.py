"""The SQL behind the selection: sort keys equal to Python's, statements that agree."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.selection import Selection, name_key
from flask_publipostage.sql import fold_for_sort
from flask_publipostage.views import current_selection

from .hosts import db
from .school_matrix import MatrixSchool, build_matrix_school

NAMES = [
    "Martin", "martin", "MARTIN", "Élodie", "ÉLODIE", "elodie", "Zoé", "Œillet", "œuvre", "Ærø",
    "Æsa", "Łukasz", "Dvořák", "Şahin", "İpek", "Nguyễn", "Ñúñez", "Ångström", "Çelik", "Øster",
    "Ávila", "Le Gall", "D'Artagnan", "Jean-Édouard", "Ĳsbrand", "Ǆ", "Ελένη", "Дми́трий", "", "a" * 200,
]


@pytest.mark.parametrize("value", NAMES)
def test_name_key_is_the_python_fold(app_ctx: Flask, value: str) -> None:
    got = db.session.execute(sa.select(name_key(sa.literal(value, sa.String)))).scalar_one()
    assert got == fold_for_sort(value)


def test_name_key_of_null(app_ctx: Flask) -> None:
    assert db.session.execute(sa.select(name_key(sa.null()))).scalar_one() is None


@pytest.fixture
def matrix(app_ctx: Flask) -> MatrixSchool:
    return build_matrix_school()


def select(app: Flask, query: str, role: str = "adml_a") -> Selection:
    with app.test_request_context(f"/?{query}", headers={"X-Test-User": role}):
        return current_selection(())


@pytest.mark.parametrize("query", [
    "sort=class",
    "sort=class&class={cp}&class={cm1}",
    "sort=class&then=profile&profile=Relative",
    "sort=profile&then=class",
])
@pytest.mark.parametrize("role", ["adml_a", "super"])
def test_correlated_class_key_is_the_joined_one(app_ctx: Flask, matrix: MatrixSchool, query: str, role: str) -> None:
    """sort_class_column (usable anywhere, e.g. a PDF job's frozen order) and the
    grouped joins of statement() give every account the same class key."""
    selection = select(app_ctx, query.format(**matrix.class_ids), role)
    host = app_ctx.extensions["publipostage"].host
    stmt, keys = selection.ordered_statement(host)
    index = selection.sort.index("class")
    joined = dict(db.session.execute(stmt.with_only_columns(host.user_id, keys[index]).order_by(None)).all())
    correlated = dict(db.session.execute(
        sa.select(host.user_id, selection.class_order_key(selection.sort_class_column(host)))
        .where(*selection.conditions(host))
    ).all())
    assert joined == correlated
    assert len(joined) > 1
    # A row_number over order_by() (as a PDF job freezes its order) agrees too.
    ordered = [row[0] for row in db.session.execute(
        sa.select(host.user_id)
        .where(*selection.conditions(host))
        .order_by(*selection.order_by(host, selection.sort_class_column(host)))
    )]
    assert ordered == [row.id for row in db.session.execute(stmt)]


@pytest.fixture(params=["link-table", "relationship"])
def class_key_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of computing the class key: straight from the link tables, and
    through the relationships (hosts whose relationships are not plain)."""
    if request.param == "relationship":
        from flask_publipostage import selection

        monkeypatch.setattr(selection, "_plain_link", lambda *args: None)
    return str(request.param)


def test_both_class_key_paths_agree(app_ctx: Flask, matrix: MatrixSchool, class_key_path: str) -> None:
    from flask_publipostage.recipients import iter_recipients

    from .test_selection_matrix import MATRIX

    for query, expected in MATRIX:
        if "class" not in query:
            continue
        for role in ("adml_a", "super"):
            selection = select(app_ctx, query.format(**matrix.class_ids), role)
            got = [r.login for r in iter_recipients(selection)]
            if role == "adml_a":
                assert got == expected, query
            host = app_ctx.extensions["publipostage"].host
            if "class" in selection.sort:
                stmt, keys = selection.ordered_statement(host)
                index = selection.sort.index("class")
                joined = dict(db.session.execute(stmt.with_only_columns(host.user_id, keys[index]).order_by(None)).all())
                correlated = dict(db.session.execute(
                    sa.select(host.user_id, selection.class_order_key(selection.sort_class_column(host)))
                    .where(*selection.conditions(host))
                ).all())
                assert joined == correlated, query
