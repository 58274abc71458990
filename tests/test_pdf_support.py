"""Shared helpers of the PDF tests (no test here): text per page (pypdf) and word boxes
(pdftotext -bbox, in millimetres from the top-left corner)."""

from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from pypdf import PdfReader

from .hosts import Division, Personne, add_person, db

PT_TO_MM = 25.4 / 72
URL = "/imports-exports/publipostage"


def pages_text(data: bytes) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]


def page_count(data: bytes) -> int:
    return len(PdfReader(io.BytesIO(data)).pages)


def count_word(text: str, word: str) -> int:
    """Occurrences of ``word`` not glued to another login-like token."""
    return len(re.findall(rf"(?<![\w.\-]){re.escape(word)}(?![\w.\-])", text))


@dataclass
class Word:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float


def word_boxes(data: bytes) -> list[list[Word]]:
    """Words of each page with their boxes in mm (pdftotext -bbox)."""
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(data)
        handle.flush()
        out = subprocess.run(
            ["pdftotext", "-bbox", handle.name, "-"], capture_output=True, text=True, check=True
        ).stdout
    pages: list[list[Word]] = []
    for chunk in out.split("<page ")[1:]:
        words = []
        for m in re.finditer(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', chunk
        ):
            x0, y0, x1, y1 = (float(m.group(i)) * PT_TO_MM for i in range(1, 5))
            words.append(Word(html.unescape(m.group(5)), x0, y0, x1, y1))
        pages.append(words)
    return pages


def pdftotext(data: bytes) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(data)
        handle.flush()
        return subprocess.run(
            ["pdftotext", "-layout", handle.name, "-"], capture_output=True, text=True, check=True
        ).stdout


def add_class_of(name: str, size: int, *, school: str = "A", prefix: str = "p", activated_every: int = 0) -> tuple[Division, list[Personne]]:
    """A class with ``size`` pupils named so their order is known (prefix + number)."""
    division = Division(libelle=name, ecole=school)
    db.session.add(division)
    people = []
    for i in range(size):
        people.append(
            add_person(
                f"{prefix}{i:04d}",
                f"Prénom{i:04d}",
                f"{prefix.upper()}Nom{i:04d}",
                "ELEVE",
                school=school,
                divisions=[division],
                activated=bool(activated_every) and i % activated_every == 0,
                created=datetime(2025, 9, 1, 8, 0),
            )
        )
    return division, people


def pdf_of(selection: Any, options: Any) -> bytes:
    """The PDF of ``selection``, through the one pipeline (a run driven here)."""
    from flask_publipostage.pdf import pipeline
    from flask_publipostage.runs import core, files

    run, _created = pipeline.start(selection, options, inline=True)
    core.drive(run.id)
    return files.claim_download(core.get(run.id)).read_bytes()


def post_pdf(client: Any, query: str, role: str = "adml_a", **data: Any) -> Any:
    form = {"template": "letter"}
    form.update({k: v for k, v in data.items() if v is not None})
    return client.post(f"{URL}/pdf?{query}", role, data=form)
