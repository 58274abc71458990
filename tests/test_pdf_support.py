"""Shared helpers of the PDF tests (no test here): text per page (pypdf), word boxes
(pdftotext -bbox) and image boxes (pypdf), in millimetres from the top-left corner,
and the QR codes a real reader decodes on the pages (pdftoppm, then zbarimg).

The programs come from Debian's poppler-utils and zbar-tools, found by
:func:`tests.tools.require_tool` (a skip, or a failure in CI)."""

from __future__ import annotations

import html
import io
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pypdf import PdfReader

from .hosts import Division, Personne, add_person, db
from .tools import require_tool

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
    require_tool("pdftotext", "poppler-utils")
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
    require_tool("pdftotext", "poppler-utils")
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(data)
        handle.flush()
        return subprocess.run(
            ["pdftotext", "-layout", handle.name, "-"], capture_output=True, text=True, check=True
        ).stdout


def image_boxes(data: bytes) -> list[list[Word]]:
    """The images each page draws, as boxes in mm (``text`` empty): where the
    content stream's ``Do`` puts them (the unit square through the current matrix);
    the QR codes of stamped letters and cards too, forms drawn as squares
    (:func:`flask_publipostage.pdf.stamp._qr`)."""
    pages: list[list[Word]] = []
    for page in PdfReader(io.BytesIO(data)).pages:
        height = float(page.mediabox.height)
        boxes: list[Word] = []
        images = _image_names(page.get("/Resources"))

        def visit(operator: bytes, operands: Any, cm: Any, _tm: Any, height: float = height, boxes: list[Word] = boxes,
                  images: set[str] = images) -> None:
            if operator == b"Do" and str(operands[0]) in images:
                a, _b, _c, d, e, f = (float(v) for v in cm)
                x0, x1 = sorted((e, e + a))
                y0, y1 = sorted((height - f - d, height - f))
                boxes.append(Word("", x0 * PT_TO_MM, y0 * PT_TO_MM, x1 * PT_TO_MM, y1 * PT_TO_MM))

        page.extract_text(visitor_operand_before=visit)
        pages.append(boxes)
    return pages


def _image_names(resources: Any, depth: int = 0) -> set[str]:
    """The names of the image XObjects of ``resources`` and of the forms it holds
    (and of the stamped QR codes' forms)."""
    found: set[str] = set()
    if resources is None or depth > 4:
        return found
    xobjects = resources.get_object().get("/XObject")
    for name, value in (xobjects.get_object().items() if xobjects is not None else []):
        target = value.get_object()
        if target.get("/Subtype") == "/Image" or str(name).startswith("/FormXob.ppqr"):
            found.add(str(name))
        elif target.get("/Subtype") == "/Form":
            found |= _image_names(target.get("/Resources"), depth + 1)
    return found


def overlaps(a: Word, b: Word) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


#: Resolution the pages are rendered at for the QR reader: a module of a card's
#: code is then about 3.5 pixels.
QR_DPI = 150


def page_images(data: bytes, directory: str) -> list[Any]:
    """Each page as a PIL image (``pdftoppm -png``, ``QR_DPI``)."""
    from PIL import Image

    pdftoppm = require_tool("pdftoppm", "poppler-utils")
    path = os.path.join(directory, "document.pdf")
    with open(path, "wb") as handle:
        handle.write(data)
    subprocess.run([pdftoppm, "-png", "-r", str(QR_DPI), path, os.path.join(directory, "page")], check=True)
    names = sorted(n for n in os.listdir(directory) if n.startswith("page") and n.endswith(".png"))
    return [Image.open(os.path.join(directory, name)) for name in names]


def read_qr_codes(image: Any, box_mm: tuple[float, float, float, float] | None = None) -> list[str]:
    """Every QR code zbarimg decodes in ``image`` (or in its ``box_mm``: left, top,
    right, bottom), as text, in reading order."""
    zbarimg = require_tool("zbarimg", "zbar-tools")
    if box_mm is not None:
        image = image.crop(tuple(round(v / 25.4 * QR_DPI) for v in box_mm))
    with tempfile.NamedTemporaryFile(suffix=".png") as handle:
        image.save(handle.name)
        found = subprocess.run(
            [zbarimg, "--quiet", "--raw", "--nodbus", "-Sdisable", "-Sqrcode.enable", handle.name],
            capture_output=True,
            text=True,
        )
    if found.returncode == 4:  # no code found
        return []
    assert found.returncode == 0, found.stderr
    return found.stdout.splitlines()


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
    done = core.get(run.id)
    return files.claim_download(done, core.frozen_scope(done)).read_bytes()


def post_pdf(client: Any, query: str, role: str = "adml_a", **data: Any) -> Any:
    form = {"template": "letter"}
    form.update({k: v for k, v in data.items() if v is not None})
    return client.post(f"{URL}/pdf?{query}", role, data=form)
