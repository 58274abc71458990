"""French name order, the same on SQLite and on PostgreSQL whatever its collation.

The names tell the candidate orders apart: a database that ignores spaces (the
``fr_FR`` collations) puts "Leblanc" before "Le Gall"; a fold that keeps "ß" puts
"Weiß" after "Weisz"; ties broken by the row id put "Élodie" (added first) before
"Elodie", and "paul.martin2" before "paul.martin1".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, current_app

from flask_publipostage.selection import Selection
from flask_publipostage.sql import name_sort_key

from .conftest import RoleClient
from .hosts import Personne, add_person, db
from .test_preview import PREVIEW, _links, csv_rows, preview_logins

#: (login, first name, last name), added in this order (row ids follow it).
PEOPLE = [
    ("elodie.accent", "Élodie", "Martin"),
    ("paul.martin2", "Paul", "Martin"),
    ("weiss.eszett", "Hans", "Weiß"),
    ("lebrun", "Anne", "Lebrun"),
    ("le.roy", "Anne", "Le Roy"),
    ("leblanc", "Anne", "Leblanc"),
    ("le.gall", "Anne", "Le Gall"),
    ("weisz", "Hans", "Weisz"),
    ("paul.martin1", "Paul", "Martin"),
    ("elodie.plain", "Elodie", "Martin"),
    ("oscar", "Ola", "Oscar"),
    ("weiss.plain", "Hans", "Weiss"),
]

#: Folded last names byte by byte (the space first), then first names, then as
#: written ("E" before "É", "ss" before "ß"), then the login.
FRENCH_ORDER = [
    "le.gall", "le.roy", "leblanc", "lebrun",
    "elodie.plain", "elodie.accent", "paul.martin1", "paul.martin2",
    "oscar",
    "weiss.plain", "weiss.eszett", "weisz",
]

#: Where the columns sort as the French collation does (spaces ignored).
FR_COLLATION_ORDER = ["Leblanc", "Lebrun", "Le Gall", "Le Roy"]


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"PUBLIPOSTAGE_PAGE_SIZE": 3, "PUBLIPOSTAGE_BATCH_SIZE": 2}


@pytest.fixture
def keyset_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_publipostage import views

    monkeypatch.setattr(views, "KEYSET_FROM", 0)


@pytest.fixture
def people(app_ctx: Flask) -> Iterator[str]:
    """The accounts of :data:`PEOPLE` in school A; on PostgreSQL, their name and
    login columns in a French collation. Yields the collation used ("" if none)."""
    collation = _french_columns()
    for login, first, last in PEOPLE:
        add_person(login, first, last, "ELEVE")
        db.session.commit()
    if collation:
        # The columns really sort the French way: the test means something.
        stmt = sa.select(Personne.nom_famille).where(Personne.nom_famille.like("Le%")).order_by(Personne.nom_famille)
        assert list(db.session.execute(stmt).scalars()) == FR_COLLATION_ORDER
    yield collation


def _french_columns() -> str:
    """On PostgreSQL with ICU, give the name and login columns a French collation
    that ignores spaces (as glibc's ``fr_FR`` does)."""
    if db.engine.dialect.name != "postgresql":
        return ""
    offered = db.session.execute(
        sa.text("SELECT count(*) FROM pg_collation WHERE collname ILIKE 'fr%' AND collprovider = 'i'")
    ).scalar_one()
    if not offered:
        return ""
    db.session.execute(
        sa.text("CREATE COLLATION IF NOT EXISTS pp_fr_shifted (provider = icu, locale = 'fr-FR-u-ka-shifted')")
    )
    for column, length in (("nom_famille", 200), ("prenom_usuel", 200), ("identifiant", 80)):
        db.session.execute(
            sa.text(f"ALTER TABLE personne ALTER COLUMN {column} TYPE varchar({length}) COLLATE pp_fr_shifted")
        )
    db.session.commit()
    return "pp_fr_shifted"


def test_python_key_is_the_french_order() -> None:
    by_login = {login: (last, first) for login, first, last in PEOPLE}
    assert sorted(by_login, key=lambda login: name_sort_key(*by_login[login], login)) == FRENCH_ORDER


def test_page_csv_and_run_give_the_french_order(client: RoleClient, people: str) -> None:
    assert preview_logins(client, "") == FRENCH_ORDER
    assert [row[3] for row in csv_rows(client, "")[1:]] == FRENCH_ORDER
    # The order a run freezes: the same keys, numbered.
    with current_app.test_request_context("/", headers={"X-Test-User": "adml_a"}):
        from flask_publipostage.views import current_selection

        selection = current_selection(())
    frozen = db.session.execute(selection.numbered(current_app.extensions["publipostage"].host)).all()
    logins = dict(db.session.execute(sa.select(sa.cast(Personne.uid, sa.String), Personne.identifiant)).all())
    assert [logins[r.user_id] for r in sorted(frozen, key=lambda r: r.position)] == FRENCH_ORDER


def test_keyset_pages_walk_the_ties(client: RoleClient, people: str, keyset_everywhere: None) -> None:
    """"Suivante" and "Précédente" cross the ties (same folded name) page by page."""
    forward: list[str] = []
    url = PREVIEW
    while True:
        body = client.get(url, "adml_a").data.decode()
        forward += re.findall(r'data-login="([^"]+)"', body)
        links = _links(body)
        if "Suivante" not in links:
            break
        assert "after=" in links["Suivante"]
        url = links["Suivante"]
    assert forward == FRENCH_ORDER
    body = client.get(f"{PREVIEW}?page=5&last=1", "adml_a").data.decode()
    backward = [re.findall(r'data-login="([^"]+)"', body)]
    while "Précédente" in _links(body):
        body = client.get(_links(body)["Précédente"], "adml_a").data.decode()
        backward.insert(0, re.findall(r'data-login="([^"]+)"', body))
    assert [login for page in backward for login in page] == FRENCH_ORDER


def test_sort_keys_compare_bytewise_whatever_the_collation(app_ctx: Flask) -> None:
    """Each text key of the order is compared in the "C" collation on PostgreSQL
    (byte by byte), BINARY on SQLite: a column's collation changes nothing."""
    from sqlalchemy.dialects import postgresql, sqlite

    host = current_app.extensions["publipostage"].host
    stmt = Selection().statement(host)
    pg_sql = str(stmt.compile(dialect=postgresql.dialect()))
    order_by = pg_sql[pg_sql.index("ORDER BY"):]
    assert order_by.count('COLLATE "C"') >= 5
    lite = str(stmt.compile(dialect=sqlite.dialect()))
    assert lite[lite.index("ORDER BY"):].count("COLLATE BINARY") >= 5
