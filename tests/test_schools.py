"""The school dimension: a territory's schools told apart, each account under its own school.

The test host maps its schools (``make_app(schools=True)``): two schools, each with a
class named "CE1". A super admin sees both; school A's local admin sees only A.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from flask import Flask
from werkzeug.datastructures import MultiDict

from flask_publipostage.access import current_scope
from flask_publipostage.host import HostModels, MappingError
from flask_publipostage.selection import Selection
from flask_publipostage.state import state

from .conftest import RoleClient
from .hosts import FIELDS, SCHOOL_FIELDS, Division, Ecole, Personne, add_person, db
from .runs import stop_active_runs
from .smtp import SmtpServer
from .test_pdf_support import URL, pages_text, post_pdf

PREVIEW = URL + "/preview.json"
FERRY, CURIE = "École Jules Ferry", "École Marie Curie"


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {"schools": True, "PUBLIPOSTAGE_SCHOOL_NAME": "Académie de Test", **smtp.config()}


@pytest.fixture(autouse=True)
def stop_campaigns(app: Flask) -> Iterator[None]:
    yield
    with app.app_context():
        stop_active_runs()


@pytest.fixture
def territory(app_ctx: Flask) -> dict[str, Division]:
    db.session.add_all([Ecole(code="A", appellation=FERRY), Ecole(code="B", appellation=CURIE)])
    classes = {
        "ce1_a": Division(libelle="CE1", ecole="A"),
        "cp_a": Division(libelle="CP de Mme Dumas", ecole="A"),
        "ce1_b": Division(libelle="CE1", ecole="B"),
        "cm2_b": Division(libelle="CM2", ecole="B"),
    }
    db.session.add_all(classes.values())
    lea = add_person("lea.a", "Léa", "Arnaud", "ELEVE", divisions=[classes["ce1_a"]])
    add_person("tom.a", "Tom", "Brun", "ELEVE", divisions=[classes["cp_a"]])
    add_person("ana.a", "Ana", "Petit", "PARENT", email="ana@example.org", enfants=[lea])
    max_b = add_person("max.b", "Max", "Caron", "ELEVE", school="B", divisions=[classes["ce1_b"]])
    add_person("zoe.b", "Zoé", "Dubois", "ELEVE", school="B", divisions=[classes["cm2_b"]])
    add_person("luc.b", "Luc", "Caron", "PARENT", school="B", email="luc@example.org", enfants=[max_b])
    add_person("sans.ecole", "Sacha", "Nomade", "PERS", school=None)
    db.session.commit()
    return classes


def accounts(client: RoleClient, query: str, role: str = "super") -> list[dict[str, Any]]:
    response = client.get(f"{PREVIEW}?{query}", role)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_json()["accounts"]  # type: ignore[no-any-return]


def logins(client: RoleClient, query: str, role: str = "super") -> list[str]:
    return [a["login"] for a in accounts(client, query, role)]


def page(client: RoleClient, query: str = "", role: str = "super") -> str:
    response = client.get(f"{URL}/?{query}", role)
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


# -- the filter --------------------------------------------------------------------------


def test_the_school_filter_keeps_the_accounts_of_the_chosen_schools(client: RoleClient, territory: Any) -> None:
    assert logins(client, "school=B") == ["luc.b", "max.b", "zoe.b"]
    assert logins(client, "school=A&school=B&profile=Student") == ["lea.a", "tom.a", "max.b", "zoe.b"]
    # With the other filters, and school A's admin may name their own school.
    assert logins(client, "school=A&profile=Relative", "adml_a") == ["ana.a"]


def test_a_school_outside_the_perimeter_is_refused_like_a_missing_one(client: RoleClient, territory: Any) -> None:
    foreign = client.get(f"{URL}/?school=B", "adml_a")
    missing = client.get(f"{URL}/?school=ZZZ", "adml_a")
    assert foreign.status_code == missing.status_code == 403
    message = "Un des établissements choisis est hors de votre périmètre."
    assert message in html.unescape(foreign.get_data(as_text=True))
    assert message in html.unescape(missing.get_data(as_text=True))
    # Every output refuses it the same way, and nothing is generated.
    assert post_pdf(client, "school=B").status_code == 403
    assert client.get(f"{URL}/export.csv?school=B", "adml_a").status_code == 403
    assert client.get(f"{URL}/?school=" + "x" * 80, "super").status_code == 400


def test_the_form_offers_the_schools_of_a_territory_only(client: RoleClient, territory: Any) -> None:
    territory_page = page(client)
    assert "Établissements" in territory_page
    assert f'data-name="{FERRY}"' in territory_page and f'data-name="{CURIE}"' in territory_page
    assert '<option value="school"' in territory_page  # "Par établissement"
    school_page = page(client, role="adml_a")
    assert 'name="school"' not in school_page and '<option value="school"' not in school_page


# -- columns and labels --------------------------------------------------------------------


def test_a_territory_sees_each_accounts_school_and_qualified_class_names(client: RoleClient, territory: Any) -> None:
    found = {a["login"]: a for a in accounts(client, "")}
    assert found["max.b"]["school"] == CURIE and found["lea.a"]["school"] == FERRY
    assert found["max.b"]["classes"] == [f"CE1 ({CURIE})"]
    assert found["zoe.b"]["classes"] == ["CM2"]  # one school only has a CM2
    assert found["ana.a"]["children"][0]["classes"] == [f"CE1 ({FERRY})"]
    body = page(client)
    assert "<th scope=\"col\">Établissement</th>" in body
    assert f'data-name="CE1 ({FERRY})"' in body and f'data-name="CE1 ({CURIE})"' in body
    # Within one school, names are plain and the column is gone.
    local = {a["login"]: a for a in accounts(client, "", "adml_a")}
    assert local["lea.a"]["classes"] == ["CE1"]
    assert "<th scope=\"col\">Établissement</th>" not in page(client, role="adml_a")
    # A territory admin who chose one school sees plain names too.
    assert {a["login"]: a["classes"] for a in accounts(client, "school=B")}["max.b"] == ["CE1"]


def test_the_csv_has_a_school_column_for_a_territory(client: RoleClient, territory: Any) -> None:
    def read(role: str) -> list[list[str]]:
        response = client.get(f"{URL}/export.csv", role)
        assert response.status_code == 200
        return list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff")), delimiter=";"))

    rows = read("super")
    assert rows[0][-1] == "Établissement"
    by_login = {r[3]: r for r in rows[1:]}
    assert by_login["max.b"][-1] == CURIE and by_login["max.b"][6] == f"CE1 ({CURIE})"
    assert by_login["sans.ecole"][-1] == ""
    assert "Établissement" not in read("adml_a")[0]


# -- sort and bundles ------------------------------------------------------------------------


def test_sort_by_school_groups_each_school(client: RoleClient, territory: Any) -> None:
    found = accounts(client, "sort=school")
    assert [a["login"] for a in found] == ["lea.a", "tom.a", "ana.a", "luc.b", "max.b", "zoe.b", "sans.ecole"]
    assert [a["group"] for a in found] == [FERRY] * 3 + [CURIE] * 3 + ["Sans établissement"]
    texts = pages_text(post_pdf(client, "sort=school&profile=Student", "super").data)
    assert [FERRY in t for t in texts] == [True, True, False, False]
    assert [CURIE in t for t in texts] == [False, False, True, True]


def test_bundles_go_school_then_class(client: RoleClient, territory: Any) -> None:
    """The two CE1 stay two bundles, each under its school, each starting a sheet,
    the classes in school order (CP before CE1)."""
    found = accounts(client, "sort=school&then=class&profile=Student&profile=Relative")
    assert [(a["login"], a["group"]) for a in found] == [
        ("tom.a", f"{FERRY} · CP de Mme Dumas"),
        ("lea.a", f"{FERRY} · CE1 ({FERRY})"),
        ("ana.a", f"{FERRY} · CE1 ({FERRY})"),
        ("luc.b", f"{CURIE} · CE1 ({CURIE})"),
        ("max.b", f"{CURIE} · CE1 ({CURIE})"),
        ("zoe.b", f"{CURIE} · CM2"),
    ]
    data = post_pdf(client, "sort=school&then=class&profile=Student", "super", template="cards").data
    sheets = pages_text(data)
    assert len(sheets) == 4  # one card sheet per class of each school
    assert [("tom.a" in t, "lea.a" in t, "max.b" in t, "zoe.b" in t) for t in sheets] == [
        (True, False, False, False), (False, True, False, False), (False, False, True, False), (False, False, False, True),
    ]
    assert f"CE1 ({CURIE})" in sheets[2] and CURIE in sheets[3]


# -- the account's own school on what it receives ----------------------------------------------


def test_letters_and_cards_name_the_accounts_own_school(client: RoleClient, territory: Any) -> None:
    texts = pages_text(post_pdf(client, "profile=Student", "super").data)
    by_login = {next(login for login in ("lea.a", "tom.a", "max.b", "zoe.b") if login in t): t for t in texts}
    assert FERRY in by_login["lea.a"] and CURIE not in by_login["lea.a"]
    assert CURIE in by_login["max.b"] and "Académie de Test" not in by_login["max.b"]
    # The local admin's own scope name gives way to the account's school too.
    (letter,) = pages_text(post_pdf(client, "profile=Relative", "adml_a").data)
    assert FERRY in letter and "École A" not in letter
    cards = " ".join(pages_text(post_pdf(client, "school=B&profile=Student", "super", template="cards").data))
    assert cards.count(CURIE) >= 2 and FERRY not in cards


def test_an_email_names_the_accounts_own_school(client: RoleClient, territory: Any, smtp: SmtpServer) -> None:
    response = client.post(f"{URL}/mail/send?profile=Relative", "super")
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    messages = {m.rcpt_tos[0]: m.parsed() for m in smtp.messages}
    assert set(messages) == {"ana@example.org", "luc@example.org"}
    luc = messages["luc@example.org"].get_body(("plain",)).get_content()
    ana = messages["ana@example.org"].get_body(("plain",)).get_content()
    assert CURIE in luc and FERRY not in luc and "Académie de Test" not in luc
    assert FERRY in ana and CURIE not in ana


def test_the_journal_names_the_chosen_schools(client: RoleClient, territory: Any) -> None:
    assert client.get(f"{URL}/export.csv?school=B", "super").status_code == 200
    journal = html.unescape(client.get(f"{URL}/journal", "super").get_data(as_text=True))
    assert CURIE in journal


# -- the mapping ----------------------------------------------------------------------------------


def test_the_school_fields_need_the_school_model() -> None:
    with pytest.raises(MappingError, match="school model"):
        HostModels(Personne, Division, {**FIELDS, **SCHOOL_FIELDS})
    with pytest.raises(MappingError, match="lacks"):
        HostModels(Personne, Division, {**FIELDS, "school": "ecole"}, school_model=Ecole)
    with pytest.raises(MappingError, match="Ecole has no attribute 'nom'"):
        HostModels(Personne, Division, {**FIELDS, **SCHOOL_FIELDS, "school_name": "nom"}, school_model=Ecole)
    with pytest.raises(MappingError, match="many-to-one"):
        HostModels(Personne, Division, {**FIELDS, **SCHOOL_FIELDS, "school": "divisions"}, school_model=Ecole)


def test_a_territory_zip_names_each_file_with_its_school(client: RoleClient, territory: Any) -> None:
    import io
    import zipfile

    response = post_pdf(client, "sort=class&profile=Student", "super", zip="y")
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    job = response.headers["Location"].rsplit("/", 1)[-1]
    status = client.get(f"{URL}/pdf/jobs/{job}/status", "super").get_json()
    assert status["state"] == "done", status
    archive = zipfile.ZipFile(io.BytesIO(client.get(status["download_url"], "super").data))
    assert sorted(archive.namelist()) == sorted([
        f"CE1 ({FERRY}).pdf", f"CE1 ({CURIE}).pdf", f"CM2 ({CURIE}).pdf", f"CP de Mme Dumas ({FERRY}).pdf",
    ])
    assert "max.b" in pages_text(archive.read(f"CE1 ({CURIE}).pdf"))[0]
    # One school: the class names alone.
    response = post_pdf(client, "sort=class&profile=Student&school=B", "super", zip="y")
    job = response.headers["Location"].rsplit("/", 1)[-1]
    status = client.get(f"{URL}/pdf/jobs/{job}/status", "super").get_json()
    archive = zipfile.ZipFile(io.BytesIO(client.get(status["download_url"], "super").data))
    assert sorted(archive.namelist()) == ["CE1.pdf", "CM2.pdf"]


# -- pages read by windows of classes or schools ------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["sort=school", "sort=school&then=class", "sort=class", "sort=class&then=school", "profile=Relative&sort=class"],
)
@pytest.mark.parametrize("role", ["super", "adml_a"])
def test_pages_read_by_windows_are_the_pages_read_in_one_go(
    app: Flask, territory: Any, monkeypatch: pytest.MonkeyPatch, query: str, role: str
) -> None:
    """A territory sorted by class or school reads a page a few classes (one school)
    at a time: from the start, next to an account either way, and from the end,
    the pages are those of the whole sorted list."""
    from flask_publipostage import recipients, selection

    with app.test_request_context(f"/?{query}", headers={"X-Test-User": role}):
        chosen = Selection.from_args(MultiDict(list(parse_qsl(query))), current_scope())
        whole = [r.login for r in recipients.page(chosen, 1, 100)]
        monkeypatch.setattr(selection, "MIN_WINDOW_CLASSES", 1)
        monkeypatch.setattr(selection, "MIN_WINDOW_SCHOOLS", 1)
        monkeypatch.setattr(recipients, "WINDOW", {"class": 1, "school": 1})
        assert chosen.first_ranks(state().host) is not None
        for size in (1, 2, 3):
            forward = recipients.page(chosen, 1, size)
            rows = list(forward)
            while forward:
                forward = recipients.page_next_to(chosen, rows[-1].id, size) or []
                rows += forward
            assert [r.login for r in rows] == whole, size
            backward = recipients.last_page(chosen, len(whole), size)
            rows = list(backward)
            while backward:
                backward = recipients.page_next_to(chosen, rows[0].id, size, before=True) or []
                rows = backward + rows
            assert [r.login for r in rows] == whole, size
