""""Mes sélections" in real headless Chromium: filters chosen live (no reload) and
a template ticked in step 3 are saved under a name, then applied from the list,
renamed and deleted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from .browser import admin_page, launched_browser, live_server, require_chromium
from .hosts import db
from .test_security_support import build_security_school

PAGE = "/imports-exports/publipostage/"
CP = "CP de Mme Émery"
SAVE_AS = "Enregistrer cette sélection et son modèle PDF sous le nom"

sync_api = require_chromium()


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"WTF_CSRF_ENABLED": True}


@pytest.fixture
def page(app: Flask, database_url: str) -> Iterator[Any]:
    if not database_url.startswith("sqlite"):
        pytest.skip("the browser side does not depend on the database")
    with app.app_context():
        build_security_school()
        db.session.remove()
    with live_server(app) as url, launched_browser(sync_api) as browser, admin_page(browser, url) as page:
        yield page


def logins(page: Any) -> list[str]:
    return page.locator("#pp-results tr[data-login]").evaluate_all("rows => rows.map(r => r.dataset.login)")


def wait_for_count(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => { const c = document.querySelector('#pp-results .pp-counters');"
        " return c && c.dataset.selected === String(n) && !document.getElementById('pp-results').hasAttribute('aria-busy'); }",
        arg=count,
    )


def test_save_the_live_selection_and_its_template_then_use_rename_delete(page: Any) -> None:
    page.goto(PAGE)
    assert "Aucune pour l'instant" in page.locator(".pp-saved").inner_text()
    # Filters changed in place: the save form follows them without a reload.
    page.evaluate("window.__ppMarker = 'kept'")
    page.get_by_label("Parent", exact=True).check()
    page.get_by_label(CP, exact=True).check()
    wait_for_count(page, 1)
    page.get_by_role("radio", name="8 par page").check()
    assert page.evaluate("window.__ppMarker") == "kept"
    page.get_by_label(SAVE_AS).fill("Parents de CP")
    page.get_by_role("button", name="Enregistrer", exact=True).click()
    page.wait_for_url("**/publipostage/?profile=Relative&class=*&template=cards#pp-saved-title")

    # Another day: the page without filters, then the saved selection.
    page.goto(PAGE)
    assert page.get_by_role("radio", name="1 par page").is_checked()
    link = page.get_by_role("link", name="Parents de CP")
    assert "Parents · CP de Mme Émery · Cartes, 8 par page" in page.locator(".pp-saved-item").inner_text()
    link.click()
    page.wait_for_url("**/publipostage/?profile=Relative&class=*&template=cards")
    assert logins(page) == ["marie.abel"]
    assert page.get_by_label("Parent", exact=True).is_checked() and page.get_by_label(CP, exact=True).is_checked()
    assert page.get_by_role("radio", name="8 par page").is_checked()

    # Renamed, then deleted, from the list.
    page.get_by_text("Renommer ou supprimer").click()
    page.get_by_label("Nouveau nom").fill("Parents de CP, rentrée")
    page.get_by_role("button", name="Renommer").click()
    page.get_by_role("link", name="Parents de CP, rentrée").wait_for()
    assert logins(page) == ["marie.abel"]  # back on the same selection
    page.get_by_text("Renommer ou supprimer").click()
    page.get_by_role("button", name="Supprimer « Parents de CP, rentrée »").click()
    page.wait_for_load_state()
    assert "Aucune pour l'instant" in page.locator(".pp-saved").inner_text()
    assert page.get_by_role("link", name="Parents de CP, rentrée").count() == 0
