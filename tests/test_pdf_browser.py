""""Générer en PDF" in real headless Chromium: the button follows the live
selection, a small run downloads at once, a large one shows its progress and
then its download link."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from pypdf import PdfReader

from .browser import admin_page, launched_browser, live_server, require_chromium
from .hosts import db
from .test_pdf_support import add_class_of

PAGE = "/imports-exports/publipostage/"

sync_api = require_chromium()


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"PUBLIPOSTAGE_JOB_BACKEND": "thread", "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 10, "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 16}


@pytest.fixture
def server(app: Flask, database_url: str) -> Iterator[str]:
    if not database_url.startswith("sqlite"):
        pytest.skip("the browser side does not depend on the database")
    with app.app_context():
        add_class_of("CE1 Petit", 4, prefix="pe")
        add_class_of("CM2 Grand", 40, prefix="gr")
        db.session.commit()
    with live_server(app) as url:
        yield url


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    with launched_browser(sync_api) as browser, admin_page(browser, server) as page:
        yield page


def _pdf(download: Any) -> PdfReader:
    with open(download.path(), "rb") as handle:
        return PdfReader(io.BytesIO(handle.read()))


def _tick_class(page: Any, name: str) -> None:
    page.get_by_label(name, exact=True).check()
    page.wait_for_function(
        "n => { const c = document.querySelector('#pp-results .pp-counters');"
        " return c && c.dataset.selected === String(n); }",
        arg=4 if "Petit" in name else 40,
    )


def test_small_run_downloads_and_large_run_shows_progress(page: Any) -> None:
    page.goto(PAGE)
    # A small selection: the PDF comes back in the request.
    _tick_class(page, "CE1 Petit")
    page.get_by_role("radio", name="8 par page").check()
    with page.expect_download() as info:
        page.get_by_role("button", name="Générer en PDF").click()
    download = info.value
    assert download.suggested_filename.startswith("publipostage_ecole-a_")
    reader = _pdf(download)
    assert len(reader.pages) == 1
    text = reader.pages[0].extract_text()
    assert all(f"pe{i:04d}" in text for i in range(4)) and "gr0000" not in text

    # Another class, chosen without reloading: the button follows the selection.
    page.get_by_label("CE1 Petit", exact=True).uncheck()
    _tick_class(page, "CM2 Grand")
    page.get_by_role("radio", name="1 par page").check()
    page.get_by_role("button", name="Générer en PDF").click()
    page.wait_for_url("**/pdf/jobs/*")
    assert page.get_by_text("40 comptes").count() >= 1
    # The page polls its status and shows the download link when ready.
    link = page.get_by_role("link", name="Télécharger le PDF")
    link.wait_for(timeout=60_000)
    with page.expect_download() as info:
        link.click()
    reader = _pdf(info.value)
    assert len(reader.pages) == 40
    assert "gr0000" in reader.pages[0].extract_text() and "gr0039" in reader.pages[39].extract_text()
    page.reload()
    assert page.get_by_text("supprimé").count() >= 1
