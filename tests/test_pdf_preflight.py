"""Files a print shop's preflight accepts: ``qpdf --check`` finds no error,
``pdffonts`` finds every font embedded and each subset under a tag of its own,
a merged file carries each font once, and every file describes itself the same
way (title, author, subject, language, trailer /ID)."""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
import time
from typing import Any

import pytest
from pypdf import PdfReader

from .hosts import add_person, db
from .test_pdf_support import URL, add_class_of, page_count, pdftotext, post_pdf
from .tools import require_tool


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {
        "PUBLIPOSTAGE_JOB_BACKEND": "thread",
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 100,
        "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 20,
        "PUBLIPOSTAGE_PDF_WORKERS": 2,
    }


def tool_output(tool: str, package: str, data: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool(tool, package)
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(data)
        handle.flush()
        return subprocess.run([binary, *args, handle.name], capture_output=True, text=True)


def fonts_of(data: bytes) -> list[tuple[str, bool]]:
    """(name, embedded) of each font object, as pdffonts lists them."""
    result = tool_output("pdffonts", "poppler-utils", data)
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines()[2:]:
        columns = line.split()
        # name type [subtype...] encoding emb sub uni object-id generation
        rows.append((columns[0], columns[-5] == "yes"))
    return rows


def check_preflight(data: bytes) -> list[str]:
    """qpdf and pdffonts find nothing wrong; the font names."""
    checked = tool_output("qpdf", "qpdf", data, "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No syntax or stream encoding errors found" in checked.stdout
    assert "WARNING" not in checked.stdout + checked.stderr
    fonts = fonts_of(data)
    assert fonts, "no font at all"
    assert all(embedded for _name, embedded in fonts), fonts
    names = [name for name, _embedded in fonts]
    assert not any("Helvetica" in name for name in names), names
    tags = [name.split("+", 1)[0] for name in names if re.match(r"^[A-Z]{6}\+", name)]
    assert len(tags) == len(names), names  # every font a subset, tagged
    assert len(set(tags)) == len(tags), f"one tag for several subsets: {names}"
    return names


def description(data: bytes) -> tuple[Any, ...]:
    reader = PdfReader(io.BytesIO(data))
    info = reader.metadata
    assert info is not None
    file_id = reader.trailer.get("/ID")
    assert file_id is not None and len(file_id) == 2, "no trailer /ID"
    return (info.title, info.author, info.subject, reader.trailer["/Root"].get("/Lang"))


def background_file(client: Any, query: str, template: str = "letter") -> bytes:
    response = post_pdf(client, query, template=template)
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    job = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    deadline = time.monotonic() + 120
    while client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the background file never came"
        time.sleep(0.1)
    download = client.get(f"{URL}/pdf/jobs/{job}/download", "adml_a")
    assert download.status_code == 200
    return bytes(download.data)


def test_letters_cards_and_a_merged_file_pass_the_preflight(app: Any, client: Any) -> None:
    with app.app_context():
        small, _ = add_class_of("CP Vert", 40, prefix="cp", activated_every=5)
        big, _ = add_class_of("CM2 Rouge", 300, prefix="cm", activated_every=7)
        # A rarer name in a chunk of its own: its subset differs from the others'.
        add_person("rare.name", "Ştefan", "Nguyễn Łukasz", "ELEVE", divisions=[big])
        db.session.commit()
        small_id, big_id = small.ref, big.ref

    letter = post_pdf(client, f"class={small_id}").data
    cards = post_pdf(client, f"class={small_id}", template="cards").data
    merged = background_file(client, f"class={big_id}")
    assert page_count(merged) == 301

    for data in (letter, cards, merged):
        check_preflight(data)
    # Each font once in the merged file of 16 chunks, plus what the rarer name adds.
    names = check_preflight(merged)
    per_font: dict[str, int] = {}
    for name in names:
        per_font[name.split("+", 1)[1]] = per_font.get(name.split("+", 1)[1], 0) + 1
    assert all(count <= 3 for count in per_font.values()), names
    assert "Ştefan" in pdftotext(merged) and "Nguyễn" in pdftotext(merged)

    # The same description whether made in the request or in the background.
    described = {description(data) for data in (letter, cards, merged)}
    assert described == {("Publipostage des comptes – École A", "ENT Test",
                          "Identifiants et codes d'activation des comptes ENT Test", "fr-FR")}


def test_a_background_file_weighs_per_page_what_a_request_file_does(app: Any, client: Any) -> None:
    with app.app_context():
        big, _ = add_class_of("6e B", 400, prefix="sx", activated_every=9)
        small, _ = add_class_of("6e C", 100, prefix="tx", activated_every=9)
        db.session.commit()
        big_id, small_id = big.ref, small.ref
    made_in_request = post_pdf(client, f"class={small_id}")  # the sync limit: 100
    assert made_in_request.status_code == 200
    request_data = bytes(made_in_request.data)
    merged = background_file(client, f"class={big_id}")  # 20 chunks
    per_page_request = len(request_data) / page_count(request_data)
    per_page_merged = len(merged) / page_count(merged)
    assert per_page_merged <= 1.2 * per_page_request, (per_page_merged, per_page_request)
