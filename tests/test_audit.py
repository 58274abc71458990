"""Every export is recorded, visible within the admin's perimeter, without codes."""

from __future__ import annotations

from typing import Any

JOURNAL = "/imports-exports/publipostage/journal"
CSV = "/imports-exports/publipostage/export.csv"


def test_csv_export_is_recorded_without_codes(client: Any, school: Any) -> None:
    response = client.get(CSV + "?profile=Student&sort=class", "adml_a")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "CODE-zoe.abel" in body  # the export itself holds the codes...
    journal = client.get(JOURNAL, "adml_a").get_data(as_text=True)
    assert "Export CSV" in journal and "adml_a" in journal
    assert "Élèves · Triés par classe" in journal  # the selection in words
    assert "CODE-" not in journal  # ...the journal never does


def test_journal_is_limited_to_the_admins_perimeter(client: Any, school: Any) -> None:
    client.get(CSV, "adml_a")
    client.get(CSV, "adml_b")
    seen_by_b = client.get(JOURNAL, "adml_b").get_data(as_text=True)
    assert "adml_b" in seen_by_b and "adml_a" not in seen_by_b
    seen_by_super = client.get(JOURNAL, "super").get_data(as_text=True)
    assert "adml_a" in seen_by_super and "adml_b" in seen_by_super


def test_journal_needs_a_login_and_the_view_capability(client: Any, school: Any) -> None:
    assert client.get(JOURNAL).status_code == 401
    assert client.get(JOURNAL, "teacher").status_code == 403
    assert client.get(JOURNAL, "viewer_a").status_code == 200


def test_csv_needs_print(client: Any, school: Any) -> None:
    assert client.get(CSV, "viewer_a").status_code == 403
    journal = client.get(JOURNAL, "super").get_data(as_text=True)
    assert "<td>Export CSV</td>" not in journal


def test_codes_are_shown_only_to_admins_who_may_print(client: Any, school: Any) -> None:
    """A code is a password until used: viewing the list is not printing it."""
    printer = client.get("/imports-exports/publipostage/?profile=Student", "adml_a").get_data(as_text=True)
    viewer = client.get("/imports-exports/publipostage/?profile=Student", "viewer_a").get_data(as_text=True)
    assert "CODE-zoe.abel" in printer
    assert "CODE-" not in viewer and "Non activé (code masqué)" in viewer
