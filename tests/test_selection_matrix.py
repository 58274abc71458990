"""Filter semantics on the hand-built school: exact recipients, in print order."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_publipostage.recipients import iter_recipients
from flask_publipostage.selection import Selection, count
from flask_publipostage.views import current_selection

from .school_matrix import MatrixSchool, build_matrix_school

ALL_A = [
    "elodie.abel", "emile.abel", "lea.abel", "marie.abel", "zoe.abel",
    "claire.pers", "jean.prof", "sam.pers", "lucas.etienne", "paul.etienne",
    "ines.invite", "yves.noel", "anne.prof", "hugo.sansclasse", "nina.sansclasse",
    "elodie.zidane",
]

#: query string (class placeholders {cp} {cm1} {ce2}) -> logins in order, for adml_a.
MATRIX: list[tuple[str, list[str]]] = [
    ("", ALL_A),
    ("profile=Student", [
        "elodie.abel", "emile.abel", "lea.abel", "zoe.abel", "lucas.etienne",
        "nina.sansclasse", "elodie.zidane",
    ]),
    ("profile=Relative", ["marie.abel", "paul.etienne", "hugo.sansclasse"]),
    ("profile=Personnel&profile=Teacher", ["claire.pers", "jean.prof", "sam.pers", "anne.prof"]),
    ("profile=Teacher&profile=Teacher", ["jean.prof", "anne.prof"]),
    # A parent belongs to the classes of their children.
    ("class={cp}", ["emile.abel", "marie.abel", "zoe.abel", "anne.prof"]),
    # Marie has a child in each class and appears once; so does Anne, who teaches both.
    ("class={cp}&class={cm1}", [
        "emile.abel", "lea.abel", "marie.abel", "zoe.abel", "anne.prof", "elodie.zidane",
    ]),
    ("class={ce2}", ["elodie.abel", "jean.prof", "lucas.etienne", "paul.etienne"]),
    ("class={cp}&class={cm1}&class={ce2}&profile=Student", [
        "elodie.abel", "emile.abel", "lea.abel", "zoe.abel", "lucas.etienne", "elodie.zidane",
    ]),
    ("activation=active", ["lea.abel", "paul.etienne", "anne.prof", "elodie.zidane"]),
    ("activation=inactive", [
        "elodie.abel", "emile.abel", "marie.abel", "zoe.abel", "claire.pers", "jean.prof",
        "sam.pers", "lucas.etienne", "ines.invite", "yves.noel", "hugo.sansclasse",
        "nina.sansclasse",
    ]),
    ("email=with", ["marie.abel", "jean.prof", "sam.pers", "anne.prof", "hugo.sansclasse"]),
    ("email=without", [
        "elodie.abel", "emile.abel", "lea.abel", "zoe.abel", "claire.pers", "lucas.etienne",
        "paul.etienne", "ines.invite", "yves.noel", "nina.sansclasse", "elodie.zidane",
    ]),
    ("local_admin=only", ["claire.pers", "anne.prof"]),
    ("local_admin=exclude", [x for x in ALL_A if x not in ("claire.pers", "anne.prof")]),
    # Dates are days in Europe/Paris, both bounds inclusive.
    ("created_since=2025-09-01", [x for x in ALL_A if x != "lucas.etienne"]),
    ("created_before=2025-08-31", ["lucas.etienne"]),
    ("created_before=2025-09-01", [
        x for x in ALL_A if x not in ("lea.abel", "ines.invite", "yves.noel")
    ]),
    ("created_since=2025-09-01&created_before=2025-09-01", [
        x for x in ALL_A if x not in ("lea.abel", "ines.invite", "yves.noel", "lucas.etienne")
    ]),
    ("created_since=2025-09-02&created_before=2025-09-02", ["lea.abel"]),
    ("created_since=2026-01-15", ["ines.invite", "yves.noel"]),
    ("created_before=2026-01-14&profile=Guest", []),
    # Sorted by class: school order of the levels (CP < CE2 < CM1), then the
    # accounts without a class; a parent goes with the first class of their
    # children, a teacher with the first of theirs (Marie and Anne with CP).
    ("sort=class", [
        "emile.abel", "marie.abel", "zoe.abel", "anne.prof",
        "elodie.abel", "jean.prof", "lucas.etienne", "paul.etienne",
        "lea.abel", "elodie.zidane",
        "claire.pers", "sam.pers", "ines.invite", "yves.noel", "hugo.sansclasse", "nina.sansclasse",
    ]),
    # Only the chosen classes count for the sort: Marie and Anne go with CM1.
    ("sort=class&class={cm1}", ["lea.abel", "marie.abel", "anne.prof", "elodie.zidane"]),
    ("sort=class&class={cp}", ["emile.abel", "marie.abel", "zoe.abel", "anne.prof"]),
    ("sort=profile", [
        "jean.prof", "anne.prof",
        "elodie.abel", "emile.abel", "lea.abel", "zoe.abel", "lucas.etienne", "nina.sansclasse", "elodie.zidane",
        "marie.abel", "paul.etienne", "hugo.sansclasse",
        "claire.pers", "sam.pers",
        "ines.invite", "yves.noel",
    ]),
    ("sort=class&then=profile", [
        "anne.prof", "emile.abel", "zoe.abel", "marie.abel",
        "jean.prof", "elodie.abel", "lucas.etienne", "paul.etienne",
        "lea.abel", "elodie.zidane",
        "nina.sansclasse", "hugo.sansclasse", "claire.pers", "sam.pers", "ines.invite", "yves.noel",
    ]),
    ("sort=profile&then=class", [
        "anne.prof", "jean.prof",
        "emile.abel", "zoe.abel", "elodie.abel", "lucas.etienne", "lea.abel", "elodie.zidane", "nina.sansclasse",
        "marie.abel", "paul.etienne", "hugo.sansclasse",
        "claire.pers", "sam.pers",
        "ines.invite", "yves.noel",
    ]),
    # "Puis par" alone is the only sort key.
    ("sort=none&then=profile", [
        "jean.prof", "anne.prof",
        "elodie.abel", "emile.abel", "lea.abel", "zoe.abel", "lucas.etienne", "nina.sansclasse", "elodie.zidane",
        "marie.abel", "paul.etienne", "hugo.sansclasse",
        "claire.pers", "sam.pers",
        "ines.invite", "yves.noel",
    ]),
    # Empty selection.
    ("profile=Guest&activation=active", []),
    # Everything at once.
    (
        (
            "profile=Student&profile=Relative&class={cp}&class={cm1}&activation=inactive&email=without"
            "&local_admin=exclude&created_since=2025-09-01&created_before=2025-09-01&sort=class&then=profile"
        ),
        ["emile.abel", "zoe.abel"],
    ),
    (
        (
            "profile=Student&profile=Relative&class={cp}&class={cm1}&activation=inactive&email=with"
            "&local_admin=exclude&created_since=2025-09-01&created_before=2025-09-01&sort=class&then=profile"
        ),
        ["marie.abel"],
    ),
    # Unknown-but-harmless empty values are the defaults.
    ("profile=&class=&activation=&email=&local_admin=&created_before=&created_since=&sort=&then=", ALL_A),
]


@pytest.fixture
def matrix(app_ctx: Flask) -> MatrixSchool:
    return build_matrix_school()


def select(app: Flask, query: str, role: str = "adml_a", extra: tuple[str, ...] = ("page", "template")) -> Selection:
    with app.test_request_context(f"/?{query}", headers={"X-Test-User": role}):
        return current_selection(extra)


def logins(selection: Selection, batch_size: int = 3) -> list[str]:
    return [r.login for r in iter_recipients(selection, batch_size)]


@pytest.mark.parametrize("query, expected", MATRIX, ids=[q or "no-filter" for q, _ in MATRIX])
def test_matrix(app_ctx: Flask, matrix: MatrixSchool, query: str, expected: list[str]) -> None:
    selection = select(app_ctx, query.format(**matrix.class_ids))
    assert logins(selection) == expected
    counters = count(selection)
    recipients = list(iter_recipients(selection))
    assert counters.selected == len(expected)
    assert counters.without_email == sum(1 for r in recipients if not r.email)
    assert counters.not_activated == sum(1 for r in recipients if not r.activated)


def test_super_admin_sees_the_territory_local_admins_their_school(app_ctx: Flask, matrix: MatrixSchool) -> None:
    assert "root.admin" not in logins(select(app_ctx, ""))
    assert "bob.b" not in logins(select(app_ctx, ""))
    everything = logins(select(app_ctx, "", role="super"))
    assert sorted(everything) == sorted([*ALL_A, "root.admin", "bob.b"])
    assert logins(select(app_ctx, "", role="adml_b")) == ["bob.b"]
    # Even asked for by login-level filters, the super admin stays hidden.
    assert "root.admin" not in logins(select(app_ctx, "profile=Personnel&email=with"))
    assert "root.admin" in logins(select(app_ctx, "profile=Personnel&email=with", role="super"))


def test_super_admin_class_sort_spans_schools(app_ctx: Flask, matrix: MatrixSchool) -> None:
    ordered = logins(select(app_ctx, "sort=class&profile=Student", role="super"))
    # Two CP first; folded, "cp de l'ecole b" sorts before "cp de mme emery".
    assert ordered == [
        "bob.b", "emile.abel", "zoe.abel", "elodie.abel", "lucas.etienne", "lea.abel", "elodie.zidane",
        "nina.sansclasse",
    ]


def test_recipient_details(app_ctx: Flask, matrix: MatrixSchool) -> None:
    by_login = {r.login: r for r in iter_recipients(select(app_ctx, ""))}
    marie = by_login["marie.abel"]
    assert [(c.full_name, c.classes) for c in marie.children] == [
        ("Zoé Abel", ("CP de Mme Émery",)),
        ("Élodie Zidane", ("CM1 de M. Zola",)),
    ]
    assert [c.parent_of for c in marie.children] == ["Parent de Zoé Abel", "Parent d'Élodie Zidane"]
    assert by_login["hugo.sansclasse"].children[0].classes == ()
    anne = by_login["anne.prof"]
    assert anne.classes == ("CP de Mme Émery", "CM1 de M. Zola")
    assert anne.activated and anne.activation_code is None and anne.local_admin
    zoe = by_login["zoe.abel"]
    assert zoe.activation_code == "CODE-zoe.abel" and not zoe.activated
    # Created 2025-08-31 22:30 UTC: 1 September in Paris, as the filter counts it.
    assert zoe.created_on.isoformat() == "2025-09-01"
    assert by_login["lucas.etienne"].created_on.isoformat() == "2025-08-31"
    assert by_login["nina.sansclasse"].classes == ()


def test_groups(app_ctx: Flask, matrix: MatrixSchool) -> None:
    by_class = [(r.login, r.group) for r in iter_recipients(select(app_ctx, "sort=class&profile=Relative"))]
    assert by_class == [
        ("marie.abel", "CP de Mme Émery"),
        ("paul.etienne", "CE2 de Mme Élise"),
        ("hugo.sansclasse", "Sans classe"),
    ]
    by_profile = {r.login: r.group for r in iter_recipients(select(app_ctx, "sort=profile"))}
    assert by_profile["anne.prof"] == "Enseignants"
    assert by_profile["marie.abel"] == "Parents"
    assert {r.group for r in iter_recipients(select(app_ctx, ""))} == {""}


def test_child_in_another_school_is_not_named(app_ctx: Flask, matrix: MatrixSchool) -> None:
    from .hosts import db

    marie = matrix.logins["marie.abel"]
    marie.enfants.append(matrix.logins["bob.b"])
    db.session.commit()
    marie_a = next(r for r in iter_recipients(select(app_ctx, "profile=Relative")) if r.login == "marie.abel")
    assert [c.first_name for c in marie_a.children] == ["Zoé", "Élodie"]
    # ... and a class of school B does not put her in school A's class sort.
    assert logins(select(app_ctx, "sort=class&profile=Relative")) == [
        "marie.abel", "paul.etienne", "hugo.sansclasse",
    ]


def test_round_trip_of_to_args(app_ctx: Flask, matrix: MatrixSchool) -> None:
    for query, _expected in MATRIX:
        selection = select(app_ctx, query.format(**matrix.class_ids))
        again = select(app_ctx, "&".join(f"{k}={v}" for k, v in selection.to_args().items(multi=True)))
        assert again == selection
        assert logins(again) == logins(selection)


def test_sql_only_no_n_plus_one(app_ctx: Flask, matrix: MatrixSchool) -> None:
    """Statements per batch do not grow with the number of accounts."""
    import sqlalchemy as sa

    from .hosts import db

    statements: list[Any] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        selection = select(app_ctx, "sort=class&then=profile")
        recipients = list(iter_recipients(selection, 100))
        one_batch = list(statements)
        statements.clear()
        in_batches = list(iter_recipients(selection, 3))
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)
    assert len(recipients) == len(in_batches) == len(ALL_A)
    # The accounts, their classes, their children, the children's classes, the
    # classes' sort keys.
    assert len(one_batch) <= 5, one_batch
    # A class's key is asked for once, in the first batch that meets the class.
    batches = -(-len(ALL_A) // 3)
    keys = [s for s in statements if "pp_class_keys" not in s and ("school_order" in s or "regexp_match" in s)]
    assert len(statements) <= 1 + 4 * batches + len(keys) and 1 <= len(keys) <= 3, statements
