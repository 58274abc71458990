"""Classes in school order: the filter form's list, a person's classes, the class
sort of the preview and the CSV, and the PDF's bundles follow the levels (TPS …
CM2, 6e … 3e, 2de … Tle), then the other names; the host may give its own order."""

from __future__ import annotations

import csv
import html
import io
import random
import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import MappingError
from flask_publipostage.class_order import LEVELS, host_rank, rank_text, school_order_text

from .conftest import RoleClient
from .hosts import FIELDS, Division, add_person, db, make_app
from .test_pdf_support import pages_text, post_pdf

PAGE = "/imports-exports/publipostage/"
PREVIEW = PAGE + "preview"
CSV = PAGE + "export.csv"

#: Class names of each kind of school, in the order a school expects them.
PRIMARY = [
    "TPS", "Toute petite section B", "Petite section", "PS de Mme D'Almeida", "PS-MS", "Moyenne Section",
    "Grande Section", "GS-CP", "CP 2", "CP 10", "CP-CE1", "CE1 de Mme Dubois", "CE 2", "CM1 2", "CM1 10",
    "CM1-CM2", "CM2", "Atelier théâtre", "CLIS", "ULIS école",
]
COLLEGE = [
    "6ème A", "6e B", "6EME C", "Sixième D", "6e SEGPA", "5e1", "5e2", "5e10", "4°A", "4°B", "Quatrième C",
    "3e A", "3ème Prépa-métiers", "ULIS", "UPE2A",
]
LYCEE = [
    "Seconde 1", "2nde 2", "2de 10", "Première", "1ère G1", "1ère S", "1re STMG", "Terminale G1", "Tle STMG",
    "BTS SIO",
]


def _shuffled(names: list[str], seed: int = 11) -> list[str]:
    mixed = list(names)
    random.Random(seed).shuffle(mixed)
    return mixed


def _add_classes(names: list[str], school: str = "A", ranks: dict[str, int | None] | None = None) -> dict[str, Division]:
    divisions = {n: Division(libelle=n, ecole=school, rang=(ranks or {}).get(n)) for n in names}
    db.session.add_all(divisions.values())
    db.session.commit()
    return divisions


def _form_classes(client: RoleClient, role: str = "adml_a") -> list[str]:
    """The class list of the filter form, in the page's order."""
    page = client.get(PAGE, role).get_data(as_text=True)
    listing = page[page.index('id="pp-class-list"') :]
    listing = listing[: listing.index("</div>")]
    return [html.unescape(name) for name in re.findall(r'data-name="([^"]*)"', listing)]


def _groups(body: str) -> list[str]:
    """The group headers of the preview, in order."""
    return [html.unescape(g) for g in re.findall(r'<tr class="pp-group"><td colspan="\d+"><strong>(.*?)</strong>', body)]


def _logins(body: str) -> list[str]:
    return re.findall(r'<tr data-login="([^"]+)">', body)


# -- the rule, the same on SQLite and PostgreSQL ------------------------------------------------


@pytest.mark.parametrize("names", [PRIMARY, COLLEGE, LYCEE], ids=["ecole", "college", "lycee"])
def test_the_filter_form_lists_classes_in_school_order(client: RoleClient, app_ctx: Flask, names: list[str]) -> None:
    _add_classes(_shuffled(names))
    assert _form_classes(client) == names


def test_levels_of_the_three_kinds_of_school_in_one_list(client: RoleClient, app_ctx: Flask) -> None:
    """A territory holds them all: the levels first, the other names after, in
    alphabetical order."""
    _add_classes(_shuffled([*PRIMARY, *COLLEGE, *LYCEE], seed=3))
    levels = [n for n in [*PRIMARY, *COLLEGE, *LYCEE] if school_order_text(n)[:2] != "17"]
    others = ["Atelier théâtre", "BTS SIO", "CLIS", "ULIS", "ULIS école", "UPE2A"]
    assert _form_classes(client) == levels + others


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("6ème B", "6e"), ("6e2", "6e"), ("6EME", "6e"), ("6°A", "6e"), ("Sixième", "6e"), ("5e", "5e"),
        ("4ème", "4e"), ("3e", "3e"), ("CM1-CM2", "CM1"), ("CE2/CM1", "CE2"), ("Petite section", "PS"),
        ("Grande Section", "GS"), ("très petite section", "TPS"), ("Seconde", "2de"), ("2nde A", "2de"),
        ("Première", "1re"), ("1ère S", "1re"), ("1ES", "1re"), ("Terminale", "Tle"), ("Tle S", "Tle"),
        ("CE 1", "CE1"), ("cp", "CP"), ("ULIS", None), ("CPA", None), ("62", None), ("Psychologie", None),
    ],
)
def test_spellings_of_a_level(name: str, level: str | None) -> None:
    rank = int(school_order_text(name)[:2])
    assert (LEVELS[rank - 1][0] if rank <= len(LEVELS) else None) == level


def _spellings(count: int) -> list[str]:
    """Every level's usual spellings with sections, and random names of the
    characters that matter (digits, separators, accents, °)."""
    heads = [
        "TPS", "tps", "Toute petite section", "très petite section", "PS", "Petite section", "petite-section", "MS",
        "Moyenne section", "GS", "Grande Section", "CP", "cp", "CE1", "CE 1", "ce-2", "CM1", "cm 2", "6", "6e",
        "6ème", "6EME", "6eme", "6ieme", "6em", "6°", "6 e", "Sixième", "5e", "Cinquième", "4e", "Quatrième", "3e",
        "Troisième", "2de", "2nde", "2nd", "2e", "2eme", "Seconde", "1re", "1ère", "1ere", "1er", "1e", "Première",
        "Tle", "Terminale", "Term", "Tale", "ULIS", "CLIS", "Œuvre", "Ægée", "",
    ]
    tails = ["", " A", "B", "2", " 10", "-CM2", "/CE1", " de Mme Dubois", " 007", "S", "ES", " STMG", "°A", " G1", "e"]
    names = [h + t for h in heads for t in tails]
    rng = random.Random(7)
    alphabet = "0123456789 -_./,:;°abcdeéèêgimnprstuACEMPST1IÉÈŒœÆß'"
    names += ["".join(rng.choices(alphabet, k=rng.randint(1, 14))) for _ in range(count)]
    names += ["x" * 120, "CM1 " + "9" * 40, "  CP", "6e" + " " * 5 + "A"]
    return names


def test_sql_and_python_keys_agree_on_many_names(app_ctx: Flask) -> None:
    """SQLite calls the Python rule; PostgreSQL has its own SQL: same key for every
    name, ending with the class's id."""
    names = _spellings(3000)
    db.session.execute(sa.insert(Division), [{"libelle": n, "ecole": "A"} for n in names])
    db.session.commit()
    host = app_ctx.extensions["publipostage"].host
    rows = db.session.execute(sa.select(Division.ref, Division.libelle, host.class_sort_key())).all()
    assert len(rows) == len(names)
    wrong = [(name, key, school_order_text(name) + str(ref)) for ref, name, key in rows if key != school_order_text(name) + str(ref)]
    assert wrong == []
    ordered = db.session.execute(sa.select(Division.ref).order_by(host.class_sort_key())).scalars().all()
    assert ordered == [ref for ref, _n, key in sorted(rows, key=lambda r: r[2])]


def test_sql_and_python_ranks_agree(app_ctx: Flask) -> None:
    values = [None, 0, 1, 7, 9, 10, 99, 100, 12345, 2**31 - 1, 2**62, -1, -7, -9, -10, -11, -99, -100, -(2**62)]
    got = [db.session.execute(sa.select(host_rank(sa.literal(v, sa.BigInteger)))).scalar_one() for v in values]
    assert got == [rank_text(v) for v in values]
    numbers = sorted(v for v in values if v is not None)
    assert sorted(rank_text(v) for v in values) == [rank_text(v) for v in numbers] + [rank_text(None)]


# -- what the admin sees ----------------------------------------------------------------------------


def _primary_school() -> dict[str, Any]:
    """Pupils in five classes, a teacher of CE1 and CP, a parent of pupils in CM2 B and GS."""
    classes = _add_classes(["CM2 B", "CLIS", "CE1", "CP", "GS", "CM2 A"])
    people = {}
    for login, last, name in [
        ("p.cm2b", "Arnaud", "CM2 B"), ("p.clis", "Bailly", "CLIS"), ("p.ce1", "Carré", "CE1"),
        ("p.cp", "Denis", "CP"), ("p.gs", "Étienne", "GS"), ("p.cm2a", "Faure", "CM2 A"),
    ]:
        people[login] = add_person(login, "Élève", last, "ELEVE", divisions=[classes[name]])
    add_person("t.ce1cp", "Anne", "Zola", "PROF", divisions=[classes["CE1"], classes["CP"]])
    add_person("r.parent", "Marc", "Arnaud", "PARENT", enfants=[people["p.cm2b"], people["p.gs"]])
    add_person("n.none", "Nina", "Sansclasse", "ELEVE")
    db.session.commit()
    return classes


def test_preview_and_csv_sorted_by_class(client: RoleClient, app_ctx: Flask) -> None:
    _primary_school()
    body = client.get(f"{PREVIEW}?sort=class", "adml_a").get_data(as_text=True)
    assert _groups(body) == ["GS", "CP", "CE1", "CM2 A", "CM2 B", "CLIS", "Sans classe"]
    expected = ["r.parent", "p.gs", "p.cp", "t.ce1cp", "p.ce1", "p.cm2a", "p.cm2b", "p.clis", "n.none"]
    assert _logins(body) == expected
    # A person's classes in the same order: the teacher's, and each parent's child's.
    row = body[body.index('<tr data-login="t.ce1cp">') :]
    assert "CP, CE1" in row[: row.index("</tr>")]

    exported = client.get(f"{CSV}?sort=class", "adml_a").data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(exported), delimiter=";"))[1:]
    assert [r[3] for r in rows] == expected
    assert {r[3]: r[6] for r in rows}["t.ce1cp"] == "CP, CE1"


def test_a_teacher_is_sorted_under_their_first_class_in_school_order(client: RoleClient, app_ctx: Flask) -> None:
    _primary_school()
    body = client.get(f"{PREVIEW}?sort=class&profile=Teacher", "adml_a").get_data(as_text=True)
    assert _groups(body) == ["CP"]  # alphabetically, CE1 would come first


def test_same_name_classes_of_two_schools_are_two_bundles(client: RoleClient, app_ctx: Flask) -> None:
    """Two "CE1" of a territory share a name, not a key: each its own bundle."""
    ce1_a = _add_classes(["CE1"], school="A")["CE1"]
    ce1_b = _add_classes(["CE1"], school="B")["CE1"]
    for i in range(2):
        add_person(f"a.{i}", "Élève", f"Alpha{i}", "ELEVE", school="A", divisions=[ce1_a])
    for i in range(3):
        add_person(f"b.{i}", "Élève", f"Beta{i}", "ELEVE", school="B", divisions=[ce1_b])
    db.session.commit()
    response = post_pdf(client, "sort=class", role="super", template="cards")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    texts = pages_text(response.data)
    assert len(texts) == 2  # one sheet per bundle, not one of five cards
    first, second = ("a", 2, texts[0]), ("b", 3, texts[1])
    if "b.0" in texts[0]:
        first, second = ("b", 3, texts[0]), ("a", 2, texts[1])
    for prefix, size, text in (first, second):
        assert "CE1" in text and f"{size} comptes" in text
        assert sorted(set(re.findall(r"\b[ab]\.\d\b", text))) == [f"{prefix}.{i}" for i in range(size)]


# -- the host's own order -------------------------------------------------------------------------

RANKS = {"Verts": 1, "CP": 2, "Bleus": 2, "Jaunes": -3, "Rouges": None, "CE1": None}


@pytest.mark.parametrize("app_config", [{"fields": {**FIELDS, "class_order": "rang"}}])
def test_a_rank_column_of_the_host_comes_first(client: RoleClient, app_ctx: Flask) -> None:
    """Lower ranks first, equal ranks in school order, classes without a rank last."""
    _add_classes(list(RANKS), ranks=RANKS)
    assert _form_classes(client) == ["Jaunes", "Verts", "CP", "Bleus", "CE1", "Rouges"]


@pytest.mark.parametrize(
    "app_config",
    [{"fields": {**FIELDS, "class_order": sa.case((Division.libelle.like("%Dubois%"), 0), else_=1)}}],
)
def test_an_expression_of_the_host_comes_first(client: RoleClient, app_ctx: Flask) -> None:
    classes = _add_classes(["CP", "CE2 de M. Dubois", "CE1"])
    add_person("p.cp", "Élève", "Alpha", "ELEVE", divisions=[classes["CP"]])
    add_person("p.ce2", "Élève", "Beta", "ELEVE", divisions=[classes["CE2 de M. Dubois"]])
    add_person("t.both", "Anne", "Zola", "PROF", divisions=[classes["CP"], classes["CE2 de M. Dubois"]])
    db.session.commit()
    assert _form_classes(client) == ["CE2 de M. Dubois", "CP", "CE1"]
    body = client.get(f"{PREVIEW}?sort=class", "adml_a").get_data(as_text=True)
    assert _groups(body) == ["CE2 de M. Dubois", "CP"]
    assert _logins(body) == ["p.ce2", "t.both", "p.cp"]


@pytest.mark.parametrize("app_config", [{"fields": {**FIELDS, "class_order": Division.ecole}}])
def test_a_text_of_the_host_orders_byte_by_byte(client: RoleClient, app_ctx: Flask) -> None:
    """A text (here the school's code) then the school order inside it."""
    _add_classes(["CE1", "CP"], school="B")
    _add_classes(["CM1", "GS"], school="A")
    assert _form_classes(client, "super") == ["GS", "CM1", "CP", "CE1"]


@pytest.mark.parametrize(
    ("order", "message"),
    [("no_such_column", "no attribute"), (Division.rang > 2, "an integer or a text")],
)
def test_a_class_order_of_another_kind_fails_at_init(tmp_path: Any, database_url: str, order: Any, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        make_app(database_url, str(tmp_path), fields={**FIELDS, "class_order": order})


def test_the_class_sort_stays_in_the_compiled_cache(app_ctx: Flask) -> None:
    """Every piece of the class sort has a cache key: compiling it costs ~7 ms,
    twice per page otherwise."""
    from flask_publipostage.selection import Selection

    from .test_selection_matrix import select

    cp = _add_classes(["CP"])["CP"]
    for query in ("sort=class", f"sort=profile&then=class&class={cp.ref}"):
        selection = select(app_ctx, query)
        host = app_ctx.extensions["publipostage"].host
        assert isinstance(selection, Selection)
        assert selection.statement(host)._generate_cache_key() is not None
        assert selection.numbered(host)._generate_cache_key() is not None
