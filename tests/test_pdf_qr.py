"""A QR code on every letter and every card, read back as a phone would: the pages
rendered to PNG (pdftoppm) and every code decoded by a real reader (zbarimg). One
code per account, leading to that account's page, never carrying the activation
code unless the host asked; on a card, in its corner, clear of every word."""

from __future__ import annotations

import re
import tempfile
from typing import Any
from urllib.parse import quote

import pytest

from flask_publipostage.config import EntLinks
from flask_publipostage.pdf.render import CARD_QR, CARD_STEP_X, CARD_STEP_Y, CARD_TOP, CARDS_PER_PAGE

from .hosts import Division, Personne, add_person, db
from .test_pdf_support import (
    Word,
    image_boxes,
    overlaps,
    page_images,
    pages_text,
    post_pdf,
    read_qr_codes,
    word_boxes,
)

#: The cards' page margins (document.html): the grid starts there.
CARDS_MARGIN = 8.0


def _pdf(response: Any) -> bytes:
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    assert response.mimetype == "application/pdf"
    return bytes(response.data)


def _cells() -> list[tuple[float, float, float, float]]:
    """The eight cells of a sheet of cards (left, top, right, bottom in mm), the cut lines around each."""
    cells = []
    for slot in range(CARDS_PER_PAGE):
        left = CARDS_MARGIN + (slot % 2) * CARD_STEP_X
        top = CARDS_MARGIN + CARD_TOP + (slot // 2) * CARD_STEP_Y
        cells.append((left, top, left + CARD_STEP_X, top + CARD_STEP_Y))
    return cells


def _inside(word: Word, cell: tuple[float, float, float, float]) -> bool:
    left, top, right, bottom = cell
    return left <= word.x0 and word.x1 <= right and top <= word.y0 and word.y1 <= bottom


def _class_of_eleven() -> list[Personne]:
    """Pupils and a parent of one class, three of them activated: a sheet and a half of cards."""
    cls = Division(libelle="CE1 QR", ecole="A")
    db.session.add(cls)
    pupils = [
        add_person(f"eleve.qr{i:02d}", f"Prénom{i:02d}", "Lecteur", "ELEVE", divisions=[cls], activated=i % 4 == 0)
        for i in range(10)
    ]
    parent = add_person("parent.qr+1", "Zoé", "Lecteur", "PARENT", enfants=pupils[:2])
    db.session.commit()
    return [*pupils, parent]


def _expected(person: Personne, params: str | None) -> str:
    """What the account's code must lead to, by the letters' rule."""
    links = EntLinks.from_config()
    if person.compte_ouvert:
        url = links.reset_url
        if params and "{code}" not in params:
            url += params.format(login=quote(person.identifiant, safe=""), code="")
        return url
    url = links.activation_url
    if params:
        url += params.format(login=quote(person.identifiant, safe=""), code=quote(person.jeton or "", safe=""))
    return url


def _card_codes(data: bytes) -> list[tuple[str, list[str]]]:
    """For every card: (the login printed on it, the QR codes decoded in its cell)."""
    found = []
    with tempfile.TemporaryDirectory() as directory:
        images = page_images(data, directory)
        for image, words in zip(images, word_boxes(data), strict=True):
            for cell in _cells():
                inside = [w for w in words if _inside(w, cell)]
                label = next((w for w in inside if w.text == "Identifiant"), None)
                if label is None:
                    assert read_qr_codes(image, cell) == [], "a code without a card"
                    continue
                # The login: the lines between "Identifiant :" and the next label.
                after = min(w.y0 for w in inside if w.text in ("Code", "Compte") and w.y0 > label.y1)
                login = sorted((round(w.y0, 1), w.x0, w.text) for w in inside if label.y1 <= w.y0 and w.y1 <= after)
                found.append(("".join(text for _y, _x, text in login), read_qr_codes(image, cell)))
    return found


@pytest.mark.parametrize("params", [None, "?login={login}", "?login={login}&code={code}"])
def test_every_card_and_letter_leads_to_its_accounts_page(app_ctx: Any, client: Any, params: str | None) -> None:
    people = _class_of_eleven()
    app_ctx.config["PUBLIPOSTAGE_PDF_QR_PARAMS"] = params
    expected = {p.identifiant: _expected(p, params) for p in people}
    if params is None:  # the code never goes in unless the host put it there
        assert set(expected.values()) == {"https://ent.test.example/auth/activation", "https://ent.test.example/auth/forgot"}
    elif "{code}" in params:
        assert expected["eleve.qr01"].endswith("?login=eleve.qr01&code=CODE-eleve.qr01")
        assert expected["eleve.qr00"] == "https://ent.test.example/auth/forgot"  # activated: no code to give
    else:
        assert expected["parent.qr+1"].endswith("?login=parent.qr%2B1")

    # Cards: one code in each card's cell, leading to that card's account.
    cards = _pdf(post_pdf(client, "sort=class", template="cards"))
    assert len(pages_text(cards)) == 2
    printed = _card_codes(cards)
    assert sorted(login for login, _codes in printed) == sorted(expected)
    for login, codes in printed:
        assert codes == [expected[login]], login

    # Letters: one code a page, the page's account's.
    letters = _pdf(post_pdf(client, "sort=class"))
    texts = pages_text(letters)
    assert len(texts) == len(people)
    with tempfile.TemporaryDirectory() as directory:
        for text, image in zip(texts, page_images(letters, directory), strict=True):
            (login,) = [p.identifiant for p in people if re.search(rf"(?<![\w.+]){re.escape(p.identifiant)}(?![\w.+])", text)]
            assert read_qr_codes(image) == [expected[login]], login


def test_no_code_when_the_host_turns_them_off(app_ctx: Any, client: Any) -> None:
    _class_of_eleven()
    app_ctx.config["PUBLIPOSTAGE_PDF_QR_CODE"] = False
    for template in ("cards", "letter"):
        data = _pdf(post_pdf(client, "", template=template))
        assert image_boxes(data) == [[] for _page in pages_text(data)]
        with tempfile.TemporaryDirectory() as directory:
            assert [read_qr_codes(image) for image in page_images(data, directory)] == [[] for _page in pages_text(data)]


LONG_FIRST = "Marie-Chantal Bérénice Anne-Sophie Éléonore"
LONG_LAST = "de la Tour d’Auvergne-Saint-Exupéry de Montmorency-Laval et Rohan-Chabot-Gué"
#: As long as a card's line holds.
LONG_LOGIN = "marie-chantal.de-la-tour-dauvergne-sai"


def test_a_cards_code_sits_in_its_corner_clear_of_every_word(app_ctx: Any, client: Any) -> None:
    """The longest data the other tests print (a 120-character name, a parent of
    five children in long-named classes, a 40-character login, a 38-character
    one under four lines of name and children, a 28-character one): each card's
    code is in its bottom-right corner, no word touches it, the logins print whole
    (on one line those that took one before) and the first names as before."""
    classes = [Division(libelle=f"Classe numéro {i} de Mme Longuenom-Interminable", ecole="A") for i in range(5)]
    db.session.add_all(classes)
    kids = [
        add_person(f"kid{i}", f"Enfant{i} Prénom-Composé-Très-Long", "Descendant-Nombreux", "ELEVE", divisions=[classes[i]])
        for i in range(5)
    ]
    add_person(LONG_LOGIN, LONG_FIRST, LONG_LAST, "PARENT", enfants=kids, token="LONGCODE")
    add_person("x" * 40, "W" * 120, "W" * 120, "ELEVE", token="WIDECODE", divisions=classes[:1])
    add_person("marie-chantal.de-montmorency", "Marie-Chantal", "de Montmorency", "ELEVE", activated=True)
    db.session.commit()
    logins = {LONG_LOGIN, "x" * 40, "marie-chantal.de-montmorency", *(f"kid{i}" for i in range(5))}

    cards = _pdf(post_pdf(client, "", template="cards"))
    (words,) = word_boxes(cards)
    (images,) = image_boxes(cards)
    assert len(images) == len(logins)
    occupied = [cell for cell in _cells() if any(w.text == "Identifiant" and _inside(w, cell) for w in words)]
    assert len(occupied) == len(logins)
    for cell, qr in zip(occupied, sorted(images, key=lambda b: (round(b.y0), b.x0)), strict=True):
        left, top, right, bottom = cell
        # The corner: about CARD_QR mm square, at the card's right and bottom, inside the cut lines.
        assert abs((qr.x1 - qr.x0) - CARD_QR) < 0.5 and abs((qr.y1 - qr.y0) - CARD_QR) < 0.5, qr
        assert right - 10 < qr.x1 < right and bottom - 6 < qr.y1 < bottom, (cell, qr)
    for word in words:
        for qr in images:
            assert not overlaps(word, qr), (word, qr)

    one_line = {w.text for w in words}
    assert LONG_LOGIN in one_line and "marie-chantal.de-montmorency" in one_line
    printed = _card_codes(cards)
    assert {login for login, _codes in printed} == logins  # every login whole
    assert all(len(codes) == 1 for _login, codes in printed)
    text = re.sub(r"\s+", "", "".join(pages_text(cards)))
    assert re.sub(r"\s+", "", LONG_FIRST) in text and "LONGCODE" in text and "WIDECODE" in text
