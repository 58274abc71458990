"""Names print as written, or the admin is told before printing: fullwidth forms
folded (NFKC), Chinese and Korean set in the fallback font (read back: the text and
the font that drew it), a page listing the names that would still print as boxes,
and a 120-character name whole on a letter."""

from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from werkzeug.datastructures import MultiDict

from flask_publipostage.audit import AuditEntry
from flask_publipostage.config import DEFAULTS
from flask_publipostage.pdf import fonts
from flask_publipostage.runs.models import Run

from .hosts import Division, add_person, db
from .test_pdf_support import URL, add_class_of, page_count, pages_text, pdftotext, post_pdf, word_boxes

FALLBACKS = fonts.fallback_fonts(DEFAULTS["PDF_FALLBACK_FONTS"])
needs_fallback = pytest.mark.skipif(
    not FALLBACKS, reason="no fallback font installed (Debian: apt-get install fonts-droid-fallback)"
)

#: (login, first name, last name): what DejaVu lacks but the fallback draws.
CJK = [("wang.xiaoming", "小明", "王"), ("kim.minjun", "민준", "김")]
#: Ethiopic: no font here draws it.
NOWHERE = ("abebe.bikila", "ሰላም", "Bikila")


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def text_fonts(data: bytes) -> list[tuple[str, str]]:
    """(text, base font) of every piece of text the PDF draws."""
    pieces: list[tuple[str, str]] = []

    def visit(text: str, _cm: Any, _tm: Any, font: Any, _size: Any) -> None:
        if text.strip() and font is not None:
            pieces.append((text, str(font.get("/BaseFont", ""))))

    for page in PdfReader(io.BytesIO(data)).pages:
        page.extract_text(visitor_text=visit)
    return pieces


def font_of(data: bytes, *needles: str) -> set[str]:
    """The fonts that drew each of ``needles`` (subset prefixes dropped)."""
    found = set()
    for needle in needles:
        fonts_here = {font.split("+")[-1] for text, font in text_fonts(data) if needle in text}
        assert fonts_here, needle
        found |= fonts_here
    return found


def embedded_fonts(data: bytes) -> set[str]:
    if shutil.which("pdffonts") is None:
        pytest.skip("pdffonts (poppler-utils) is not installed")
    with tempfile.NamedTemporaryFile(suffix=".pdf") as handle:
        handle.write(data)
        handle.flush()
        out = subprocess.run(["pdffonts", handle.name], capture_output=True, text=True, check=True).stdout
    return {line.split()[0].split("+")[-1] for line in out.splitlines()[2:] if " yes " in line}


def _pdf(response: Any) -> bytes:
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    assert response.mimetype == "application/pdf", response.get_data(as_text=True)[:800]
    return bytes(response.data)


def _family() -> None:
    """A class with a fullwidth name, Chinese and Korean names, and a parent of one."""
    cls = Division(libelle="CE2 Monde", ecole="A")
    db.session.add(cls)
    add_person("full.width", "Ｆｕｌｌ", "Ｗｉｄｔｈ", "ELEVE", divisions=[cls])
    kids = [add_person(login, first, last, "ELEVE", divisions=[cls]) for login, first, last in CJK]
    add_person("li.parent", "Mei", "Li", "PARENT", enfants=kids[:1])
    add_person("plain.name", "Jean", "Dupont", "ELEVE", divisions=[cls])
    db.session.commit()


# -- folded and drawn -----------------------------------------------------------------------


@needs_fallback
@pytest.mark.parametrize("template", ["letter", "cards"])
def test_fullwidth_folds_and_cjk_prints_in_the_fallback_font(app_ctx: Any, client: Any, template: str) -> None:
    _family()
    data = _pdf(post_pdf(client, "", template=template))  # no warning: every name can be drawn
    text = pdftotext(data)
    assert "Full Width" in text and "Ｆ" not in text
    for _login, first, last in CJK:
        assert f"{first} {last}" in text
    parent = next(page for page in text.split("\f") if "li.parent" in page)
    assert "Parent de" in parent and "小明王(CE2Monde)" in _squeeze(parent)
    # Drawn by a font that has these glyphs, embedded in the file.
    assert font_of(data, *"小明王민준김") == {"DroidSansFallback"}
    assert font_of(data, "Full") <= {"DejaVuSans-Bold", "DejaVuSans"}
    assert "DroidSansFallback" in embedded_fonts(data)


@needs_fallback
def test_fallback_fonts_declared_only_where_used(app_ctx: Any, client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A declared font is loaded by the renderer (0.3 s) even unused: a document
    without such names does not declare the fallback font, nor may read it."""
    from flask_publipostage.pdf import worker

    rendered: list[tuple[str, tuple[str, ...]]] = []
    original = worker.render_file

    def spy(html_text: str, path: str, roots: Any) -> str:
        rendered.append((html_text, tuple(roots)))
        return original(html_text, path, roots)

    monkeypatch.setattr(worker, "render_file", spy)
    # Letters laid out whole: a stamped letter's layout holds markers, never a name.
    app_ctx.config["PUBLIPOSTAGE_PDF_STAMP"] = False
    add_person("plain.one", "Jean", "Dupont", "ELEVE")
    db.session.commit()
    data = _pdf(post_pdf(client, ""))
    assert "DroidSansFallback" not in embedded_fonts(data)
    (plain, roots), = rendered
    assert "PPFallback" not in plain and "@font-face" in plain
    assert set(FALLBACKS) <= set(roots)  # the policy lets the renderer read them, nothing else
    add_person("wang.xiaoming", "小明", "王", "ELEVE")
    db.session.commit()
    _pdf(post_pdf(client, ""))
    used = rendered[-1][0]
    assert 'font-family: "PPFallback0"' in used and f'src: url("{FALLBACKS[0]}")' in used


class TestBackground:
    """Chunks rendered by worker processes read the fallback font too (and only it)."""

    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"PUBLIPOSTAGE_PDF_SYNC_LIMIT": 4, "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 3, "PUBLIPOSTAGE_PDF_WORKERS": 2}

    @needs_fallback
    def test_cjk_in_a_background_run(self, app_ctx: Any, client: Any) -> None:
        add_class_of("CM1 Avant", 7, prefix="av")
        _family()
        response = post_pdf(client, "sort=class")
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        job = response.headers["Location"].rsplit("/", 1)[-1]
        status = client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()
        assert status["state"] == "done", status
        data = client.get(status["download_url"], "adml_a").data
        assert page_count(data) == 7 + 5
        assert font_of(data, *"小明王민준김") == {"DroidSansFallback"}
        assert "小明 王" in pdftotext(data)


def test_policy_allows_the_fallback_file_and_nothing_beside_it(tmp_path: Path) -> None:
    from xhtml2pdf.config.resources import ResourceAccessError

    folder = tmp_path / "fonts"
    folder.mkdir()
    fallback, neighbour = folder / "Fallback.ttf", folder / "Other.ttf"
    fallback.write_bytes(b"")
    neighbour.write_bytes(b"")
    policy = fonts.resource_policy(fonts.allowed_roots(None, [str(fallback)]))
    policy.check_path(str(fallback))
    policy.check_path(fonts.font_path("PPSans"))
    for forbidden in (str(neighbour), str(folder), "/etc/passwd"):
        with pytest.raises(ResourceAccessError):
            policy.check_path(forbidden)


# -- told before printing ------------------------------------------------------------------------


class _Form(HTMLParser):
    """The check page's form: its action and fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.fields: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and values.get("method") == "post":
            self.action = values.get("action") or ""
        elif tag == "input" and values.get("name"):
            self.fields.append((str(values["name"]), values.get("value") or ""))


def _form_of(page: str) -> _Form:
    form = _Form()
    form.feed(page)
    return form


class TestWithoutFallback:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"PUBLIPOSTAGE_PDF_FALLBACK_FONTS": ()}

    def test_the_admin_is_told_before_printing(self, app_ctx: Any, client: Any) -> None:
        _family()
        response = post_pdf(client, "sort=class", template="cards", signoff="y")
        assert response.status_code == 200 and response.mimetype == "text/html"
        raw = response.get_data(as_text=True)
        page = html.unescape(raw)
        assert "Certains noms ne s'imprimeraient pas correctement" in page
        assert "3 comptes sélectionnés ont un nom" in page
        for login, first, last in CJK:
            assert login in page and first in page and last in page
        assert "王" in page and "U+738B" in page and "U+BBFC" in page
        assert "li.parent" in page and "Parent de 小明 王" in page
        assert "full.width" not in page and "plain.name" not in page  # folded, or plain
        assert "Générer quand même" in page and "Retour à la sélection" in page
        # Nothing printed, nothing recorded yet.
        assert db.session.query(AuditEntry).count() == 0
        assert db.session.query(Run).count() == 0

        # The button posts the same choices again, and prints.
        form = _form_of(raw)
        assert form.action.startswith(f"{URL}/pdf?") and "sort=class" in form.action
        fields = dict(form.fields)
        assert fields["template"] == "cards" and fields["signoff"] == "y" and fields["print_anyway"] == "y"
        data = _pdf(client.post(form.action, "adml_a", data=MultiDict(form.fields)))
        assert page_count(data) == 1 + 1  # the class's sign-off sheet and one sheet of 6 cards
        assert "Full Width" in pdftotext(data)
        assert db.session.query(AuditEntry).filter_by(action="pdf").count() == 1  # and its download

    def test_no_page_when_every_name_prints(self, app_ctx: Any, client: Any) -> None:
        add_person("full.width", "Ｆｕｌｌ", "Ｗｉｄｔｈ", "ELEVE")
        add_person("nguyen", "Ánh", "Nguyễn Thị", "ELEVE")
        db.session.commit()
        data = _pdf(post_pdf(client, ""))
        assert "Full Width" in pdftotext(data)
        assert font_of(data, "Full") <= {"DejaVuSans-Bold", "DejaVuSans"}


class TestCsrf:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"PUBLIPOSTAGE_PDF_FALLBACK_FONTS": (), "WTF_CSRF_ENABLED": True}

    def test_print_anyway_carries_a_valid_token(self, app_ctx: Any, client: Any) -> None:
        add_person("wang.xiaoming", "小明", "王", "ELEVE")
        db.session.commit()
        page = client.get(f"{URL}/", "adml_a").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page) or re.search(
            r'name="csrf_token" value="([^"]+)"', page
        )
        assert token, "no CSRF token on the page"
        check = client.post(f"{URL}/pdf?", "adml_a", data={"template": "letter", "csrf_token": token.group(1)})
        assert check.mimetype == "text/html" and "wang.xiaoming" in check.get_data(as_text=True)
        form = _form_of(check.get_data(as_text=True))
        assert dict(form.fields).get("csrf_token")
        assert _pdf(client.post(form.action, "adml_a", data=MultiDict(form.fields)))[:4] == b"%PDF"
        # Without the token, the button does nothing.
        fields = [(k, v) for k, v in form.fields if k != "csrf_token"]
        assert client.post(form.action, "adml_a", data=MultiDict(fields)).status_code == 400


@needs_fallback
def test_with_the_fallback_only_undrawable_names_are_listed(app_ctx: Any, client: Any) -> None:
    _family()
    login, first, last = NOWHERE
    add_person(login, first, last, "ELEVE")
    db.session.commit()
    page = html.unescape(post_pdf(client, "").get_data(as_text=True))
    assert "1 compte sélectionné a un nom" in page
    assert login in page and "U+1230" in page
    for other, _first, _last in CJK:
        assert other not in page


def test_the_check_reads_only_the_selection(app_ctx: Any, client: Any) -> None:
    """An undrawable name outside the selection (or the perimeter) is not listed."""
    login, first, last = NOWHERE
    add_person(login, first, last, "PROF")
    add_person("other.school", first, last, "ELEVE", school="B")
    add_person("plain.name", "Jean", "Dupont", "ELEVE")
    db.session.commit()
    assert post_pdf(client, "profile=Student").mimetype == "application/pdf"
    page = post_pdf(client, "").get_data(as_text=True)
    assert login in page and "other.school" not in page


# -- a long name prints whole on a letter ------------------------------------------------------------


LONG_FIRST = "Marie-Chantal Bérénice Anne-Sophie Éléonore"
LONG_LAST = "de la Tour d’Auvergne-Saint-Exupéry de Montmorency-Laval et Rohan-Chabot-Gué"
LONG_NAME = f"{LONG_FIRST} {LONG_LAST}"


@pytest.mark.parametrize("postal", [None, "y"])
def test_a_120_character_name_prints_whole_on_a_letter(app_ctx: Any, client: Any, postal: str | None) -> None:
    assert len(LONG_NAME) == 120
    cls = Division(libelle="CM2 Longs", ecole="A")
    db.session.add(cls)
    address = {"rue": "12 rue des Lilas", "ville": "75011 Paris"}
    child = add_person("long.name", LONG_FIRST, LONG_LAST, "ELEVE", divisions=[cls], **address)
    # A parent of five children with long names too: the letter stays one page.
    kids = [child] + [
        add_person(f"kid{i}", f"Enfant{i} Prénom-Composé-Très-Long", "Descendant-Nombreux-De-La-Famille", "ELEVE",
                   divisions=[cls], **address)
        for i in range(4)
    ]
    add_person("long.parent", LONG_FIRST, LONG_LAST, "PARENT", enfants=kids, **address)
    db.session.commit()
    letters = _pdf(post_pdf(client, "", postal=postal))
    assert page_count(letters) == 6
    texts = pdftotext(letters).split("\f")
    # On the pupil's letter and the parent's (as the letter's name and as a child).
    for text in texts[:6]:
        if "long.name" in text or "long.parent" in text:
            assert _squeeze(LONG_NAME) in _squeeze(text), text
    assert "…" not in texts[texts.index(next(t for t in texts if "long.name" in t))]
    for words in word_boxes(letters):
        for w in words:
            assert 16 <= w.x0 and w.x1 <= 194 and w.y1 <= 290, w
    # A card may cut it, with an ellipsis.
    cards = "\n".join(pages_text(_pdf(post_pdf(client, "", template="cards"))))
    assert _squeeze(LONG_NAME) not in _squeeze(cards) and "…" in cards
    assert _squeeze(LONG_FIRST) in _squeeze(cards)
