"""The sign-off sheet ("liste d'émargement") read back from the PDF: the columns
a class needs on paper, every name and login whole, a wide column to sign."""

from __future__ import annotations

import os
from typing import Any

from .hosts import Division, add_person, db
from .test_pdf_support import page_count, pages_text, post_pdf, word_boxes

LONG_LOGIN = "marie-chantal.de-la-tour-dauvergne-saint-exupery.2025"
LONG_LAST = "de la Tour d’Auvergne-Saint-Exupéry-Montmorency-Laval"
LONG_FIRST = "Marie-Chantal Bérénice Anne-Sophie"


def _class_with_family() -> None:
    # Marie's first class in school order is her daughter's CM1: she signs there.
    cm1 = Division(libelle="CM1 Émargement", ecole="A")
    other = Division(libelle="CM2 Ailleurs", ecole="A")
    db.session.add_all([cm1, other])
    zoe = add_person("zoe.abel", "Zoé", "Abel", "ELEVE", divisions=[cm1])
    paul = add_person("paul.abel", "Paul", "Abel", "ELEVE", divisions=[other])
    add_person("marie.abel", "Marie", "Abel", "PARENT", enfants=[zoe, paul])
    add_person(LONG_LOGIN, LONG_FIRST, LONG_LAST, "ELEVE", divisions=[cm1], token="LONGCODE")
    add_person("emile.petit", "Émile", "Petit", "ELEVE", divisions=[cm1])
    db.session.commit()


def _signoff_page(client: Any) -> tuple[bytes, list[Any]]:
    response = post_pdf(client, "sort=class", signoff="y")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    data = response.data
    if os.environ.get("PUBLIPOSTAGE_TEST_KEEP"):
        with open(os.path.join(os.environ["PUBLIPOSTAGE_TEST_KEEP"], "signoff.pdf"), "wb") as out:
            out.write(data)
    boxes = word_boxes(data)
    texts = pages_text(data)
    index = next(i for i, t in enumerate(texts) if "Liste d'émargement" in t and "CM1 Émargement" in t)
    return data, boxes[index]


def _column(words: list[Any], left: float, right: float) -> str:
    """The text of a table column, read down: a line ending with a separator goes
    on without a space (a wrapped name or login)."""
    text = ""
    for word in sorted((w for w in words if left - 1 <= w.x0 and w.x1 <= right), key=lambda w: (round(w.y0), w.x0)):
        text += word.text if not text or text[-1] in "-.’" or word.text[0] in "-." else " " + word.text
    return text


def test_signoff_columns_and_whole_names(app_ctx: Any, client: Any) -> None:
    _class_with_family()
    data, words = _signoff_page(client)
    headers = {w.text: w for w in words if w.text in ("Nom", "Prénom", "Profil", "Identifiant", "Signature")}
    assert set(headers) == {"Nom", "Prénom", "Profil", "Identifiant", "Signature"}
    assert not any(w.text == "Date" for w in words)
    # Left to right in that order, and the signature column is the widest (≥ 40 mm).
    names = ("Nom", "Prénom", "Profil", "Identifiant", "Signature")
    lefts = [headers[k].x0 for k in names]
    assert lefts == sorted(lefts)
    widths = [b - a for a, b in zip(lefts, [*lefts[1:], 193.0])]
    assert widths[-1] >= 40 and widths[-1] == max(widths), widths
    body = [w for w in words if w.y0 > headers["Nom"].y1]
    columns = {k: _column(body, left, right) for k, left, right in zip(names, lefts, [*lefts[1:], 194.0])}
    # Nothing is written in the signature column, nothing is cut.
    assert columns["Signature"] == ""
    assert "…" not in "".join(w.text for w in words)
    # Names and logins whole, wrapped in their columns (the long login on several lines).
    assert columns["Nom"] == f"Abel Abel {LONG_LAST} Petit"
    assert columns["Prénom"] == f"Marie Zoé {LONG_FIRST} Émile"
    assert columns["Identifiant"] == f"marie.abel zoe.abel {LONG_LOGIN} emile.petit"
    login_lines = {round(w.y0) for w in body if w.text in LONG_LOGIN and len(w.text) > 3}
    assert len(login_lines) >= 3
    # Profile: the pupils' profile, and for a parent the child of this class.
    assert columns["Profil"] == "Parent de Zoé Abel Élève Élève Élève"
    assert page_count(data) == 5 + 1 + 1  # 5 letters, a sheet for each class


def test_wrapped_rows_never_overflow_the_page(app_ctx: Any, client: Any) -> None:
    """Twenty rows of four lines do not fit one page: the list goes on the next
    one, each page whole, each login once."""
    cls = Division(libelle="CE2 Longs", ecole="A")
    db.session.add(cls)
    logins = [f"{i:02d}-eleve.au-nom-tres-long-{i:02d}.de-la-classe" for i in range(20)]
    for i, login in enumerate(logins):
        add_person(login, f"Anne-Sophie-{i:02d} Marie-Chantal", LONG_LAST, "ELEVE", divisions=[cls], token=f"CODE{i}")
    db.session.commit()
    response = post_pdf(client, "sort=class", signoff="y")
    assert response.status_code == 200
    if os.environ.get("PUBLIPOSTAGE_TEST_KEEP"):
        with open(os.path.join(os.environ["PUBLIPOSTAGE_TEST_KEEP"], "signoff-long.pdf"), "wb") as out:
            out.write(response.data)
    texts = pages_text(response.data)
    boxes = word_boxes(response.data)
    sheets = [i for i, t in enumerate(texts) if "Liste d'émargement" in t]
    assert len(sheets) >= 2 and sheets == list(range(len(sheets)))
    assert len(texts) == len(sheets) + 20
    listed = ""
    for index in sheets:
        assert all(w.y1 <= 285 for w in boxes[index])  # inside the page's bottom margin
        assert f"page {sheets.index(index) + 1}/{len(sheets)}" in texts[index]
        header = next(w for w in boxes[index] if w.text == "Identifiant")
        signature = next(w for w in boxes[index] if w.text == "Signature")
        listed += " " + _column([w for w in boxes[index] if w.y0 > header.y1], header.x0, signature.x0 - 1)
    assert listed.split() == logins
