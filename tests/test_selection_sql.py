"""The SQL behind the selection: sort keys equal to Python's, statements that agree."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask, current_app

from flask_publipostage.selection import Selection
from flask_publipostage.sql import fold_for_sort, name_key
from flask_publipostage.views import current_selection

from .hosts import db
from .school_matrix import MatrixSchool, build_matrix_school

NAMES = [
    "Martin", "martin", "MARTIN", "Élodie", "ÉLODIE", "elodie", "Zoé", "Œillet", "œuvre", "Ærø",
    "Æsa", "Łukasz", "Dvořák", "Şahin", "İpek", "Nguyễn", "Ñúñez", "Ångström", "Çelik", "Øster",
    "Ávila", "Le Gall", "D'Artagnan", "Jean-Édouard", "Ĳsbrand", "Ǆ", "Ελένη", "Дми́трий", "", "a" * 200,
    "Weiß", "Straße", "ß", "STRAẞE", "ΟΔΟΣ", "Łódź", "Işık", "Đorđe",
]

#: Folds a French reader expects (letters decomposition leaves whole included).
FOLDS = {
    "Weiß": "weiss", "Straße": "strasse", "ß": "ss", "STRAẞE": "strasse", "Œillet": "oeillet",
    "ÆSA": "aesa", "Élodie": "elodie", "ΟΔΟΣ": "οδοσ",
}


@pytest.mark.parametrize("value", NAMES)
def test_name_key_is_the_python_fold(app_ctx: Flask, value: str) -> None:
    got = db.session.execute(sa.select(name_key(sa.literal(value, sa.String)))).scalar_one()
    assert got == fold_for_sort(value)


@pytest.mark.parametrize("value", FOLDS)
def test_fold_spells_out_whole_letters(app_ctx: Flask, value: str) -> None:
    got = db.session.execute(sa.select(name_key(sa.literal(value, sa.String)))).scalar_one()
    assert fold_for_sort(value) == got == FOLDS[value]


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
def test_frozen_order_is_the_statements(app_ctx: Flask, matrix: MatrixSchool, query: str, role: str) -> None:
    """The rows a run freezes (a row_number over the same keys) come in the
    statement's order, with the statement's class key as their group."""
    selection = select(app_ctx, query.format(**matrix.class_ids), role)
    assert _agree(selection) > 1


def _agree(selection: Selection) -> int:
    host = current_app.extensions["publipostage"].host
    rows = db.session.execute(selection.statement(host)).all()
    numbered = db.session.execute(selection.numbered(host)).all()
    assert [r.user_id for r in sorted(numbered, key=lambda r: r.position)] == [str(r.id) for r in rows]
    if selection.group_by == "class":
        assert {r.user_id: r.group_key for r in numbered} == {str(r.id): r.class_key for r in rows}
    return len(rows)


@pytest.fixture(params=["link-table", "relationship"])
def class_key_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of reading the classes: straight from the link tables, and
    through the relationships (hosts whose relationships are not plain)."""
    if request.param == "relationship":
        from flask_publipostage.host import HostModels

        monkeypatch.setattr(HostModels, "_plain_link", lambda *args: None)
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
            if "class" in selection.sort:
                _agree(selection)
