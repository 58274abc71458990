"""What a host configures: the zone of its naive datetimes, and the settings the
page cannot work without (a clear error at ``init_app`` or a fallback, never a 500
at the first request)."""

from __future__ import annotations

import csv
import io
import logging
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from flask import Flask

from flask_publipostage.recipients import local_date

from .conftest import RoleClient
from .hosts import Division, add_person, db, make_app

PAGE = "/imports-exports/publipostage/"
PREVIEW = PAGE + "preview"
CSV = PAGE + "export.csv"


def _rows(body: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'<tr data-login="([^"]+)">(.*?)</tr>', body, re.DOTALL)}


def _add_pupils_around_midnight() -> None:
    """Two pupils written as Paris wall-clock time, either side of 1 September."""
    cp = Division(libelle="CP", ecole="A")
    db.session.add(cp)
    add_person("late.august", "Léa", "Août", "ELEVE", divisions=[cp], created=datetime(2025, 8, 31, 23, 59, 59))
    add_person("first.september", "Paul", "Septembre", "ELEVE", divisions=[cp], created=datetime(2025, 9, 1, 0, 0))
    db.session.commit()


# -- naive datetimes: PUBLIPOSTAGE_HOST_TIMEZONE ----------------------------------------------


@pytest.mark.parametrize("app_config", [{"PUBLIPOSTAGE_HOST_TIMEZONE": "Europe/Paris"}])
def test_a_host_writing_paris_time_gets_paris_days(client: RoleClient, app_ctx: Flask) -> None:
    _add_pupils_around_midnight()
    rows = _rows(client.get(f"{PREVIEW}?profile=Student", "adml_a").data.decode())
    assert "31/08/2025" in rows["late.august"]
    assert "01/09/2025" in rows["first.september"]

    since = client.get(f"{PREVIEW}?profile=Student&created_since=2025-09-01", "adml_a").data.decode()
    assert re.findall(r'data-login="([^"]+)"', since) == ["first.september"]
    before = client.get(f"{PREVIEW}?profile=Student&created_before=2025-08-31", "adml_a").data.decode()
    assert re.findall(r'data-login="([^"]+)"', before) == ["late.august"]

    exported = client.get(f"{CSV}?profile=Student", "adml_a").data.decode("utf-8-sig")
    created = {r[3]: r[7] for r in list(csv.reader(io.StringIO(exported), delimiter=";"))[1:]}
    assert created == {"late.august": "31/08/2025", "first.september": "01/09/2025"}


def test_naive_datetimes_are_utc_by_default(client: RoleClient, app_ctx: Flask) -> None:
    """23:59:59 UTC on 31 August is 1 September in Paris (the school's zone)."""
    _add_pupils_around_midnight()
    rows = _rows(client.get(f"{PREVIEW}?profile=Student", "adml_a").data.decode())
    assert "01/09/2025" in rows["late.august"]
    since = client.get(f"{PREVIEW}?profile=Student&created_since=2025-09-01", "adml_a").data.decode()
    assert re.findall(r'data-login="([^"]+)"', since) == ["late.august", "first.september"]


@pytest.mark.parametrize("app_config", [{"PUBLIPOSTAGE_HOST_TIMEZONE": "America/New_York"}])
def test_aware_datetimes_carry_their_own_zone(app_ctx: Flask) -> None:
    assert local_date(datetime(2025, 8, 31, 22, 30, tzinfo=timezone.utc)).isoformat() == "2025-09-01"
    assert local_date(datetime(2025, 8, 31, 21, 59, tzinfo=timezone.utc)).isoformat() == "2025-08-31"
    # Naive: New York wall-clock time, 18:30 there being 00:30 in Paris.
    assert local_date(datetime(2025, 8, 31, 18, 30)).isoformat() == "2025-09-01"


@pytest.mark.parametrize("key", ["PUBLIPOSTAGE_HOST_TIMEZONE", "PUBLIPOSTAGE_TIMEZONE"])
def test_an_unknown_time_zone_fails_at_init_app(tmp_path: Any, database_url: str, key: str) -> None:
    with pytest.raises(RuntimeError, match=f"{key} = 'Europe/Pariss' is not a time zone"):
        make_app(database_url, str(tmp_path), **{key: "Europe/Pariss"})


# -- SECRET_KEY -------------------------------------------------------------------------------


def test_without_secret_key_init_app_says_so(tmp_path: Any, database_url: str) -> None:
    """CSRF tokens (Flask-WTF's default) need the key: refused before any request."""
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        make_app(database_url, str(tmp_path), SECRET_KEY=None, WTF_CSRF_ENABLED=True)


def test_with_secret_key_the_forms_work(tmp_path: Any, database_url: str) -> None:
    app = make_app(database_url, str(tmp_path), WTF_CSRF_ENABLED=True)
    try:
        response = app.test_client().get(PAGE, headers={"X-Test-User": "adml_a"})
        assert response.status_code == 200
        assert 'name="csrf_token"' in response.get_data(as_text=True)
    finally:
        app.extensions["publipostage"].runner.shutdown(wait=True)


def test_without_csrf_no_key_is_needed(tmp_path: Any, database_url: str) -> None:
    app = make_app(database_url, str(tmp_path), SECRET_KEY=None, WTF_CSRF_ENABLED=False)
    try:
        response = app.test_client().get(PAGE, headers={"X-Test-User": "adml_a"})
        assert response.status_code == 200
    finally:
        app.extensions["publipostage"].runner.shutdown(wait=True)


# -- BASE_TEMPLATE ----------------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [{"PUBLIPOSTAGE_BASE_TEMPLATE": "console/layout.html", "PROPAGATE_EXCEPTIONS": False}])
def test_a_missing_host_layout_falls_back_to_a_minimal_one(
    client: RoleClient, app_ctx: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    _add_pupils_around_midnight()
    with caplog.at_level(logging.WARNING, logger="flask_publipostage"):
        anonymous = client.get(PAGE)
        assert anonymous.status_code == 401
        assert "Connectez-vous pour utiliser cette page." in anonymous.get_data(as_text=True)
        page = client.get(PAGE, "adml_a")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<title>Publipostage des comptes</title>" in html
    assert "<h1>Publipostage des comptes</h1>" in html and "late.august" in html
    assert "<body><main>" not in html  # not the test host's base.html, the minimal layout
    assert html.startswith("<!doctype html>") and '<html lang="fr">' in html
    warnings = [r.getMessage() for r in caplog.records if "console/layout.html" in r.getMessage()]
    assert len(warnings) == 1  # once per app, not at every request
