"""The page and its preview: same selection, same people, same order as every output."""

from __future__ import annotations

import csv
import html
import io
import re
from typing import Any

import pytest
from flask import Flask

from flask_publipostage.recipients import iter_recipients
from flask_publipostage.views import current_selection

from .conftest import RoleClient
from .school_matrix import MatrixSchool, build_matrix_school

PAGE = "/imports-exports/publipostage/"
PREVIEW = PAGE + "preview"
CSV = PAGE + "export.csv"

QUERIES = [
    "",
    "sort=class",
    "sort=class&then=profile",
    "sort=profile&then=class",
    "class={cp}&class={cm1}&sort=class",
    "profile=Relative&sort=class",
    "activation=inactive&email=without&sort=profile",
    "created_since=2025-09-01&created_before=2025-09-01",
    "profile=Guest&activation=active",
]


@pytest.fixture
def app_config() -> dict[str, Any]:
    # Small pages and batches: the walk crosses page and batch boundaries.
    return {"PUBLIPOSTAGE_PAGE_SIZE": 4, "PUBLIPOSTAGE_BATCH_SIZE": 3}


@pytest.fixture
def matrix(app_ctx: Flask) -> MatrixSchool:
    return build_matrix_school()


def preview_logins(client: RoleClient, query: str, role: str = "adml_a") -> list[str]:
    found: list[str] = []
    page = 1
    while True:
        response = client.get(f"{PREVIEW}?{query}&page={page}", role)
        assert response.status_code == 200
        body = response.data.decode()
        found += re.findall(r'data-login="([^"]+)"', body)
        if 'rel="next"' not in body:
            return found
        page += 1


def csv_rows(client: RoleClient, query: str, role: str = "adml_a") -> list[list[str]]:
    response = client.get(f"{CSV}?{query}", role)
    assert response.status_code == 200
    text = response.data.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:]), delimiter=";"))


@pytest.mark.parametrize("query", QUERIES, ids=[q or "no-filter" for q in QUERIES])
def test_preview_csv_and_outputs_agree(app_ctx: Flask, client: RoleClient, matrix: MatrixSchool, query: str) -> None:
    query = query.format(**matrix.class_ids)
    shown = preview_logins(client, query)
    exported = [row[3] for row in csv_rows(client, query)[1:]]
    with app_ctx.test_request_context(f"/?{query}", headers={"X-Test-User": "adml_a"}):
        printed = [r.login for r in iter_recipients(current_selection())]
    assert shown == exported == printed
    assert len(set(shown)) == len(shown)


def _links(body: str) -> dict[str, str]:
    found = {}
    for href, _rel, label in re.findall(r'<a href="([^"]+)"(?: rel="(\w+)")? class="pp-page-link">([^<]+)</a>', body):
        found[label] = html.unescape(href).replace("/imports-exports/publipostage/?", PREVIEW + "?")
    return found


@pytest.fixture
def keyset_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Page links use their cursor from page 2 on (normally only deep in big lists)."""
    from flask_publipostage import views

    monkeypatch.setattr(views, "KEYSET_FROM", 0)


@pytest.mark.parametrize("query", QUERIES, ids=[q or "no-filter" for q in QUERIES])
def test_keyset_pages_match_offset_pages(client: RoleClient, matrix: MatrixSchool, keyset_everywhere: None, query: str) -> None:
    """Following "Suivante" from the first page, or "Précédente" from the last,
    gives the same list as page numbers do."""
    query = query.format(**matrix.class_ids)
    expected = preview_logins(client, query)
    forward: list[str] = []
    url = f"{PREVIEW}?{query}"
    while True:
        body = client.get(url, "adml_a").data.decode()
        forward += re.findall(r'data-login="([^"]+)"', body)
        links = _links(body)
        if "Suivante" not in links:
            break
        assert "after=" in links["Suivante"] and "last=1" in links["Dernière"]
        url = links["Suivante"]
    assert forward == expected
    if len(expected) <= 4:
        return
    body = client.get(_links(client.get(f"{PREVIEW}?{query}", "adml_a").data.decode())["Dernière"], "adml_a").data.decode()
    backward = [re.findall(r'data-login="([^"]+)"', body)]
    while "Précédente" in _links(body):
        body = client.get(_links(body)["Précédente"], "adml_a").data.decode()
        backward.insert(0, re.findall(r'data-login="([^"]+)"', body))
    assert [login for page in backward for login in page] == expected


def test_cursor_of_an_account_gone_from_the_selection(client: RoleClient, matrix: MatrixSchool, keyset_everywhere: None) -> None:
    """The page number still answers when the account next to it left the list."""
    gone = matrix.logins["bob.b"].uid  # never in school A's lists
    body = client.get(f"{PREVIEW}?page=2&after={gone}", "adml_a").data.decode()
    assert re.findall(r'data-login="([^"]+)"', body) == ["zoe.abel", "claire.pers", "jean.prof", "sam.pers"]
    for bad in ("after=x", "after=1&before=2", "last=2", "after=1&after=2", "before=" + "9" * 30, "after=--5", "after=%C2%B2"):
        response = client.get(f"{PREVIEW}?page=2&{bad}", "adml_a")
        assert response.status_code == 400, bad
        assert "Numéro de page invalide" in response.data.decode()


def test_counters_cover_the_whole_selection(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(f"{PREVIEW}?page=2", "adml_a").data.decode()
    assert 'data-selected="16"' in body
    assert 'data-without-email="11"' in body
    assert 'data-not-activated="12"' in body
    assert len(re.findall(r"data-login=", body)) == 4
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))
    assert "16 comptes sélectionnés" in text
    assert "11 sans adresse électronique" in text
    assert "12 non activés" in text
    assert "Page 2 sur 4" in text
    assert "Comptes sélectionnés 5 à 8 sur 16" in text


def test_singular_counters(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(f"{PREVIEW}?local_admin=only&activation=inactive", "adml_a").data.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    assert "1 compte sélectionné" in text and "1 sans adresse électronique" in text and "1 non activé" in text


def test_columns(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(f"{PREVIEW}?profile=Relative&profile=Teacher&sort=profile", "adml_a").data.decode()
    headers = re.findall(r'<th scope="col">([^<]+)</th>', body)
    assert headers == [
        "Nom", "Prénom", "Profil", "Identifiant", "Code d&#39;activation", "Courriel",
        "Classe(s)", "Date de création", "Distribution",
    ]
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-login="([^"]+)">(.*?)</tr>', body, re.DOTALL)}
    marie = rows["marie.abel"]
    assert "Parent de Zoé Abel (CP de Mme Émery)" in marie
    assert "Parent d&#39;Élodie Zidane (CM1 de M. Zola)" in marie
    assert "CODE-marie.abel" in marie and "marie.abel@example.org" in marie
    assert "01/09/2025" in marie
    anne = rows["anne.prof"]
    assert "Compte activé" in anne and "CODE" not in anne
    assert "CP de Mme Émery, CM1 de M. Zola" in anne
    # Groups as the PDF will print them.
    assert re.findall(r'<tr class="pp-group"><td colspan="9"><strong>([^<]+)</strong>', body) == [
        "Enseignants", "Parents",
    ]


def test_date_column_is_the_paris_day(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(f"{PREVIEW}?profile=Student&created_before=2025-09-01&created_since=2025-08-31", "adml_a").data.decode()
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr data-login="([^"]+)">(.*?)</tr>', body, re.DOTALL)}
    assert "31/08/2025" in rows["lucas.etienne"]
    assert "01/09/2025" in rows["zoe.abel"]
    assert "01/09/2025" in rows["elodie.abel"]
    assert "01/09/2025" in rows["emile.abel"]


def test_page_without_javascript(client: RoleClient, matrix: MatrixSchool) -> None:
    """The form, its submit button and page links are plain GET: the URL is the state."""
    query = f"profile=Student&class={matrix.class_ids['cp']}&activation=inactive&sort=class"
    body = client.get(f"{PAGE}?{query}", "adml_a").data.decode()
    assert '<form id="pp-filters"' in body and 'method="get"' in body
    assert 'type="submit"' in body
    assert re.search(r'value="Student"\s+checked', body)
    assert re.search(rf'value="{matrix.class_ids["cp"]}"\s+checked', body)
    assert re.search(r'name="activation" value="inactive"\s+checked', body)
    assert '<option value="class" selected>' in body
    # "Puis par" cannot repeat "Par".
    assert re.search(r'<select id="pp-then" name="then">.*?<option value="class" *disabled>', body, re.DOTALL)
    assert re.findall(r'data-login="([^"]+)"', body) == ["emile.abel", "zoe.abel"]
    # Every control of the filters is labelled (axe checks the whole page).
    filters = body[body.index('<form id="pp-filters"'):body.index("</form>")]
    for control in re.findall(r"<(?:input|select)\b[^>]*>", filters):
        if 'type="hidden"' in control:
            continue
        ident = re.search(r'id="([^"]+)"', control)
        if ident:
            assert f'for="{ident.group(1)}"' in filters, control
        else:  # wrapped in its label
            assert re.search(r'<label class="pp-check"[^>]*><input[^>]*' + re.escape(control[6:40]), filters), control
    assert 'id="pp-results" data-preview-url="/imports-exports/publipostage/preview"' in body
    assert 'id="pp-announce"' in body
    assert 'src="/imports-exports/publipostage/assets/publipostage.js"' in body


def test_page_links_keep_the_filters(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(f"{PREVIEW}?profile=Student&sort=class&template=cards", "adml_a").data.decode()
    links = [html.unescape(h) for h in re.findall(r'href="([^"]+)" rel="next"', body)]
    lucas = matrix.logins["lucas.etienne"].uid
    assert links == [
        f"/imports-exports/publipostage/?profile=Student&sort=class&template=cards&page=2&after={lucas}"
    ]
    body = client.get(f"{PREVIEW}?profile=Student&sort=class&page=2", "adml_a").data.decode()
    assert re.findall(r'data-login="([^"]+)"', body) == ["lea.abel", "elodie.zidane", "nina.sansclasse"]


def test_empty_selection(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(f"{PREVIEW}?profile=Guest&activation=active", "adml_a").data.decode()
    assert "Aucun compte ne correspond à ces filtres." in body
    assert 'data-selected="0"' in body and "<table" not in body


def test_profiles_and_classes_offered_are_those_in_scope(client: RoleClient, matrix: MatrixSchool) -> None:
    body_b = client.get(PAGE, "adml_b").data.decode()
    assert re.findall(r'name="profile" value="([^"]+)"', body_b) == ["Student"]
    assert "CP de l&#39;école B" in body_b and "Mme Émery" not in body_b
    body_a = client.get(PAGE, "adml_a").data.decode()
    assert re.findall(r'name="profile" value="([^"]+)"', body_a) == [
        "Teacher", "Student", "Relative", "Personnel", "Guest",
    ]
    assert "école B" not in body_a
    # Classes in French order.
    assert re.findall(r'data-name="([^"]+)"', body_a) == ["CP de Mme Émery", "CE2 de Mme Élise", "CM1 de M. Zola"]


def test_advice_follows_the_profiles(client: RoleClient, matrix: MatrixSchool) -> None:
    body = client.get(PAGE, "adml_a").data.decode()
    assert "Conseils de distribution" in body
    rows = re.findall(r'<tr data-profile="([^"]+)"( hidden)?>', body)
    assert [r[0] for r in rows] == ["Teacher", "Student", "Personnel", "Relative", "Relative", "Relative", "Guest"]
    assert not any(hidden for _p, hidden in rows)
    for words in ("Transmis par", "Supports", "Modalités", "Référents ENT", "carnet de liaison",
                  "professeur principal", "réunion de pré-rentrée", "au cas par cas"):
        assert words in html.unescape(body), words
    body = client.get(f"{PAGE}?profile=Relative", "adml_a").data.decode()
    shown = [p for p, hidden in re.findall(r'<tr data-profile="([^"]+)"( hidden)?>', body) if not hidden]
    assert shown == ["Relative", "Relative", "Relative"]


def test_presets(client: RoleClient, matrix: MatrixSchool) -> None:
    from flask_publipostage.views import school_year_start

    body = html.unescape(client.get(PAGE, "adml_a").data.decode())
    presets = {label: href for href, label in re.findall(r'<a data-pp-preset href="([^"]+)">([^<]+)</a>', body)}
    start = school_year_start().isoformat()
    assert presets == {
        "Rentrée : élèves créés depuis le 1er septembre, par classe, 8 par page":
            f"/imports-exports/publipostage/?profile=Student&created_since={start}&sort=class&template=cards",
        "Parents sans courriel : lettres par classe des enfants":
            "/imports-exports/publipostage/?profile=Relative&email=without&sort=class&template=letter",
        "Enseignants : envoi par courriel": "/imports-exports/publipostage/?profile=Teacher&email=with",
    }
    for href in presets.values():
        assert client.get(href, "adml_a").status_code == 200
    # School B has pupils only: one preset.
    body_b = client.get(PAGE, "adml_b").data.decode()
    assert len(re.findall(r"data-pp-preset", body_b)) == 1


def test_no_store(client: RoleClient, matrix: MatrixSchool) -> None:
    for url in (PAGE, PREVIEW, CSV):
        assert client.get(url, "adml_a").headers["Cache-Control"] == "no-store"
