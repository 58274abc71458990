"""Real headless Chromium for the browser tests (Debian's /usr/bin/chromium + Playwright).

Where Chromium is absent the browser tests skip with the reason, except when
``PUBLIPOSTAGE_REQUIRE_BROWSER`` is set (CI): then they fail, so a missing browser
can never pass unnoticed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def require_chromium() -> Any:
    """Skip the calling test module without Chromium/Playwright (fail in CI); return sync_api."""
    required = bool(os.environ.get("PUBLIPOSTAGE_REQUIRE_BROWSER"))
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
