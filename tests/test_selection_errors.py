"""Bad input gives 400/403 with a French message naming the field, never a 500."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import RoleClient
from .school_matrix import MatrixSchool, build_matrix_school

PAGE = "/imports-exports/publipostage/"
PREVIEW = PAGE + "preview"
CSV = PAGE + "export.csv"

#: query -> (status, words the French message must contain)
BAD: list[tuple[str, int, list[str]]] = [
    ("profile=Admin", 400, ["Profil inconnu", "Admin"]),
    ("profile=Student&profile=Relative&profile=Teacher&profile=Guest&profile=Personnel&profile=Student",
     400, ["Profils", "plusieurs fois"]),
    ("class=abc", 400, ["Classe invalide", "abc"]),
    ("class=1.5", 400, ["Classe invalide"]),
    ("class=%C2%B2", 400, ["Classe invalide"]),  # a superscript two is not a digit here
    ("class=99999999999999999999999", 400, ["Classe invalide"]),
    ("class={b}", 403, ["hors de votre périmètre"]),
    ("class={cp}&class={b}", 403, ["hors de votre périmètre"]),
    ("class=987654", 403, ["hors de votre périmètre"]),
    ("class=-3", 403, ["hors de votre périmètre"]),
    ("&".join(["class=1"] * 501), 400, ["Trop de classes"]),
    ("activation=maybe", 400, ["Valeur invalide", "maybe", "Activation"]),
    ("activation=all&activation=active", 400, ["Activation", "plusieurs fois"]),
    ("email=yes", 400, ["Valeur invalide", "Courriel"]),
    ("local_admin=1", 400, ["Valeur invalide", "Administrateurs locaux"]),
    ("created_before=31/08/2025", 400, ["Date invalide", "Créés avant le", "AAAA-MM-JJ"]),
    ("created_since=2025-02-30", 400, ["Date invalide", "Créés depuis le"]),
    ("created_since=20250901", 400, ["Date invalide", "Créés depuis le"]),
    ("created_since=2025-W36-1", 400, ["Date invalide"]),
    ("created_since=0001-01-01", 400, ["hors limites", "Créés depuis le"]),
    ("created_before=9999-12-31", 400, ["hors limites", "Créés avant le"]),
    ("created_since=2025-09-02&created_before=2025-09-01", 400, ["Créés depuis le", "postérieure"]),
    ("created_since=2025-09-01&created_since=2025-09-02", 400, ["Créés depuis le", "plusieurs fois"]),
    ("sort=name", 400, ["Valeur invalide", "name", "Par"]),
    # Without the school dimension, neither the filter nor the sort key exists.
    ("school=1", 400, ["Paramètre inconnu", "school"]),
    ("sort=school", 400, ["Valeur invalide", "school", "Par"]),
    ("sort=class&then=school", 400, ["Valeur invalide", "school", "Puis par"]),
    ("sort=class&then=class", 400, ["Puis par", "Par"]),
    ("then=nom", 400, ["Valeur invalide", "Puis par"]),
    ("sort=class&sort=profile", 400, ["Par", "plusieurs fois"]),
    ("campaign=abc", 400, ["Campagne invalide"]),
    ("campaign=99999999999", 400, ["Campagne invalide"]),
    ("campaign=%C2%B2", 400, ["Campagne invalide"]),
    ("foo=bar", 400, ["Paramètre inconnu", "foo"]),
    ("Profile=Student", 400, ["Paramètre inconnu", "Profile"]),
    ("profile=" + "x" * 5000, 400, ["Profils", "trop longue"]),
    ("class=" + "1" * 5000, 400, ["Classes", "trop longue"]),
]

PAGE_BAD = ["page=0", "page=abc", "page=1&page=2", "page=-1", "page=100001", "page=%C2%B2", "page=1" + "0" * 30]


@pytest.fixture
def matrix(app_ctx) -> MatrixSchool:
    return build_matrix_school()


def message_of(body: bytes) -> str:
    text = html.unescape(re.sub(r"<[^>]+>", " ", body.decode()))
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("query, status, words", BAD, ids=[b[0][:40] for b in BAD])
@pytest.mark.parametrize("url", [PAGE, PREVIEW, CSV], ids=["page", "preview", "csv"])
def test_bad_input(client: RoleClient, matrix: MatrixSchool, url: str, query: str, status: int, words: list[str]) -> None:
    response = client.get(f"{url}?{query.format(**matrix.class_ids)}", "adml_a")
    assert response.status_code == status
    message = message_of(response.data)
    for word in words:
        assert word in message, (word, message)
    if url == PREVIEW:
        assert b'role="alert"' in response.data and b"<html" not in response.data
    if url == CSV:
        assert not response.headers.get("Content-Disposition")


@pytest.mark.parametrize("query", PAGE_BAD)
def test_bad_page(client: RoleClient, matrix: MatrixSchool, query: str) -> None:
    for url in (PAGE, PREVIEW):
        response = client.get(f"{url}?{query}", "adml_a")
        assert response.status_code == 400
        assert "Numéro de page invalide" in message_of(response.data)
    # The CSV has no pages.
    assert client.get(f"{CSV}?page=1", "adml_a").status_code == 400


def test_fetch_gets_a_fragment(client: RoleClient, matrix: MatrixSchool) -> None:
    response = client.client.get(
        PAGE + "?activation=maybe", headers={"X-Test-User": "adml_a", "X-Requested-With": "fetch"}
    )
    assert response.status_code == 400 and b"<html" not in response.data


def test_page_beyond_the_last_shows_the_last(client: RoleClient, matrix: MatrixSchool) -> None:
    response = client.get(PREVIEW + "?page=99", "adml_a")
    assert response.status_code == 200
    assert b'data-login="elodie.zidane"' in response.data


def test_template_is_accepted_and_ignored(client: RoleClient, matrix: MatrixSchool) -> None:
    for template in ("cards", "letter", "<script>", ""):
        response = client.get(f"{PAGE}?profile=Student&template={quote(template)}", "adml_a")
        assert response.status_code == 200
        assert b"<script>\"" not in response.data
    page = client.get(f"{PAGE}?profile=Student&template=cards", "adml_a").data.decode()
    assert 'name="template" value="cards"' in page
    # Page links keep it, so a reload after paging still preselects the template.
    assert client.get(f"{PREVIEW}?template=cards", "adml_a").status_code == 200


def test_access(client: RoleClient, matrix: MatrixSchool) -> None:
    for url in (PAGE, PREVIEW, CSV):
        assert client.get(url).status_code == 401
        assert client.get(url, "teacher").status_code == 403
    assert client.get(PAGE, "viewer_a").status_code == 200
    assert client.get(PREVIEW, "viewer_a").status_code == 200
    assert client.get(CSV, "viewer_a").status_code == 403
    # Class ids of school B are fine for school B's admin, not for school A's.
    b = matrix.class_ids["b"]
    assert client.get(f"{PREVIEW}?class={b}", "adml_b").status_code == 200
    assert client.get(f"{PREVIEW}?class={b}", "adml_a").status_code == 403
    assert client.get(f"{PREVIEW}?class={b}", "super").status_code == 200


KEYS = st.sampled_from([
    "profile", "class", "activation", "email", "local_admin", "created_before",
    "created_since", "sort", "then", "page", "template", "after", "before", "last", "campaign", "x",
])
VALUES = st.one_of(
    st.sampled_from(["", "all", "none", "class", "profile", "inactive", "with", "Student",
                     "1", "2", "-1", "2025-09-01", "0000-00-00", "2999-12-31", "1900-01-01"]),
    st.text(max_size=12),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(KEYS, VALUES), max_size=6))
def test_never_a_500(client: RoleClient, matrix: MatrixSchool, pairs: list[tuple[str, str]]) -> None:
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    response = client.get(f"{PREVIEW}?{query}", "adml_a")
    assert response.status_code in (200, 400, 403), (query, response.status_code)
    if response.status_code != 200:
        assert b'role="alert"' in response.data


@pytest.mark.parametrize("query", ["class=3000000000", "after=3000000000", "before=-3000000000"])
def test_ids_beyond_the_column_width_are_refused(client: RoleClient, matrix: MatrixSchool, query: str) -> None:
    """PostgreSQL raises on an INTEGER out of range instead of finding nothing."""
    response = client.get(f"{PREVIEW}?{query}", "adml_a")
    assert response.status_code == 400
    assert b'role="alert"' in response.data
