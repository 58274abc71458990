"""CSV export: the preview's columns, UTF-8 with BOM, ``;``, formulas neutralised, streamed."""

from __future__ import annotations

import csv
import io
import tracemalloc
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.audit import AuditEntry
from flask_publipostage.csv_export import safe_cell
from flask_publipostage.recipients import iter_recipients
from flask_publipostage.views import current_selection

from .conftest import RoleClient
from .hosts import Personne, add_person, db, inscription
from .school_matrix import MatrixSchool, build_matrix_school
from .test_security_support import count_statements

CSV = "/imports-exports/publipostage/export.csv"


@pytest.fixture
def matrix(app_ctx: Flask) -> MatrixSchool:
    return build_matrix_school()


def read(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:], newline=""), delimiter=";"))


def test_format(client: RoleClient, matrix: MatrixSchool) -> None:
    response = client.get(f"{CSV}?profile=Relative&profile=Teacher&sort=profile", "adml_a")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"  # the charset once
    assert client.client.head(f"{CSV}?profile=Relative", headers={"X-Test-User": "adml_a"}).headers[
        "Content-Type"] == "text/csv; charset=utf-8"
    assert client.get("/imports-exports/publipostage/journal.csv", "adml_a").headers[
        "Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="publipostage_ecole-a_')
    assert response.data.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in response.data
    rows = read(response.data)
    assert rows[0] == [
        "Nom", "Prénom", "Profil", "Identifiant", "Code d'activation", "Courriel",
        "Classe(s)", "Date de création",
    ]
    assert rows[1:] == [
        ["Dupont", "Jean", "Enseignant", "jean.prof", "CODE-jean.prof", "jean.prof@example.org",
         "CE2 de Mme Élise", "01/09/2025"],
        ["Œillet", "Anne", "Enseignant", "anne.prof", "Compte activé", "anne.prof@example.org",
         "CP de Mme Émery, CM1 de M. Zola", "01/09/2025"],
        ["Abel", "Marie", "Parent", "marie.abel", "CODE-marie.abel", "marie.abel@example.org",
         "Parent de Zoé Abel (CP de Mme Émery) / Parent d'Élodie Zidane (CM1 de M. Zola)", "01/09/2025"],
        ["Étienne", "Paul", "Parent", "paul.etienne", "Compte activé", "",
         "Parent de Lucas Étienne (CE2 de Mme Élise)", "01/09/2025"],
        ["Sansclasse", "Hugo", "Parent", "hugo.sansclasse", "CODE-hugo.sansclasse", "hugo@example.org",
         "Parent de Nina Sansclasse", "01/09/2025"],
    ]
    # The export is recorded, without any code.
    entry = db.session.execute(sa.select(AuditEntry)).scalar_one()
    assert entry.action == "csv" and entry.count == 5 and "CODE" not in entry.selection


def test_empty_selection_has_the_header_only(client: RoleClient, matrix: MatrixSchool) -> None:
    rows = read(client.get(f"{CSV}?profile=Guest&activation=active", "adml_a").data)
    assert len(rows) == 1


def test_formulas_are_neutralised(client: RoleClient, app_ctx: Flask) -> None:
    add_person("=cmd.evil", "=HYPERLINK(\"http://x\")", "+33 1 23", "ELEVE", email="@SUM(A1)")
    add_person("tab.evil", "\tTab", "-2+3", "ELEVE")
    add_person("semi;colon", "Jean;Pierre", "Du\r\nPont", "ELEVE")
    # Live formulas in LibreOffice Calc imported with "trim spaces": the latter
    # showed the login of the account on the row below.
    add_person("trim.rows", " =ROWS(A1:A9)", "Rows", "ELEVE")
    add_person("trim.link", "Link", " =HYPERLINK(D2)", "ELEVE")
    db.session.commit()
    rows = read(client.get(CSV, "adml_a").data)[1:]
    cells = [cell for row in rows for cell in row]
    assert "'+33 1 23" in cells
    assert "'=HYPERLINK(\"http://x\")" in cells
    assert "'=cmd.evil" in cells
    assert "'@SUM(A1)" in cells
    assert "'-2+3" in cells
    assert "'\tTab" in cells
    assert "' =ROWS(A1:A9)" in cells and "' =HYPERLINK(D2)" in cells
    assert "Jean;Pierre" in cells and "semi;colon" in cells and "Du\r\nPont" in cells
    assert not any(cell.strip()[:1] in ("=", "+", "-", "@") or cell[:1] in ("\t", "\r") for cell in cells)
    assert safe_cell("") == "" and safe_cell("Zoé") == "Zoé"


def test_viewer_may_not_export(client: RoleClient, matrix: MatrixSchool) -> None:
    assert client.get(CSV, "viewer_a").status_code == 403


def test_too_big(client: RoleClient, matrix: MatrixSchool, app: Flask) -> None:
    app.config["PUBLIPOSTAGE_MAX_SELECTION"] = 10
    response = client.get(CSV, "adml_a")
    assert response.status_code == 400
    assert "16 comptes" in response.data.decode()
    assert client.get(f"{CSV}?profile=Relative", "adml_a").status_code == 200


def test_an_export_writes_no_perimeter(client: RoleClient, matrix: MatrixSchool, app: Flask) -> None:
    """Its run is done as it starts and nothing drives it: the admin's perimeter,
    kept for the drivers of PDF files and campaigns, is not written (a row per
    account, deleted at once)."""
    with count_statements(app) as statements:
        response = client.get(CSV, "adml_a")
        assert response.status_code == 200 and len(read(response.data)) == 16 + 1
    assert [s for s in statements if "publipostage_run_perimeter" in s and s.lstrip().startswith("INSERT")] == []


def _bulk_pupils(n: int, start: int = 0) -> None:
    division = db.session.execute(sa.select(sa.func.min(inscription.c.division_ref))).scalar()
    now = datetime(2025, 9, 1, 8, 0)
    rows = [
        {
            "identifiant": f"eleve.{i:06d}", "prenom_usuel": f"Prénom{i % 97}", "nom_famille": f"Nom{i % 1013}",
            "categorie": "ELEVE", "adresse_mel": None, "jeton": f"C{i:08d}", "compte_ouvert": False,
            "cree_le": now, "referent": False, "super_admin": False, "ecole": "A",
        }
        for i in range(start, start + n)
    ]
    db.session.execute(sa.insert(Personne), rows)
    ids = db.session.execute(
        sa.select(Personne.uid).where(Personne.identifiant.in_([r["identifiant"] for r in rows]))
    ).scalars().all()
    db.session.execute(sa.insert(inscription), [{"personne_uid": uid, "division_ref": division} for uid in ids])
    db.session.commit()


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"PUBLIPOSTAGE_BATCH_SIZE": 500}


def _export_peak(client: RoleClient) -> tuple[int, int, int]:
    """(lines, chunks, peak traced memory) of one streamed export."""
    response = client.client.get(CSV, headers={"X-Test-User": "adml_a"}, buffered=False)
    assert response.status_code == 200 and response.is_streamed
    lines = chunks = 0
    tracemalloc.start()
    try:
        for chunk in response.response:
            chunks += 1
            lines += chunk.count(b"\r\n") if isinstance(chunk, bytes) else chunk.count("\r\n")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        response.close()
    return lines, chunks, peak


def test_streams_with_flat_memory(app_ctx: Flask, client: RoleClient, matrix: MatrixSchool) -> None:
    _bulk_pupils(4_000)
    small_lines, _chunks, small_peak = _export_peak(client)
    _bulk_pupils(36_000, start=4_000)
    lines, chunks, peak = _export_peak(client)
    assert small_lines == 4_000 + 16 + 1
    assert lines == 40_000 + 16 + 1
    assert chunks >= 40_000 // 500
    # What holding every row at once would cost, for comparison.
    with app_ctx.test_request_context("/", headers={"X-Test-User": "adml_a"}):
        selection = current_selection(())
        tracemalloc.start()
        try:
            everything = list(iter_recipients(selection))
            _current, held = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(everything) == 40_016
    del everything
    print(f"CSV peak: {small_peak / 2**20:.1f} MiB for 4,016 rows, {peak / 2**20:.1f} MiB for 40,016; "
          f"all rows held: {held / 2**20:.1f} MiB")
    # Ten times the rows, far less than ten times the memory (caches warm up once),
    # and a fraction of what holding the rows would take.
    assert peak < small_peak + 3 * 2**20, (small_peak, peak)
    assert peak < held / 3, (peak, held)
