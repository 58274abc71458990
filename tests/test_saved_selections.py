""""Mes sélections": an admin saves the current selection and PDF template under a
name, finds it beside the quick selections, applies it, renames and deletes it.

Per admin and perimeter: another admin, or the same admin in another perimeter,
neither sees nor changes it (404). The selection is checked when it is used, not
only when it was saved: a class that left the perimeter since is a 403. CSRF is
on, as in production; every form carries the token of the rendered page.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import saved
from flask_publipostage.saved import SavedSelection

from . import hosts
from .hosts import db
from .school import School
from .test_security_support import BASE, token_from

PAGE = f"{BASE}/"
CE2 = "CE2 de Mme Élise"
CP = "CP de Mme Émery"
EXPIRED = "Le formulaire a expiré"


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"WTF_CSRF_ENABLED": True}


def text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def token(client: Any, role: str = "adml_a") -> str:
    response = client.get(PAGE, role)
    assert response.status_code == 200, text(response)[:300]
    return token_from(response.get_data(as_text=True))


def save(client: Any, query: str, name: str, role: str = "adml_a", template: str = "", **form: str) -> Any:
    data = {"name": name, "template": template, "csrf_token": token(client, role), **form}
    return client.post(f"{BASE}/selections?{query}", role, data=data)


def change(client: Any, what: str, saved_id: int | str, role: str = "adml_a", query: str = "", **form: str) -> Any:
    """Rename (``what="rename"``, with ``name``) or delete a saved selection."""
    data = {"csrf_token": token(client, role), **form}
    return client.post(f"{BASE}/selections/{saved_id}/{what}?{query}", role, data=data)


def listed(client: Any, role: str = "adml_a", query: str = "") -> list[tuple[str, str, str]]:
    """(name, link, description) of each saved selection the page lists."""
    response = client.get(f"{PAGE}?{query}", role)
    assert response.status_code == 200, text(response)[:300]
    found = re.findall(
        r'<a data-pp-preset class="pp-saved-link" href="([^"]+)"[^>]*>([^<]*)</a>\s*'
        r'<span id="pp-saved-\d+-what" class="pp-hint">([^<]*)</span>',
        response.get_data(as_text=True),
    )
    return [(html.unescape(name), html.unescape(link), html.unescape(words)) for link, name, words in found]


def rows(app: Flask) -> list[tuple[str, str, str, str, str | None]]:
    with app.app_context():
        found = db.session.execute(sa.select(SavedSelection).order_by(SavedSelection.id)).scalars().all()
        result = [(s.actor, s.scope_key, s.name, s.selection, s.template) for s in found]
        db.session.remove()
    return result


def saved_id(app: Flask, name: str) -> int:
    with app.app_context():
        found = db.session.execute(sa.select(SavedSelection.id).where(SavedSelection.name == name)).scalar_one()
        db.session.remove()
    return int(found)


def logins(response: Any) -> list[str]:
    return re.findall(r'data-login="([^"]+)"', response.get_data(as_text=True))


def checked_template(response: Any) -> str:
    found = re.findall(r'<input checked id="template-\d" name="template" required type="radio" value="(\w+)">',
                       response.get_data(as_text=True))
    assert len(found) == 1, found
    return found[0]


# -- save, list, apply ---------------------------------------------------------------------


def test_save_then_apply_gives_the_same_accounts_and_template(app: Flask, client: Any, school: School) -> None:
    query = f"profile=Relative&profile=Student&class={school.cp.ref}&sort=class"
    direct = client.get(f"{PAGE}?{query}&template=cards", "adml_a")
    assert logins(direct) == ["marie.abel", "zoe.abel"]
    response = save(client, query, "  Rentrée   CP  ", template="cards")
    assert response.status_code == 303
    # Back on the page with that selection, at the list.
    assert response.headers["Location"].endswith(
        f"/?profile=Student&profile=Relative&class={school.cp.ref}&sort=class&template=cards#pp-saved-title")
    [(name, link, words)] = listed(client)
    assert name == "Rentrée CP"  # spaces tidied
    assert words == f"Élèves, Parents · {CP} · Triés par classe · Cartes, 8 par page"
    used = client.get(link, "adml_a")
    assert used.status_code == 200
    assert logins(used) == logins(direct)
    assert checked_template(used) == "cards"
    # Stored once, canonical: the filters' order, defaults left out.
    assert rows(app) == [("adml_a", "ecole:A", "Rentrée CP",
                          f'{{"profile": ["Student", "Relative"], "class": ["{school.cp.ref}"], "sort": ["class"]}}',
                          "cards")]


def test_without_a_template_the_page_keeps_its_default(app: Flask, client: Any, school: School) -> None:
    assert save(client, "email=without", "Sans courriel").status_code == 303
    [(_name, link, words)] = listed(client)
    assert "template" not in link and words == "Sans courriel"
    used = client.get(link, "adml_a")
    assert checked_template(used) == "letter"
    assert "marie.abel" not in logins(used) and "zoe.abel" in logins(used)


def test_an_admin_sees_theirs_in_name_order_and_none_before(client: Any, school: School) -> None:
    page = text(client.get(PAGE, "adml_a"))
    assert "Mes sélections" in page and "Aucune pour l'instant" in page
    for name in ("parents", "Élèves", "Enseignants"):
        assert save(client, "", name).status_code == 303
    assert [name for name, _link, _words in listed(client)] == ["Élèves", "Enseignants", "parents"]
    assert "Aucune pour l'instant" not in text(client.get(PAGE, "adml_a"))


# -- rename, delete ---------------------------------------------------------------------------


def test_rename_and_delete(app: Flask, client: Any, school: School) -> None:
    assert save(client, "profile=Teacher", "Profs", template="letter").status_code == 303
    first = saved_id(app, "Profs")
    response = change(client, "rename", first, query="profile=Guest", name=" Enseignants ")
    # Back to the page with the selection the form's address carried.
    assert response.status_code == 303 and response.headers["Location"].endswith("/?profile=Guest#pp-saved-title")
    [(name, link, _words)] = listed(client)
    assert name == "Enseignants" and "profile=Teacher" in link and "template=letter" in link
    # The same name again is fine (nothing changes).
    assert change(client, "rename", first, name="Enseignants").status_code == 303
    assert change(client, "delete", first).status_code == 303
    assert listed(client) == [] and rows(app) == []
    # Gone: a second delete finds nothing.
    assert change(client, "delete", first).status_code == 404


# -- names that cannot be kept -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "Donnez un nom à la sélection."),
        ("   \t ", "Donnez un nom à la sélection."),
        ("x" * 81, "Le nom est trop long : 80 caractères au plus."),
        ("Rentrée\x00", "Le nom contient des caractères qui ne peuvent pas s'afficher."),
        ("Rentrée\u202e", "Le nom contient des caractères qui ne peuvent pas s'afficher."),
    ],
)
def test_bad_names_are_refused_in_french(app: Flask, client: Any, school: School, name: str, message: str) -> None:
    response = save(client, "profile=Teacher", name)
    assert response.status_code == 400 and message in text(response)
    assert rows(app) == []


def test_the_longest_name_is_kept(app: Flask, client: Any, school: School) -> None:
    assert save(client, "", "é" * 80).status_code == 303
    assert [r[2] for r in rows(app)] == ["é" * 80]


def test_a_name_is_unique_per_admin_and_perimeter(app: Flask, client: Any, school: School) -> None:
    assert save(client, "profile=Teacher", "Rentrée").status_code == 303
    again = save(client, "profile=Student", " Rentrée ")
    assert again.status_code == 400 and "Vous avez déjà une sélection nommée « Rentrée »." in text(again)
    assert save(client, "profile=Student", "Élèves").status_code == 303
    renamed = change(client, "rename", saved_id(app, "Élèves"), name="Rentrée")
    assert renamed.status_code == 400 and "« Rentrée »" in text(renamed)
    assert [r[2] for r in rows(app)] == ["Rentrée", "Élèves"]
    # Another admin of the same school may use the same name.
    assert save(client, "profile=Teacher", "Rentrée", role="viewer_a").status_code == 303


def test_an_admin_keeps_a_limited_number(app: Flask, client: Any, school: School, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saved, "MAX_SAVED", 2)
    assert save(client, "", "un").status_code == 303
    assert save(client, "", "deux").status_code == 303
    refused = save(client, "", "trois")
    assert refused.status_code == 400 and "Vous gardez déjà 2 sélections enregistrées" in text(refused)
    assert save(client, "", "trois", role="viewer_a").status_code == 303  # per admin


# -- what a save refuses, and leaves nothing of ---------------------------------------------


def test_bad_requests_store_nothing(app: Flask, client: Any, school: School) -> None:
    # Without the page's token.
    for data in ({"name": "x"}, {"name": "x", "csrf_token": "forged"}):
        response = client.post(f"{BASE}/selections?profile=Teacher", "adml_a", data=data)
        assert response.status_code == 400 and EXPIRED in text(response)
    # A selection outside the perimeter, a wrong filter, a wrong template.
    outside = save(client, f"class={school.other_school_class.ref}", "B")
    assert outside.status_code == 403 and "Une des classes choisies est hors de votre périmètre." in text(outside)
    assert save(client, "activation=maybe", "x").status_code == 400
    assert save(client, "page=2", "x").status_code == 400  # the selection only, not the page
    assert save(client, "", "x", template="../x").status_code == 400
    assert rows(app) == []
    assert save(client, "", "x").status_code == 303
    first = saved_id(app, "x")
    for what in ("rename", "delete"):
        response = client.post(f"{BASE}/selections/{first}/{what}", "adml_a", data={"name": "y"})
        assert response.status_code == 400 and EXPIRED in text(response)
    assert [r[2] for r in rows(app)] == ["x"]


# -- per admin and perimeter ------------------------------------------------------------------


def test_another_admin_neither_sees_nor_changes_it(
    app: Flask, client: Any, school: School, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert save(client, "profile=Teacher", "Mes profs").status_code == 303
    mine = saved_id(app, "Mes profs")
    # The same actor name in another perimeter too.
    monkeypatch.setitem(hosts.ROLES, "adml_a_in_b", {**hosts.ROLES["adml_a"], "school": "B"})
    for role in ("viewer_a", "adml_b", "super", "adml_a_in_b"):
        assert listed(client, role) == [], role
        for what in ("rename", "delete"):
            response = change(client, what, mine, role, name="Pris")
            assert response.status_code == 404, (role, what)
            assert "n'existe pas" in text(response)
    assert rows(app)[0][2] == "Mes profs"
    assert [name for name, _link, _words in listed(client)] == ["Mes profs"]
    # Ids that cannot be one: 404 as well.
    for key in ("abc", "0", "99999999999999999999", "-1"):
        assert change(client, "delete", key).status_code == 404


def test_a_perimeter_shrunk_since_is_refused_when_used(
    app: Flask, client: Any, school: School, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class teacher saves their class; the host gives them another class: the
    saved selection still shows (same perimeter key) but using it is a 403, and
    one without a class lists the accounts of the perimeter of now."""
    assert save(client, f"class={school.ce2.ref}&sort=class", "Ma classe", role="prof_a", template="cards").status_code == 303
    assert save(client, "profile=Student", "Mes élèves", role="prof_a").status_code == 303
    links = {name: link for name, link, _words in listed(client, "prof_a")}
    assert logins(client.get(links["Mes élèves"], "prof_a")) == ["lucas.etienne"]
    monkeypatch.setitem(hosts.ROLES, "prof_a", {**hosts.ROLES["prof_a"], "class": CP})
    # Still listed (the class shows as its id: it is no longer theirs to name).
    described = {name: words for name, _link, words in listed(client, "prof_a")}
    assert set(described) == {"Ma classe", "Mes élèves"}
    assert f"classe {school.ce2.ref}, inconnue ou hors de votre périmètre" in described["Ma classe"]
    refused = client.get(links["Ma classe"], "prof_a")
    assert refused.status_code == 403
    assert "Une des classes choisies est hors de votre périmètre." in text(refused)
    assert "lucas.etienne" not in text(refused)
    assert logins(client.get(links["Mes élèves"], "prof_a")) == ["zoe.abel"]
    # Renaming and deleting it still work: they use nothing of the selection.
    ma_classe = saved_id(app, "Ma classe")
    assert change(client, "rename", ma_classe, "prof_a", name="Ancienne classe").status_code == 303
    assert change(client, "delete", ma_classe, "prof_a").status_code == 303
    assert [name for name, _link, _words in listed(client, "prof_a")] == ["Mes élèves"]


# -- the page, and the tables of an existing install ----------------------------------------------


def test_the_forms_follow_the_selection_of_the_page(app: Flask, client: Any, school: School) -> None:
    assert save(client, "", "Tout").status_code == 303
    first = saved_id(app, "Tout")
    page = client.get(f"{PAGE}?profile=Relative&email=without&template=cards", "adml_a").get_data(as_text=True)
    actions = re.findall(r'data-pp-selection\s+action="([^"]+)"', page)
    assert f"{BASE}/selections?profile=Relative&amp;email=without" in actions
    assert f"{BASE}/selections/{first}/rename?profile=Relative&amp;email=without" in actions
    assert f"{BASE}/selections/{first}/delete?profile=Relative&amp;email=without" in actions
    # Without the page's script, the template of the address is saved.
    assert '<input type="hidden" name="template" value="cards">' in page


def test_upgrade_db_creates_the_table(app: Flask, client: Any, school: School) -> None:
    """An install whose tables the host creates itself (``CREATE_TABLES = False``)."""
    with app.app_context():
        SavedSelection.__table__.drop(db.engine)
    result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert result.exit_code == 0 and "Tables créées : publipostage_saved_selection." in result.output, result.output
    assert save(client, "profile=Teacher", "Profs").status_code == 303
    assert [name for name, _link, _words in listed(client)] == ["Profs"]
    again = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert again.exit_code == 0 and "Tables créées" not in again.output
