""""Suivi des activations" in real headless Chromium: from a class's "non activés"
number to their letters, printed, and the follow-up counting them distributed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from pypdf import PdfReader

from .browser import require_chromium, security_school_page

PAGE = "/imports-exports/publipostage/"
CP = "CP de Mme Émery"

sync_api = require_chromium()


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"PUBLIPOSTAGE_PDF_QR_CODE": False}


@pytest.fixture
def page(app: Flask, database_url: str) -> Iterator[Any]:
    with security_school_page(app, database_url) as page:
        yield page


def test_print_the_letters_of_a_class_not_yet_activated(page: Any) -> None:
    page.goto(PAGE)
    page.get_by_role("link", name="Suivi des activations").click()
    row = page.locator(f'tr[data-pp-row="{CP}"]')
    row.wait_for()  # the follow-up page, loaded (reading at once raced with the navigation)
    assert row.locator("td").all_text_contents()[:6] == ["3", "1", "33 %", "2", "0", "3"]
    row.locator('a[data-pp-column="not_activated"]').click()
    page.wait_for_url("**/publipostage/?*activation=inactive*")
    # The page lists them, with the filters of the link ticked.
    assert sorted(page.locator("#pp-results tr[data-login]").evaluate_all("rows => rows.map(r => r.dataset.login)")) == [
        "marie.abel", "zoe.abel"]
    assert page.get_by_label(CP, exact=True).is_checked()
    assert page.get_by_role("radio", name="Non activés").is_checked()
    with page.expect_download() as info:
        page.get_by_role("button", name="Générer en PDF").click()
    with open(info.value.path(), "rb") as handle:
        letters = [p.extract_text() for p in PdfReader(io.BytesIO(handle.read())).pages]
    assert len(letters) == 2
    assert "zoe.abel" in letters[1] and "CODE-zoe.abel" in letters[1]
    assert "marie.abel" in letters[0] and "CODE-marie.abel" in letters[0]
    # Back on the follow-up: both are distributed now.
    page.get_by_role("link", name="Suivi des activations").click()
    page.locator(f'tr[data-pp-row="{CP}"]').wait_for()
    cells = page.locator(f'tr[data-pp-row="{CP}"] td').all_text_contents()
    assert cells[4:6] == ["2", "1"]
