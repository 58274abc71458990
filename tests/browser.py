"""Real headless Chromium for the browser tests (Debian's /usr/bin/chromium + Playwright),
and axe-core, which checks the pages' accessibility in it.

Where Chromium or axe-core is absent the browser tests skip with the reason,
except when ``PUBLIPOSTAGE_REQUIRE_BROWSER`` is set (CI, whose ``.ci/run`` installs
both): then they fail, so a missing browser can never pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


AXE_VERSION = "4.10"
#: Where ``make axe`` (run by ``.ci/run``) puts axe-core; ``PUBLIPOSTAGE_AXE_JS`` overrides it.
AXE_DEFAULT = Path(__file__).resolve().parent.parent / "build" / "axe-core" / "package" / "axe.min.js"
#: What the accessibility checks hold the pages to (axe's rule tags).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def _required() -> bool:
    return bool(os.environ.get("PUBLIPOSTAGE_REQUIRE_BROWSER"))


def find_axe(folder: Path) -> Path:
    """axe-core's ``axe.min.js``: ``PUBLIPOSTAGE_AXE_JS``, ``make axe``'s copy, or
    fetched from the npm registry into ``folder``; skip (fail in CI) without it."""
    configured = os.environ.get("PUBLIPOSTAGE_AXE_JS")
    for candidate in (configured, AXE_DEFAULT):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    npm = shutil.which("npm")
    reason = "axe-core unavailable: npm is not installed (run `make axe`)"
    if npm is not None:
        try:
            subprocess.run(
                [npm, "pack", f"axe-core@{AXE_VERSION}", "--silent"],
                cwd=folder, check=True, capture_output=True, timeout=120,
            )
            archive = next(folder.glob("axe-core-*.tgz"))
            with tarfile.open(archive) as tar:
                tar.extract("package/axe.min.js", folder, filter="data")
            return folder / "package" / "axe.min.js"
        except (subprocess.SubprocessError, OSError, StopIteration, KeyError) as error:
            reason = f"axe-core unavailable: `npm pack axe-core` failed ({error})"
    if _required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """The serious and critical findings of axe-core on the page as it is now
    (axe given to the context by :func:`watched_context`)."""
    result = page.evaluate(
        "async tags => (await axe.run(document, {runOnly: {type: 'tag', values: tags}})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))",
        AXE_TAGS,
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def require_chromium() -> Any:
    """Skip the calling test module without Chromium/Playwright (fail in CI); return sync_api."""
    required = _required()
    if not os.path.exists(CHROMIUM):
        reason = f"Chromium not found at {CHROMIUM} (Debian package 'chromium')"
        if required:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail("Playwright is not installed (extra 'test')", pytrace=False)
        pytest.skip("Playwright is not installed (extra 'test')", allow_module_level=True)
    return sync_api


@contextmanager
def launched_browser(sync_api: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def admin_page(browser: Any, base_url: str, role: str = "adml_a") -> Iterator[Any]:
    """A page of a new browser context logged in as ``role`` of the test host;
    a JavaScript error on it fails the test."""
    context = browser.new_context(base_url=base_url, locale="fr-FR", accept_downloads=True)
    context.set_extra_http_headers({"X-Test-User": role})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


#: Reports every Content-Security-Policy violation of a document to the test
#: (an init script and a binding: the page's own policy does not apply to them).
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", e => window.ppCspViolation(
  [e.effectiveDirective, e.blockedURI, (e.sourceFile || "") + ":" + e.lineNumber, e.sample].join(" ")));
"""


@contextmanager
def watched_context(browser: Any, base_url: str, axe: Path | None = None, role: str = "adml_a") -> Iterator[tuple[Any, list[str]]]:
    """A browser context logged in as ``role`` of the test host, with axe-core in
    every document (``axe``), and the list every Content-Security-Policy violation
    of its pages and frames goes to (a console report of one too); a JavaScript
    error fails the test."""
    context = browser.new_context(base_url=base_url, locale="fr-FR", accept_downloads=True)
    context.set_extra_http_headers({"X-Test-User": role})
    violations: list[str] = []
    errors: list[str] = []
    context.expose_binding("ppCspViolation", lambda source, text: violations.append(f"{source['frame'].url}: {text}"))
    context.add_init_script(script=_REPORT_VIOLATIONS)
    if axe is not None:
        context.add_init_script(path=str(axe))

    def on_page(page: Any) -> None:
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)

    context.on("page", on_page)
    try:
        yield context, violations
    finally:
        context.close()
    assert not errors, errors


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a thread; yield its base URL."""
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


@contextmanager
def security_school_page(app: Flask, database_url: str) -> Iterator[Any]:
    """An admin's page in Chromium on the security suite's school, served live:
    on SQLite only (the browser side does not depend on the database)."""
    from .hosts import db
    from .test_security_support import build_security_school

    if not database_url.startswith("sqlite"):
        pytest.skip("the browser side does not depend on the database")
    with app.app_context():
        build_security_school()
        db.session.remove()
    with live_server(app) as url, launched_browser(require_chromium()) as browser, admin_page(browser, url) as page:
        yield page
