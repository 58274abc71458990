"""Every page of the extension in real Chromium, served under a strict
Content-Security-Policy (the host's ``default-src 'self'; script-src 'self';
style-src 'self'; img-src 'self' data:``), checked by axe-core at each of its
states: no policy violation anywhere, no serious or critical accessibility
finding, and the pages still work (filter, pages of the list, PDF progress,
campaign progress, the message preview, the step-up link).

One browser, one visit after another: a single tour keeps the suite quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from .browser import axe_violations, launched_browser, live_server, require_chromium, watched_context
from .hosts import Division, add_person, db
from .smtp import SmtpServer
from .test_pdf_support import add_class_of
from .test_security_support import build_security_school

BASE = "/imports-exports/publipostage"

sync_api = require_chromium()


@pytest.fixture
def smtp_options() -> dict[str, Any]:
    # Slow enough for the campaign page to show its progress before its report.
    return {"delay": 0.25}


@pytest.fixture
def app_config(smtp: SmtpServer) -> dict[str, Any]:
    return {
        **smtp.config(),
        "csp": True,
        "step_up": True,
        "PUBLIPOSTAGE_JOB_BACKEND": "thread",
        "PUBLIPOSTAGE_PAGE_SIZE": 4,
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 10,
        "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 8,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        # Without fallback fonts, a Chinese name cannot print: the check page shows.
        "PUBLIPOSTAGE_PDF_FALLBACK_FONTS": (),
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
    }


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: the pages do not depend on the database (the others test both)."""
    return f"sqlite:///{tmp_path / 'host.sqlite3'}"


@pytest.fixture
def server(app: Flask) -> Iterator[str]:
    with app.app_context():
        build_security_school()
        add_class_of("CM2 Grand", 40, prefix="gr")
        chinese = Division(libelle="CE1 Wang", ecole="A")
        db.session.add(chinese)
        add_person("wang.xiaoming", "小明", "王", "ELEVE", divisions=[chinese])
        for n in range(12):
            add_person(f"staff.{n}", f"Agent{n:02d}", "Lettré", "PERS", email=f"staff.{n}@example.org")
        db.session.commit()
        db.session.remove()
    with live_server(app) as url:
        yield url


class Tour:
    """Visits pages of one browser context and checks each state it is shown in."""

    def __init__(self, context: Any, violations: list[str]) -> None:
        self.page = context.new_page()
        self.violations = violations
        self.checked: list[str] = []

    def check(self, name: str) -> None:
        """No policy violation so far, no serious or critical axe finding now."""
        self.page.wait_for_load_state()
        found = axe_violations(self.page)  # a round trip too: reports of the page have arrived
        assert self.violations == [], (name, self.violations)
        assert found == [], (name, found)
        self.checked.append(name)

    def visit(self, path: str, name: str) -> None:
        self.page.goto(BASE + path)
        self.check(name)

    def selected(self, count: int) -> None:
        self.page.wait_for_function(
            "n => { const c = document.querySelector('#pp-results .pp-counters');"
            " return c && c.dataset.selected === String(n) && !document.getElementById('pp-results').hasAttribute('aria-busy'); }",
            arg=count,
        )


def test_every_page_under_a_strict_policy_with_axe(browser_axe: tuple[Any, Path], server: str, smtp: SmtpServer) -> None:
    browser, axe = browser_axe
    with watched_context(browser, server, axe) as (context, violations):
        tour = Tour(context, violations)
        page = tour.page

        # -- step 1 and 2: the page, its live list, its errors ---------------------------------
        page.goto(f"{BASE}/?sort=class")
        assert page.locator(".pp-step-up a").count() == 1  # codes wait for the step-up
        tour.check("page, codes hidden until a recent authentication")
        page.click(".pp-step-up a")  # the host's re-authentication, and back
        page.wait_for_selector("#pp-results code.pp-code")
        tour.check("page with codes")
        page.evaluate("window.__ppMarker = 'kept'")
        page.get_by_label("Parent", exact=True).check()
        tour.selected(2)
        tour.check("the list after a live update")
        page.fill("#pp-created-since", "2026-01-15")
        page.fill("#pp-created-before", "2025-09-01")
        page.wait_for_selector("#pp-results [role=alert]")
        tour.check("the list with an error")
        assert page.evaluate("window.__ppMarker") == "kept"  # no reload: the script ran
        tour.visit("/?profile=Personnel", "a list of several pages")
        page.get_by_role("link", name="Suivante").click()
        page.wait_for_function("() => location.search.includes('page=2')")
        tour.check("the second page of the list")
        tour.visit("/?profile=Guest&activation=active", "an empty list")
        tour.visit("/?activation=maybe", "a wrong filter (400)")
        tour.visit("/?class=999999", "a class outside the perimeter (403)")

        # -- "Générer en PDF": names that cannot print, a file in the background ----------------
        page.goto(f"{BASE}/")
        page.get_by_label("CE1 Wang", exact=True).check()
        tour.selected(1)
        page.get_by_role("button", name="Générer en PDF").click()
        page.wait_for_selector(".pp-pdf-check")
        tour.check("the names that cannot print")
        with page.expect_download():
            page.get_by_role("button", name="Générer quand même").click()
        page.goto(f"{BASE}/")
        page.get_by_label("CM2 Grand", exact=True).check()
        tour.selected(40)
        page.get_by_role("button", name="Générer en PDF").click()
        page.wait_for_url(lambda url: "/pdf/jobs/" in url)
        assert page.locator("#pp-pdf-progress").count() == 1
        tour.check("a PDF in preparation")
        # The page follows the progress by itself, then offers the file.
        link = page.get_by_role("link", name="Télécharger le PDF")
        link.wait_for(timeout=60_000)
        tour.check("a PDF ready")
        with page.expect_download():
            link.click()
        page.reload()
        tour.check("a PDF downloaded")
        tour.visit("/pdf/jobs", "your PDF files")
        tour.visit("/pdf/jobs/nothing-here", "a file that does not exist (404)")

        # -- "Envoyer par mail": confirmation, sample, campaign, report --------------------------
        tour.visit("/mail?profile=Personnel&email=with", "the confirmation")
        frame = page.frame_locator("iframe.pp-mail-frame")
        assert "Bonjour" in frame.locator("body").inner_text()
        page.get_by_role("button", name="M'envoyer un exemple").click()
        page.wait_for_selector(".pp-success")
        tour.check("the confirmation after a sample")
        page.get_by_role("button", name="Envoyer 13 courriels").click()
        page.wait_for_url(lambda url: "/mail/campaigns/" in url)
        assert page.locator("#pp-mail-progress").count() == 1
        tour.check("a campaign under way")
        # Its counters move without a reload, then its report shows.
        page.wait_for_function("() => Number(document.querySelector('[data-pp-field=sent]').textContent) > 0"
                               " && document.getElementById('pp-mail-progress') !== null")
        page.get_by_role("heading", name="Compte rendu").wait_for(timeout=60_000)
        tour.check("a campaign's report")
        tour.visit("/mail/campaigns", "the campaigns")

        # -- the journal ---------------------------------------------------------------------
        tour.visit("/journal", "the journal")
        tour.visit("/journal?output=pdf&since=2020-01-01", "the journal, filtered")
        tour.visit("/journal?since=2030-01-01", "the journal, nothing found")

        # -- the follow-up ---------------------------------------------------------------------
        tour.visit("/follow-up", "the follow-up of activations")
        tour.visit("/follow-up?class=999999", "the follow-up of a class outside the perimeter (403)")

        # -- "Mes sélections" ------------------------------------------------------------------
        page.goto(f"{BASE}/?profile=Personnel")
        page.get_by_label("Enregistrer cette sélection et son modèle PDF sous le nom").fill("Personnels")
        page.get_by_role("button", name="Enregistrer", exact=True).click()
        page.get_by_role("link", name="Personnels").wait_for()
        page.get_by_text("Renommer ou supprimer").click()  # its forms open
        tour.check("the page with a saved selection")
        page.wait_for_timeout(300)
        assert violations == []
    assert len(tour.checked) == len(set(tour.checked)) == 26


@pytest.fixture(scope="module")
def browser_axe(axe_script: Path) -> Iterator[tuple[Any, Path]]:
    with launched_browser(sync_api) as browser:
        yield browser, axe_script


def test_the_tour_sees_a_violation(browser_axe: tuple[Any, Path], server: str, app: Flask) -> None:
    """The watch itself: an inline style in a page is caught."""
    browser, axe = browser_axe

    @app.route("/inline")
    def inline() -> str:
        return '<!doctype html><html lang="fr"><title>x</title><p style="color: red">x</p></html>'

    with watched_context(browser, server, axe) as (context, violations):
        page = context.new_page()
        page.goto("/inline")
        page.wait_for_timeout(300)
        assert violations and "style" in " ".join(violations)
