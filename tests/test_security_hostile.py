"""Hostile data in names, class names and configuration texts: every output shows
it as text.

The page escapes it, the PDF prints it (read back with pypdf and pdftotext), the
CSV neutralises formulas, the mail keeps its headers whole. The PDF renderer
opens no file but the shipped fonts and the configured logo, and no socket:
checked with a Python audit hook around every render.
"""

from __future__ import annotations

import csv
import html
import io
import re
import sys
import unicodedata
from dataclasses import dataclass, replace
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from markupsafe import escape
from pypdf import PdfReader

from flask_publipostage.pdf import fonts, worker
from flask_publipostage.runs.models import RunItem

from .hosts import Division, add_person, db
from .smtp import SmtpServer
from .test_pdf_support import pages_text, pdftotext
from .test_security_support import BASE, campaign_id_of, job_id_of, post_mail, post_pdf

SECRET_KEY = "s3cr3t-k3y-n3v3r-sh0wn"
SCRIPT = "<script>alert(1)</script>"
SSTI = "{{7*7}}{{config.SECRET_KEY}}"
JINJA_BLOCK = "{% if 1 %}x{% endif %}{% raw %}"
NEXTPAGE = "<pdf:nextpage>"
BARCODE = '<pdf:barcode value="X" type="code128">'
IMG_FILE = '<img src="file:///etc/passwd">'
IMG_HTTP = '<img src="http://example.com/x.png">'
CRLF = "Jean\r\nBcc: evil@example.org"
LONG_FIRST = ("Marie-Éléonore " * 14)[:200].strip()
LONG_LAST = ("de la Tour d'Auvergne " * 5)[:100].strip()
ARABIC_HEBREW = "محمد שלום"
RLO = "\u202eevil\u202c"
COMBINING = "Zoe\u0301 Z\u0351\u0358a\u0334lgo"
FORMULA_1 = '=HYPERLINK("http://evil.example";"clic")'
FORMULA_2 = "+33 6 12"
FORMULA_3 = "-2+3"
FORMULA_4 = "@SUM(A1)"
BAD_EMAIL = "h.bad@example.org\r\nBcc: stolen@example.org"
#: What a spreadsheet may still read as a formula: white space, control or
#: zero-width characters, then = + - @ | in any width (tab and CR alone too).
LOOKS_LIKE_FORMULA = re.compile("[\\s\x00-\x1f\x7f\u200b-\u200f\u2060\ufeff]*[=+\\-@|＝＋－＠｜﹦﹢﹣﹫]|[\t\r]")

#: login -> (first name, last name); every one has an address and a code.
ACCOUNTS = {
    "h.script": (SCRIPT, SSTI),
    "h.jinja": (JINJA_BLOCK, NEXTPAGE),
    "h.pdf": (BARCODE, IMG_FILE),
    "h.img": (IMG_HTTP, "Distante"),
    "h.crlf": (CRLF, "Injection"),
    "h.long": (LONG_FIRST, LONG_LAST),
    "h.rtl": (ARABIC_HEBREW, RLO),
    "h.comb": (COMBINING, "Combinés"),
    "h.formula": (FORMULA_1, FORMULA_2),
    "h.formula2": (FORMULA_4, FORMULA_3),
}
CLASS_NAMES = (
    "<script>alert(2)</script> CP",
    "=1+1 {{7*7}} <pdf:nextpage>",
    'כיתה א <img src="file:///etc/passwd">',
)
CONFIG = {
    "PUBLIPOSTAGE_ENT_NAME": "ENT <script>alert(3)</script> {{7*7}}\r\nBcc: evil@example.org",
    "PUBLIPOSTAGE_SCHOOL_NAME": "École <pdf:nextpage> {{config.SECRET_KEY}}",
    "PUBLIPOSTAGE_PASSWORD_RULE": '<img src="http://example.com/rule.png"> 8 caractères',
    "PUBLIPOSTAGE_SCHOOL_ADDRESS": ('<pdf:barcode value="Y">', "1 rue <b>gras</b>"),
}
#: The local admin's school name as the host's scope gives it (file names, letters, mails).
SCHOOL = 'École "A"; <script>x</script>\r\nX-Evil: 1'


@dataclass
class Hostile:
    classes: list[Division]


@pytest.fixture
def logo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "logo.png"
    Image.new("RGB", (120, 40), (29, 79, 145)).save(path)
    return path


@pytest.fixture
def app_config(smtp: SmtpServer, logo: Path) -> dict[str, Any]:
    return {
        **smtp.config(),
        **CONFIG,
        "SECRET_KEY": SECRET_KEY,
        "PUBLIPOSTAGE_LOGO_PATH": str(logo),
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 50,
        "PUBLIPOSTAGE_PDF_WORKERS": 1,
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1,
    }


@pytest.fixture
def hostile(app: Flask) -> Hostile:
    state = app.extensions["publipostage"]
    original = state.scope_callback

    def scope() -> Any:
        found = original()
        if found is not None and not found.is_global:
            found = replace(found, school_name=SCHOOL)
        return found

    state.scope_callback = scope
    with app.app_context():
        classes = [Division(libelle=name, ecole="A") for name in CLASS_NAMES]
        db.session.add_all(classes)
        people = {}
        for index, (login, (first, last)) in enumerate(ACCOUNTS.items()):
            people[login] = add_person(
                login, first, last, "ELEVE", email=f"{login}@example.org",
                divisions=[classes[index % len(classes)]],
            )
        add_person("h.parent", "Parent", SCRIPT, "PARENT", email="h.parent@example.org",
                   enfants=[people["h.script"], people["h.rtl"]])
        add_person("h.bad", "Adresse", "Piégée", "PARENT", email=BAD_EMAIL)
        db.session.commit()
        for division in classes:
            db.session.refresh(division)
        db.session.expunge_all()
        db.session.remove()
    return Hostile(classes)


def values() -> list[str]:
    found = [v for pair in ACCOUNTS.values() for v in pair] + list(CLASS_NAMES)
    found += [CONFIG["PUBLIPOSTAGE_ENT_NAME"], CONFIG["PUBLIPOSTAGE_PASSWORD_RULE"]]
    return found


def squeeze(text: str) -> str:
    """Without white space, NFKC: line breaks and Arabic presentation forms aside."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text))


# -- the page ---------------------------------------------------------------------


def test_page_and_preview_show_text(client: Any, hostile: Hostile) -> None:
    names = [v for pair in ACCOUNTS.values() for v in pair]
    for path in ("/?sort=class", "/preview?sort=class", "/mail?email=with&profile=Relative"):
        response = client.get(BASE + path, "adml_a")
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        for value in values():
            if any(c in value for c in "<>&\"'"):
                assert value not in body, (path, value)
        if not path.startswith("/mail"):
            for value in [*names, *CLASS_NAMES]:
                assert str(escape(value)) in body, (path, value)
            assert "{{7*7}}" in body
        assert "<script>alert" not in body and "<pdf:" not in body and '<img src="' not in body
        assert SECRET_KEY not in body
    # The confirmation page's preview is the email's HTML, in a sandboxed frame of
    # its own address, escaped there and under a policy that runs no script.
    frame = re.search(r'<iframe[^>]* sandbox src="([^"]+)"', body)
    assert frame is not None
    message = client.get(html.unescape(frame.group(1)), "adml_a")
    assert message.status_code == 200 and "&lt;script&gt;alert(3)" in message.get_data(as_text=True)
    assert "<script>alert" not in message.get_data(as_text=True)
    rules = message.headers["Content-Security-Policy"]
    assert "default-src 'none'" in rules and "sandbox" in rules and "script-src" not in rules


# -- the CSV -----------------------------------------------------------------------


def test_csv_neutralises_formulas(client: Any, hostile: Hostile) -> None:
    response = client.get(f"{BASE}/export.csv?sort=class", "adml_a")
    assert response.status_code == 200
    disposition = response.headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="publipostage_[a-z0-9_-]+_\d{4}-\d{2}-\d{2}_\d{2}h\d{2}\.csv"', disposition), disposition
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"), newline=""), delimiter=";"))
    by_login = {row[3]: row for row in rows[1:]}
    for login, (first, last) in ACCOUNTS.items():
        row = by_login[login]
        for cell, value in ((row[0], last), (row[1], first)):
            expected = "'" + value if LOOKS_LIKE_FORMULA.match(value) else value
            assert cell == expected, (login, cell)
    for row in rows[1:]:
        for cell in row:
            assert not LOOKS_LIKE_FORMULA.match(cell), row
    # A class name that is a formula is neutralised in the classes cell too.
    assert any(row[6] == "'" + CLASS_NAMES[1] for row in rows[1:])
    assert SECRET_KEY not in response.data.decode("utf-8-sig")


#: Formulas hidden behind what a first-character check misses (first names: the
#: campaign report's name starts with it), and look-alikes that are no formula.
DISGUISED = (" =1+1", "\n=1+1", "\r\n@SUM(A1)", "\u200b=1+1", "\u3000+33", "＝1+1", "＋1", "－2+3",
             "＠SUM(A1)", "﹦1", "|calc", "  |cmd", "｜cmd")
HARMLESS = ("Ｆｕｌｌ", " Zoé", "a=b", "1+1", "(=1)")


def test_csv_neutralises_disguised_formulas(app: Flask, client: Any, smtp: SmtpServer) -> None:
    """The export and the campaign report: the cell is prefixed with ' whatever
    precedes the formula sign, and left alone when there is none."""
    with app.app_context():
        for index, first in enumerate(DISGUISED + HARMLESS):
            add_person(f"d.{index:02d}", first, f"Nom{index:02d}", "ELEVE")  # no email: skipped, reported
        add_person("e.mail", "Avec", "Adresse", "ELEVE", email="e.mail@example.org")
        db.session.commit()
        db.session.remove()
    expected = {f"d.{i:02d}": "'" + v for i, v in enumerate(DISGUISED)}
    expected |= {f"d.{len(DISGUISED) + i:02d}": v for i, v in enumerate(HARMLESS)}

    response = client.get(f"{BASE}/export.csv", "adml_a")
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert {row[3]: row[1] for row in rows[1:] if row[3] != "e.mail"} == expected

    campaign = campaign_id_of(post_mail(client, "adml_a", "profile=Student"))
    report = client.get(f"{BASE}/mail/campaigns/{campaign}/report.csv", "adml_a")
    rows = list(csv.reader(io.StringIO(report.data.decode("utf-8-sig"), newline=""), delimiter=";"))
    names = {row[0] for row in rows[1:]}
    for index, first in enumerate(DISGUISED):
        # The name as the run froze it ("first last", outer spaces trimmed).
        name = f"{first} Nom{index:02d}".strip(" ")
        assert "'" + name in names, (first, names)
    for row in rows[1:]:
        for cell in row:
            assert not LOOKS_LIKE_FORMULA.match(cell), row


# -- the PDF -------------------------------------------------------------------------


class RenderGuard:
    """Files opened and sockets used while xhtml2pdf renders (Python audit events)."""

    active = False
    opened: list[str] = []
    network: list[str] = []
    installed = False

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if not cls.active:
            return
        if event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            cls.opened.append(str(args[0]))
        elif event.startswith(("socket.", "urllib.", "http.")):
            cls.network.append(event)

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> None:
        if not cls.installed:
            sys.addaudithook(cls.hook)  # process-wide, idle unless active
            cls.installed = True
        cls.opened, cls.network = [], []
        original = worker._render

        def guarded(*args: Any, **kwargs: Any) -> Any:
            cls.active = True
            try:
                return original(*args, **kwargs)
            finally:
                cls.active = False

        monkeypatch.setattr(worker, "_render", guarded)

    @classmethod
    def check(cls, logo: Path) -> None:
        allowed = (str(fonts.ASSETS_DIR), str(logo.resolve()))
        libraries = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
        outside = [p for p in cls.opened if not p.startswith(allowed) and not p.startswith(libraries)]
        # The output file (a background chunk) is written, never read from elsewhere.
        outside = [p for p in outside if not p.endswith((".pdf.part",))]
        assert not outside, outside
        assert not any(p.startswith("/etc") for p in cls.opened)
        assert not cls.network, cls.network


def _images(data: bytes) -> list[tuple[int, int]]:
    return [image.image.size for page in PdfReader(io.BytesIO(data)).pages for image in page.images]


def _check_pdf_text(data: bytes, *, cards: bool) -> None:
    texts = ["\n".join(pages_text(data))]
    if not cards:  # pdftotext -layout interleaves the two columns of cards
        texts.append(pdftotext(data))
    for text in texts:
        flat = squeeze(text)
        for login, (first, last) in ACCOUNTS.items():
            assert login in text
            if login == "h.long":
                if cards:  # fitted to its lines, with an ellipsis; never over the edge
                    assert squeeze(LONG_FIRST[:40]) in flat and "…" in text
                else:  # a letter prints a name whole
                    assert squeeze(f"{LONG_FIRST} {LONG_LAST}") in flat
                continue
            if login == "h.rtl":
                # Shaped and laid out right to left: the same letters, visual order.
                for word in ("محمد", "שלום"):
                    assert squeeze(word) in flat or squeeze(word[::-1]) in flat, word
                assert "evil" in text or "live" in text
                continue
            if cards:  # a card has two lines for the name: its start at least
                assert squeeze(f"{first} {last}")[:24] in flat, (login, first)
                continue
            for value in (first, last):
                assert squeeze(value) in flat, (login, value)
        raws = ["<script>alert(1)</script>", "<pdf:nextpage>"]
        if not cards:  # on cards this one is beyond the name's two lines
            raws.append('<img src="file:///etc/passwd">')
        for raw in raws:
            assert squeeze(raw) in flat, raw
        assert SECRET_KEY not in text and "root:" not in text
        assert squeeze("ENT <script>alert(3)</script> {{7*7}}") in flat
        if not cards:  # letters spell out the password rule
            assert squeeze(CONFIG["PUBLIPOSTAGE_PASSWORD_RULE"]) in flat


def test_pdf_prints_text_and_reads_nothing_else(
    app: Flask, client: Any, hostile: Hostile, logo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Imports done and fonts loaded first: only what the run itself reads is watched.
    assert post_pdf(client, "adml_a", "profile=Relative").status_code == 200
    RenderGuard.install(monkeypatch)
    letters = post_pdf(client, "adml_a", "sort=class&email=with", signoff="y")
    assert letters.status_code == 200, letters.get_data(as_text=True)[:300]
    disposition = letters.headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="publipostage_[a-z0-9_-]+_\d{4}-\d{2}-\d{2}_\d{2}h\d{2}\.pdf"', disposition)
    _check_pdf_text(letters.data, cards=False)
    # One image per letter: the configured logo, nothing the data asked for.
    accounts = len(ACCOUNTS) + 2
    letter_images = _images(letters.data)
    assert len(letter_images) == accounts and set(letter_images) == {(120, 40)}
    signoff = "\n".join(pages_text(letters.data))
    for name in CLASS_NAMES[:2]:
        assert squeeze(name) in squeeze(signoff)
    # Right-to-left runs are laid out right to left (the "<" moves with them).
    assert squeeze("כיתה") in squeeze(signoff) and squeeze('img src="file:///etc/passwd">') in squeeze(signoff)
    RenderGuard.check(logo)

    # Postal letters: the hostile sender lines of the configuration are text too.
    postal = post_pdf(client, "adml_a", "profile=Relative", postal="y")
    assert postal.status_code == 200
    assert squeeze('<pdf:barcode value="Y">') in squeeze(pdftotext(postal.data))

    # Cards, in the background path (chunks rendered and merged).
    app.config["PUBLIPOSTAGE_PDF_SYNC_LIMIT"] = 2
    job = job_id_of(post_pdf(client, "adml_a", "sort=class&email=with", template="cards"))
    cards = client.get(f"{BASE}/pdf/jobs/{job}/download", "adml_a")
    assert cards.status_code == 200
    _check_pdf_text(cards.data, cards=True)
    assert _images(cards.data) == []
    RenderGuard.check(logo)


def test_renderer_policy_holds_without_escaping(logo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: markup that did reach xhtml2pdf still reads nothing."""
    RenderGuard.install(monkeypatch)
    html = (
        "<html><body><p>avant</p>"
        '<img src="file:///etc/passwd"><img src="/etc/hostname"><img src="http://example.com/x.png">'
        '<img src="http://127.0.0.1:9/x.png"><img src="https://169.254.169.254/latest/meta-data/">'
        f'<img src="{logo}"><p>après</p></body></html>'
    )
    data = worker.render_bytes(html, fonts.allowed_roots(str(logo)))
    text = "\n".join(pages_text(data))
    assert "avant" in text and "après" in text and "root:" not in text
    assert _images(data) == [(120, 40)]  # the logo, the only readable file
    RenderGuard.check(logo)


# -- the mail ------------------------------------------------------------------------


def test_mail_headers_stay_whole(app: Flask, client: Any, hostile: Hostile, smtp: SmtpServer) -> None:
    campaign = campaign_id_of(post_mail(client, "adml_a", "email=with&profile=Student&profile=Relative"))
    expected = {f"{login}@example.org" for login in ACCOUNTS} | {"h.parent@example.org"}
    assert set(smtp.by_recipient()) == expected  # the bad address reached nobody
    names = {f"{login}@example.org": f"{first} {last}" for login, (first, last) in ACCOUNTS.items()}
    for received in smtp.messages:
        (address,) = received.rcpt_tos
        raw_headers = received.content.split(b"\r\n\r\n", 1)[0].decode("ascii")
        header_names = {line.split(":", 1)[0].lower() for line in raw_headers.split("\r\n") if line[:1].strip()}
        assert header_names <= {
            "content-type", "mime-version", "subject", "from", "to", "date", "message-id",
            "auto-submitted", "content-language", "reply-to",
        }, header_names
        assert "stolen@" not in raw_headers
        message = message_from_bytes(received.content, policy=policy.default)
        assert [a.addr_spec for a in message["To"].addresses] == [address]
        assert "\n" not in str(message["Subject"]) and "\r" not in str(message["Subject"])
        assert str(message["Subject"]).startswith("Votre compte ENT <script>alert(3)</script> {{7*7}} Bcc: evil@example.org")
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        if address in names:
            # On one line in the greeting, 200 characters at most (the body's lines
            # are wrapped at 78 characters afterwards).
            one_line = " ".join(names[address].split())[:200].strip()
            assert f"Bonjour {one_line}," in " ".join(text.split()), (address, text[:300])
            assert f"Bonjour {escape(one_line)}," in " ".join(html.split()), address
        assert "<script>alert" not in html and "<pdf:" not in html
        assert SECRET_KEY not in text and SECRET_KEY not in html
        assert "{{7*7}}" in text
        # Every account here awaits activation: the steps spell out the password rule.
        assert CONFIG["PUBLIPOSTAGE_PASSWORD_RULE"] in " ".join(text.split())
        assert str(escape(CONFIG["PUBLIPOSTAGE_PASSWORD_RULE"])) in " ".join(html.split())
    with app.app_context():
        bad = db.session.execute(
            sa.select(RunItem).where(RunItem.run_id == campaign, RunItem.email.like("h.bad%"))
        ).scalar_one()
        assert bad.state == "failed" and bad.reason
        db.session.remove()
    report = client.get(f"{BASE}/mail/campaigns/{campaign}", "adml_a").get_data(as_text=True)
    assert "Adresse Piégée" in report and "n'est pas valide" in report.replace("&#39;", "'")
    assert "<script>alert" not in report and "<pdf:" not in report
    rows = list(csv.reader(io.StringIO(
        client.get(f"{BASE}/mail/campaigns/{campaign}/report.csv", "adml_a").data.decode("utf-8-sig"), newline=""
    ), delimiter=";"))
    for row in rows[1:]:
        for cell in row:
            assert not LOOKS_LIKE_FORMULA.match(cell), row


def _stamped(data: bytes) -> int:
    """The pages drawn on a stamped layout: their fonts hold the layout's, renamed
    ``/L<n>.…`` by :mod:`.pdf.stamp`."""
    pages = PdfReader(io.BytesIO(data)).pages
    return sum(any(re.match(r"/L\d+\.", str(name)) for name in (page["/Resources"].get_object().get("/Font") or {}))
               for page in pages)


@pytest.mark.parametrize("query, form", [
    ("sort=class&email=with", {}),
    ("profile=Relative", {"postal": "y"}),
    ("email=with", {}),
    ("sort=class", {"template": "cards"}),
    ("profile=Relative&sort=class", {"template": "cards"}),
    ("", {"template": "cards"}),
])
def test_stamped_letters_print_what_laid_out_letters_print(
    app: Flask, client: Any, hostile: Hostile, query: str, form: dict[str, str]
) -> None:
    """Letters and cards stamped on a layout made once per kind hold, page by
    page, the text of letters and sheets of cards laid out one by one
    (``PDF_STAMP`` off): every name, login, class, child, code and address of
    the hostile set."""
    app.config["PUBLIPOSTAGE_PDF_STAMP"] = True
    stamped = post_pdf(client, "adml_a", query, **form)
    app.config["PUBLIPOSTAGE_PDF_STAMP"] = False
    laid_out = post_pdf(client, "adml_a", query, **form)
    assert stamped.status_code == laid_out.status_code == 200
    # Every letter or sheet of cards stamped (a list of the accounts without an
    # address is neither).
    mark = "découpez" if form.get("template") == "cards" else "Cette fiche"
    letters = sum(mark in text for text in pages_text(stamped.data))
    assert letters > 1 and _stamped(stamped.data) == letters and _stamped(laid_out.data) == 0
    # The same text, in the same order, read by pypdf (content-stream order) and
    # by pdftotext (reading order).
    for read in (pages_text, lambda data: pdftotext(data).split("\f")[:-1]):
        ours, reference = read(stamped.data), read(laid_out.data)
        assert len(ours) == len(reference) > 1
        for page, (mine, theirs) in enumerate(zip(ours, reference)):
            assert mine == theirs, (page, mine, theirs)
