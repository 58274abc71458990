"""Large PDFs: the background job (chunks in worker processes, merged), its
progress, cancel, download for its owner only, expiry and the purge command."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from flask_publipostage.audit import AuditEntry
from flask_publipostage.models import utcnow
from flask_publipostage.runs import files
from flask_publipostage.runs.models import Run, RunItem

from .hosts import db
from .test_pdf_support import URL, add_class_of, page_count, pdftotext, post_pdf


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {
        "PUBLIPOSTAGE_JOB_BACKEND": "thread",
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 20,
        "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 96,
        "PUBLIPOSTAGE_PDF_WORKERS": 2,
    }


def _wait(client: Any, job_id: str, role: str = "adml_a", timeout: float = 60) -> list[dict[str, Any]]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"{URL}/pdf/jobs/{job_id}/status", role).get_json()
        seen.append(status)
        if status["state"] not in ("queued", "running"):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"job still {seen[-1]} after {timeout} s")


def run_of(job_id: str) -> Run:
    db.session.expire_all()
    return db.session.execute(sa.select(Run).where(Run.token == job_id)).scalar_one()


def _job_id(response: Any) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]


def test_thousand_accounts_in_the_background(app: Any, client: Any) -> None:
    sizes = {"CP Vert": 333, "CE1 Bleu": 412, "CM2 Rouge": 255}
    with app.app_context():
        for index, (name, size) in enumerate(sizes.items()):
            add_class_of(name, size, prefix=f"{chr(97 + index)}x", activated_every=7)
        db.session.commit()

    response = post_pdf(client, "sort=class&activation=all", template="cards")
    job_id = _job_id(response)
    page = client.get(f"{URL}/pdf/jobs/{job_id}", "adml_a")
    assert page.status_code == 200
    assert "refresh" in page.get_data(as_text=True) or "Télécharger" in page.get_data(as_text=True)

    # Another admin, even of the same rank, never sees it.
    assert client.get(f"{URL}/pdf/jobs/{job_id}", "adml_b").status_code == 404
    assert client.get(f"{URL}/pdf/jobs/{job_id}/status", "adml_b").status_code == 404
    assert client.get(f"{URL}/pdf/jobs/{job_id}/status", "super").status_code == 404
    # Without the "print" capability: refused before anything is looked up.
    assert client.get(f"{URL}/pdf/jobs/{job_id}", "viewer_a").status_code == 403
    assert client.get(f"{URL}/pdf/jobs/{job_id}/status", None).status_code == 401

    seen = _wait(client, job_id)
    final = seen[-1]
    assert final["state"] == "done", final
    expected_pages = sum(math.ceil(n / 8) for n in sizes.values())
    assert final["pages_total"] == final["pages_done"] == expected_pages
    # Progress was observed on the way (chunks finish one after the other).
    assert any(0 < s["pages_done"] < s["pages_total"] for s in seen), seen[:5]

    assert client.get(f"{URL}/pdf/jobs/{job_id}/download", "adml_b").status_code == 404
    with client.get(final["download_url"], "adml_a") as download:
        assert download.status_code == 200
        assert download.headers["Content-Disposition"].startswith("attachment; filename=\"publipostage_")
        data = download.get_data()
    texts = pdftotext(data).split("\f")[:-1]
    assert len(texts) == page_count(data) == expected_pages
    found = Counter(re.findall(r"(?<![\w-])[abc]x\d{4}\b", "\n".join(texts)))
    logins = [f"{chr(97 + i)}x{n:04d}" for i, size in enumerate(sizes.values()) for n in range(size)]
    assert set(found) == set(logins) and set(found.values()) == {1}
    # Groups in school order (CP < CE1 < CM2), each starting on its own sheet,
    # accounts in order within them.
    first_pages = [0, math.ceil(333 / 8), math.ceil(333 / 8) + math.ceil(412 / 8)]
    for start, name in zip(first_pages, ("CP Vert", "CE1 Bleu", "CM2 Rouge")):
        assert name in texts[start]
        assert not start or name not in texts[start - 1]
    order = [m.group(0) for m in re.finditer(r"(?<![\w-])[abc]x\d{4}\b", "\n".join(texts))]
    assert order == sorted(order)

    # The file is deleted once downloaded, the work files too; each account keeps
    # its record: printed, as a card, never with its code.
    with app.app_context():
        job = run_of(job_id)
        assert job.file_path is None and job.downloaded_at is not None
        items = db.session.execute(sa.select(RunItem).where(RunItem.run_id == job.id)).scalars().all()
        assert len(items) == 1000 and {(i.kind, i.state) for i in items} == {("card", "printed")}
        assert all(i.done_at is not None for i in items)
        assert not list(files.storage_dir().iterdir())
        audit = db.session.query(AuditEntry).filter_by(action="pdf").one()
        assert audit.count == 1000 and audit.template == "cards" and audit.actor == "adml_a"
    again = client.get(f"{URL}/pdf/jobs/{job_id}/download", "adml_a")
    assert again.status_code == 410
    assert "plus disponible" in again.get_data(as_text=True)


def test_cancel_stops_the_job(app: Any, client: Any) -> None:
    with app.app_context():
        add_class_of("CM1 Long", 150, prefix="cx")
        db.session.commit()
    job_id = _job_id(post_pdf(client, "sort=class"))
    viewer = client.post(f"{URL}/pdf/jobs/{job_id}/cancel", "adml_b")
    assert viewer.status_code == 404
    response = client.post(f"{URL}/pdf/jobs/{job_id}/cancel", "adml_a")
    assert response.status_code == 303
    seen = _wait(client, job_id)
    assert seen[-1]["state"] == "cancelled"
    assert seen[-1]["download_url"] is None
    # Let the runner finish its clean-up, then nothing is left on disk.
    app.extensions["publipostage"].runner.shutdown(wait=True)
    with app.app_context():
        assert not list(files.storage_dir().iterdir())
        # Nothing was printed: no account is recorded as printed.
        assert "printed" not in set(db.session.execute(sa.select(RunItem.state)).scalars())
    page = client.get(f"{URL}/pdf/jobs/{job_id}", "adml_a").get_data(as_text=True)
    assert "annulé" in page


def test_expired_files_are_purged(app: Any, client: Any) -> None:
    with app.app_context():
        add_class_of("CP Court", 30, prefix="ex")
        db.session.commit()
    job_id = _job_id(post_pdf(client, "", template="cards"))
    assert _wait(client, job_id)[-1]["state"] == "done"
    with app.app_context():
        job = run_of(job_id)
        path = Path(job.file_path)
        assert path.exists()
        stray = files.storage_dir() / "orphan.pdf"
        stray.write_bytes(b"%PDF-1.4 leftover")
        job.finished_at = utcnow() - timedelta(hours=3)
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["publipostage", "purge-files"])
    assert result.exit_code == 0, result.output
    assert "2 fichiers supprimés" in result.output
    assert not path.exists() and not stray.exists()
    page = client.get(f"{URL}/pdf/jobs/{job_id}", "adml_a").get_data(as_text=True)
    assert "a été supprimé" in page
    listing = client.get(f"{URL}/pdf/jobs", "adml_a")
    assert listing.status_code == 200 and "expiré" in listing.get_data(as_text=True)
    assert "<li>" not in client.get(f"{URL}/pdf/jobs", "adml_b").get_data(as_text=True)
