"""Letters and cards at the cost of drawing them: xhtml2pdf lays out each *kind*
of letter or card once, each account's own text is written in that layout.

All letters of one kind (the same content, the same number of name, class,
login and code lines, the same group header...) share everything but a dozen
texts; so do cards. So the letter template is rendered once per kind with
*markers* in place of the account's texts (``QXJ007JXQ``; the letter's or card
sheet's number in its group as many ``¥``, exactly as wide as its digits), and
the marked page is read back: where each marker stands (font, size, colour),
and where the QR code goes. Its content stream is the kind's *stamp*, cut at
each marker and split in two bands: the group header (the blocks holding the
number) and the body. Each letter's page is then the stamp's content with the
account's own texts written in the markers' places, in the layout's text object
(font changes and strings: the text flows on from where the marker began, as in
a letter laid out whole, and reads back the same, in the same order), and its QR
code drawn as squares. The texts are the same fitted lines as the HTML renderer
prints, so the fitting rules hold. A letter takes the header of its group and
the body of its kind: a class's header is not rendered again for each kind of
its letters. Reportlab's canvas draws the texts (it subsets and embeds the
fonts), a comment before each; :func:`compose` puts them in their places.

A sheet of cards is made the same way of *layers*: the page (its header, the
group and the sheet's number, and its body, the cut lines, by number of rows)
and a stamp per card, each card laid out once per kind at the first place and
moved to its own (cards are placed absolutely: a card's place moves it whole).
A card's stamp is what its marked page draws beyond the same page without it.

The sheets of the run are planned here, in the driver (an app context: the
templates are the host's); the marked pages are rendered and read there, those
of the first chunk alone (the file starts at once), then those of several
chunks in one xhtml2pdf call (:meth:`Stamper.prepare`), and kept in the run's
work folder with an index of what each page is: a Celery chunk task, or the
driver of a run taken over, takes the stamps made already by any process
(:meth:`Stamper._adopt_shared`) and makes only those missing. The pool's workers
get a :class:`Plan` and only draw and put the texts in place (:func:`compose`).

Templates take part when they say so: ``publipostage/pdf/letter.html`` (or
``cards.html``) and ``document.html`` holding the words ``pp-stamp`` (ours do, in
a comment). A host template that prints anything of an account beyond the
view's fields must leave them out: its letters are then rendered whole by
xhtml2pdf, one by one, as before (as are sign-off sheets and lists).
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import re
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from . import fonts

#: A marker: its number on the page. ASCII letters and digits, one word: the
#: renderer neither wraps nor splits it, and DejaVu draws it.
MARK = "QXJ{:03d}JXQ"
_MARK = re.compile(r"QXJ(\d{3})JXQ")
#: The number's stand-in, a character per digit: "¥" is exactly as wide as a
#: digit in each DejaVu face, and no group header prints it (a figure space,
#: as wide, is white space: the renderer drops it).
FIGURE = "¥"
#: The words a template says it takes part with.
FLAG = "pp-stamp"
#: The QR code's stand-in: a 29-pixel PNG no account has (its size finds it).
QR_PIXELS = 29
#: Points in a millimetre (a card's place is given in mm).
MM = 72 / 25.4

#: The account's texts in a view, by sheet kind: lists of lines, single lines.
#: A letter's children are lines of lines.
TEXTS = {
    "letter": (("name_lines", "class_lines", "login_lines", "code_lines", "address_name", "address"), ("profile",)),
    "cards": (("name_lines", "detail_lines", "login_lines", "code_lines", "url_lines"), ("ent_line", "profile")),
}
#: What a card's view holds beyond what it prints: its place on the sheet.
_PLACE = ("left", "top")


class Unknown(Exception):
    """The template reads of an account something the view does not give."""


class _Account:
    """What the letter template reads of the account itself: its school, and
    whether it has children. Anything else is :class:`Unknown`."""

    def __init__(self, school: str, children: bool) -> None:
        self.school = school
        self.children = [True] if children else []

    def __getattr__(self, name: str) -> Any:
        raise Unknown(name)


@dataclass(frozen=True)
class Field:
    """Where a marker stood: its baseline's start (pt, from the page's bottom
    left), font (PostScript name), size, fill colour and leading."""

    x: float
    y: float
    font: str
    size: float
    color: tuple[float, ...]
    leading: float = 0.0


#: The slot of the letter's number in its group (the texts are numbered from 0).
NUMBER = -1


@dataclass(frozen=True)
class Band:
    """Part of a marked page's content stream, cut where the accounts' texts go:
    ``parts[i]``, the text of ``slots[i]``, ``parts[i + 1]``... Each part is bytes
    and resource names (:class:`_Name`), renamed for the page that uses them."""

    parts: tuple[tuple[bytes, ...], ...]
    slots: tuple[int, ...]


@dataclass(frozen=True)
class Stamp:
    """One marked page read back: its bands and where its texts go."""

    path: str
    page: int
    header: Band
    body: Band
    #: Bottom of the header's blocks (its height shows there): two stamps whose
    #: headers end at the same place share their bodies.
    header_bottom: float | None
    fields: dict[int, Field]
    number: Field | None
    #: The QR code's box: x, y, width, height (pt).
    qr: tuple[float, float, float, float] | None
    #: The page's resources: (kind, name, object number or the value itself).
    resources: tuple[tuple[str, bytes, int | bytes], ...] = ()
    #: The operators of each top-level block of the page (a card's stamp is
    #: what its page draws beyond a page without it).
    outline: tuple[tuple[bytes, ...], ...] = ()


@dataclass(frozen=True)
class Layer:
    """A stamp's band on a page, with the account's texts (by slot), the group
    number, the QR code's content, and how far it moves (pt) from where it was
    laid out (a card at its place)."""

    stamp: int
    band: str
    texts: tuple[str, ...] = ()
    number: str = ""
    qr: str | None = None
    offset: tuple[float, float] | None = None


@dataclass(frozen=True)
class Page:
    layers: tuple[Layer, ...]


@dataclass
class Plan:
    """A chunk of letters for :func:`compose`: the stamps it uses, then its pages."""

    stamps: dict[int, Stamp] = field(default_factory=dict)
    pages: list[Page] = field(default_factory=list)
    #: The fallback font files (``PDF_FALLBACK_FONTS``) the texts may need.
    fallbacks: tuple[str, ...] = ()


# -- the driver: marking, rendering, reading -------------------------------------------------------


def template_takes_part(jinja_env: Any, kind: str = "letter") -> bool:
    """``<kind>.html`` and ``document.html`` (the host's, or ours) say ``pp-stamp``."""
    for name in (f"publipostage/pdf/{kind}.html", "publipostage/pdf/document.html"):
        source, _filename, _uptodate = jinja_env.loader.get_source(jinja_env, name)
        if FLAG not in source:
            return False
    return True


def plain(line: Any) -> str:
    """A fitted line as text (the fitting gives HTML when a fallback font sets part of it)."""
    if isinstance(line, Markup):
        return str(Markup(str(line)).striptags())
    return str(line)


def marked(view: dict[str, Any], kind: str = "letter") -> tuple[dict[str, Any], list[str]]:
    """A letter or card view with markers for the account's texts, and those texts in marker order."""
    texts: list[str] = []

    def mark(line: Any) -> str:
        texts.append(plain(line))
        return MARK.format(len(texts) - 1)

    lists, singles = TEXTS[kind]
    result = dict(view)
    for key in lists:
        result[key] = [mark(line) for line in view[key]]
    for key in singles:
        result[key] = mark(view[key]) if view[key] else ""
    if "children" in view:
        result["children"] = [[mark(line) for line in child] for child in view["children"]]
    result["code"] = "x" if view["code"] else view["code"]
    result["qr"] = _stand_in_qr() if view["qr"] else None
    result["qr_target"] = None
    recipient = view["r"]
    result["r"] = _Account(recipient.school, bool(recipient.children))
    return result, texts


def layout_key(view: dict[str, Any]) -> str:
    """What a marked view gives the template (the run's options and settings aside,
    a card's place too): two letters, or cards, of one key are one layout."""
    account = view["r"]
    return repr((sorted((k, v) for k, v in view.items() if k != "r" and k not in _PLACE),
                 account.school, bool(account.children)))


def _numbered(group: Any, school: str) -> Any:
    """The group of a sheet whose header shows its number; :class:`Unknown` when
    the header prints the number's stand-in itself (it would be taken for it)."""
    if group is not None and FIGURE in f"{group.name}{school}":
        raise Unknown(FIGURE)
    return group


@functools.cache
def _stand_in_qr() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (QR_PIXELS, QR_PIXELS), (255, 255, 255)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class _Card:
    """A card of a sheet: its layout's key, its marked view (at the first place),
    texts, QR code's content and how far its place is from the first (pt)."""

    key: str
    view: dict[str, Any]
    texts: tuple[str, ...]
    qr: str | None
    offset: tuple[float, float]


@dataclass(frozen=True)
class _Wanted:
    """A sheet to stamp: its marked page (a letter, or a sheet of cards without
    its cards), the keys of that page's body and header, the letter's texts, the
    number in its group, its QR code's content, and its cards."""

    page: Any
    body_key: str
    header_key: str | None
    texts: tuple[str, ...] = ()
    number: str = ""
    qr: str | None = None
    cards: tuple[_Card, ...] = ()


#: What each page of a marked PDF is (its index file): a page of a letter or of
#: a sheet of cards ("page", body key, header key), the sheet of cards without
#: any card that the next pages' cards are read against ("blank"), or a card
#: alone on such a sheet ("card", its key).
_PAGE, _BLANK, _CARD = "page", "blank", "card"


class Stamper:
    """The stamps of one run, made as its chunks need them (in ``directory``,
    shared by every process of the run); ``lay_out(html, path, roots, collect)``
    renders their marked pages through xhtml2pdf (:func:`.worker.render_file`,
    which draws the plans made here)."""

    def __init__(self, options: Any, settings: Any, directory: Path, lay_out: Callable[..., str]) -> None:
        self.options = options
        self.settings = settings
        self.directory = directory
        self.lay_out = lay_out
        self.stamps: dict[int, Stamp] = {}
        self._bodies: dict[str, int] = {}
        self._headers: dict[str, int] = {}
        self._exact: dict[tuple[str | None, str], int] = {}
        self._cards: dict[str, int | None] = {}
        #: The index of each marked PDF of the run (what each page is).
        self._indexes: dict[str, list[list[Any]]] = {}

    def plan(self, sheets: Sequence[Any]) -> Plan | None:
        """The chunk's plan, or None when a sheet is neither a letter nor cards (or
        the template reads what no marker stands for): the chunk is rendered whole then."""
        wanted = self._wanted(sheets)
        if wanted is None:
            return None
        self._make(wanted)
        plan = Plan(fallbacks=tuple(self.settings.fallbacks))
        for sheet in wanted:
            found = self._find(sheet.body_key, sheet.header_key)
            if found is None or any(self._cards.get(card.key) is None for card in sheet.cards):
                return None  # a card's page that does not read as its sheet with a card more
            header, body = found
            layers = [] if header is None else [Layer(header, "header", number=sheet.number)]
            layers.append(Layer(body, "body", sheet.texts, qr=sheet.qr))
            layers += [Layer(self._cards[card.key], "body", card.texts, qr=card.qr, offset=card.offset)
                       for card in sheet.cards]
            for layer in layers:
                plan.stamps[layer.stamp] = self.stamps[layer.stamp]
            plan.pages.append(Page(tuple(layers)))
        return plan

    def prepare(self, chunks: Sequence[Sequence[Any]]) -> None:
        """Make the stamps of several chunks' sheets at once: one xhtml2pdf call
        costs about as much before its first page (styles, fonts) as for a few
        pages, so the driver makes those of the chunks ahead together."""
        wanted: list[_Wanted] = []
        for sheets in chunks:
            wanted += self._wanted(sheets) or []
        self._make(wanted)

    def _wanted(self, sheets: Sequence[Any]) -> list[_Wanted] | None:
        """Each sheet marked; None when the chunk is not stamped."""
        if any(sheet.kind not in TEXTS for sheet in sheets):
            return None
        try:
            return [self._letter(sheet) if sheet.kind == "letter" else self._cards_sheet(sheet) for sheet in sheets]
        except Unknown:
            return None

    def _letter(self, sheet: Any) -> _Wanted:
        from .render import Sheet

        view, texts = marked(sheet.data["v"])
        group = _numbered(sheet.data["group"], view["r"].school)
        number = str(sheet.data["number"]) if group else ""
        page = Sheet("letter", {"v": view, "group": group, "number": FIGURE * len(number)})
        header_key = repr(("letter", group.name, group.count, view["r"].school, len(number))) if group else None
        return _Wanted(page, layout_key(view), header_key, tuple(texts), number, sheet.data["v"]["qr_target"])

    def _cards_sheet(self, sheet: Any) -> _Wanted:
        from .render import CARD_TOP, Sheet

        data = sheet.data
        group = _numbered(data["group"], data["school"])
        number = str(data["sheet"]) if group else ""
        page = Sheet("cards", {**data, "cards": [], "sheet": FIGURE * len(number)})
        header_key = repr(("cards", group.name, group.count, data["school"], len(number), data["sheets"])) if group else None
        body_key = repr(("cards", data["rows"], group is None))
        cards = []
        for view in data["cards"]:
            card, texts = marked(view, "cards")
            card.update(left=0, top=CARD_TOP)
            cards.append(_Card(layout_key(card), card, tuple(texts), view["qr_target"],
                               (view["left"] * MM, (CARD_TOP - view["top"]) * MM)))
        return _Wanted(page, body_key, header_key, number=number, cards=tuple(cards))

    def _make(self, wanted: Sequence[_Wanted]) -> None:
        """The stamps ``wanted`` lacks, taken from the run's other processes, or
        made: a marked page for each body and each header not known yet (most
        pages bring both), then for each pair whose header's height differs."""
        if not any(self._missing(wanted, exact=False)):
            return  # the usual case: every layout known
        self._adopt_shared(wanted)
        for exact in (False, True):
            pages, cards = self._missing(wanted, exact)
            if pages or cards:
                self._render(pages, cards)

    def _missing(self, wanted: Sequence[_Wanted], exact: bool) -> tuple[dict[tuple[str | None, str], Any], dict[str, Any]]:
        """The marked pages to render for ``wanted``, by (header, body) keys, and
        the cards, by key. Not ``exact``: a page only for a body or a header not
        known yet."""
        pages: dict[tuple[str | None, str], Any] = {}
        cards: dict[str, dict[str, Any]] = {}
        bodies, headers = set(self._bodies), set(self._headers)
        for sheet in wanted:
            if self._find(sheet.body_key, sheet.header_key) is None and (
                exact or sheet.body_key not in bodies or (sheet.header_key is not None and sheet.header_key not in headers)
            ):
                pages.setdefault((sheet.header_key, sheet.body_key), sheet.page)
                bodies.add(sheet.body_key)
                if sheet.header_key is not None:
                    headers.add(sheet.header_key)
            for card in sheet.cards:
                if card.key not in self._cards:
                    cards.setdefault(card.key, card.view)
        return pages, cards

    def _find(self, body_key: str, header_key: str | None) -> tuple[int | None, int] | None:
        """The stamps of a page: its header's and its body's."""
        if header_key is None:
            body = self._bodies.get(body_key)
            return None if body is None else (None, body)
        both = self._exact.get((header_key, body_key))
        if both is not None:
            return both, both
        body, header = self._bodies.get(body_key), self._headers.get(header_key)
        if body is None or header is None:
            return None
        if self.stamps[body].header_bottom != self.stamps[header].header_bottom:
            return None  # a header of another height: the body moves
        return header, body

    def _render(self, pages: dict[tuple[str | None, str], Any], cards: dict[str, dict[str, Any]]) -> None:
        """One xhtml2pdf call for the marked pages and cards missing; its index
        written beside it for the run's other processes."""
        from .render import Sheet, render_document

        sheets = list(pages.values())
        roles: list[list[Any]] = [[_PAGE, body_key, header_key] for header_key, body_key in pages]
        if cards:
            blank = {"cards": [], "rows": 1, "group": None, "sheet": 0, "sheets": 0, "school": ""}
            sheets.append(Sheet("cards", blank))
            roles.append([_BLANK])
            for key, view in cards.items():
                sheets.append(Sheet("cards", {**blank, "cards": [view]}))
                roles.append([_CARD, key])
        html = render_document(sheets, self.options, self.settings)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Named apart: Celery's chunk tasks may make stamps side by side (and a
        # file once written never changes: its pages are kept read, :func:`_stamp_at`).
        path = str(self.directory / f"stamps-{uuid.uuid4().hex}.pdf")
        self.lay_out(html, path, self.settings.roots, collect=False)
        index = Path(path).with_suffix(".json")
        partial = index.with_suffix(".part")
        partial.write_text(json.dumps(roles), encoding="utf-8")
        os.replace(partial, index)
        self._indexes[path] = roles
        self._adopt(path, roles, [number for number, role in enumerate(roles) if role[0] != _BLANK])

    def _adopt_shared(self, wanted: Sequence[_Wanted]) -> None:
        """The stamps ``wanted`` lacks that the run's other processes made (their
        index files): one page read for each."""
        if not self.directory.is_dir():
            return
        for index in sorted(self.directory.glob("stamps-*.json")):
            path = str(index.with_suffix(".pdf"))
            if path not in self._indexes:
                self._indexes[path] = json.loads(index.read_text(encoding="utf-8"))
        exact: dict[tuple[str | None, str], tuple[str, int]] = {}
        bodies: dict[str, tuple[str, int]] = {}
        headers: dict[str, tuple[str, int]] = {}
        cards: dict[str, tuple[str, int]] = {}
        for path, roles in self._indexes.items():
            for number, role in enumerate(roles):
                if role[0] == _PAGE:
                    exact.setdefault((role[2], role[1]), (path, number))
                    bodies.setdefault(role[1], (path, number))
                    if role[2] is not None:
                        headers.setdefault(role[2], (path, number))
                elif role[0] == _CARD:
                    cards.setdefault(role[1], (path, number))
        pages: set[tuple[str, int]] = set()
        for sheet in wanted:
            if self._find(sheet.body_key, sheet.header_key) is None:
                pair = exact.get((sheet.header_key, sheet.body_key))
                if pair is not None:
                    pages.add(pair)
                else:
                    if sheet.body_key not in self._bodies and sheet.body_key in bodies:
                        pages.add(bodies[sheet.body_key])
                    if sheet.header_key is not None and sheet.header_key not in self._headers and sheet.header_key in headers:
                        pages.add(headers[sheet.header_key])
            pages |= {cards[card.key] for card in sheet.cards if card.key not in self._cards and card.key in cards}
        for path in sorted({path for path, _number in pages}):
            self._adopt(path, self._indexes[path], sorted(number for p, number in pages if p == path))

    def _adopt(self, path: str, roles: Sequence[Sequence[Any]], pages: Sequence[int]) -> None:
        """Pages ``pages`` of a marked PDF read back as stamps, as its index ``roles`` says."""
        for number, stamp in zip(pages, read_stamps(path, [role[0] for role in roles], pages)):
            role, index = roles[number], len(self.stamps)
            if role[0] == _CARD:
                if stamp is not None:
                    self.stamps[index] = stamp
                self._cards.setdefault(role[1], None if stamp is None else index)
            elif role[0] == _PAGE and stamp is not None:
                _kind, body_key, header_key = role
                self.stamps[index] = stamp
                self._exact.setdefault((header_key, body_key), index)
                self._bodies.setdefault(body_key, index)
                if header_key is not None:
                    self._headers.setdefault(header_key, index)


# -- reading a marked page ------------------------------------------------------------------------


class _Font:
    """A simple font of the marked page: its codes' characters and widths."""

    def __init__(self, font: Any) -> None:
        self.name = str(font.get("/BaseFont", "")).lstrip("/").split("+")[-1]
        first = int(font.get("/FirstChar", 0))
        self.widths = {first + i: float(w) for i, w in enumerate(font.get("/Widths", []))}
        self.chars: dict[int, str] = {}
        unicode = font.get("/ToUnicode")
        if unicode is not None:
            data = unicode.get_object().get_data().decode("latin-1")
            for block in re.findall(r"beginbfchar(.*?)endbfchar", data, re.S):
                for code, text in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                    self.chars[int(code, 16)] = bytes.fromhex(text).decode("utf-16-be")
            for block in re.findall(r"beginbfrange(.*?)endbfrange", data, re.S):
                for low, high, start in re.findall(r"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                    base = int(start, 16)
                    for offset, code in enumerate(range(int(low, 16), int(high, 16) + 1)):
                        self.chars[code] = chr(base + offset)

    def decode(self, data: bytes) -> str:
        return "".join(self.chars.get(code, "\ufffd") for code in data)


def _multiply(m: Sequence[float], n: Sequence[float]) -> tuple[float, ...]:
    a, b, c, d, e, f = m
    g, h, i, j, k, l_ = n
    return (a * g + b * i, a * h + b * j, c * g + d * i, c * h + d * j, e * g + f * i + k, e * h + f * j + l_)


def _numbers(values: Sequence[float]) -> bytes:
    return " ".join(f"{v:.6f}".rstrip("0").rstrip(".") or "0" for v in values).encode("ascii")


@dataclass(frozen=True)
class _Cut:
    """Where an account's text goes in the marked page's stream: in its text
    object, where the marker was, in the marker's font (the text's own fonts set
    for it); the marker's font (its resource name) and size set again after it."""

    slot: int
    font: bytes
    size: float

    def resume(self) -> list[bytes]:
        return [_Name(self.font[1:]), b" " + _numbers([self.size]) + b" Tf\n"]


#: The resource kinds of a marked page, and the operators naming them (operand index).
_RESOURCE_KINDS = ("/Font", "/XObject", "/ExtGState", "/ColorSpace", "/Pattern", "/Shading", "/Properties")
_NAMED_BY = {b"Tf": ("/Font", 0), b"Do": ("/XObject", 0), b"gs": ("/ExtGState", 0), b"sh": ("/Shading", 0),
             b"cs": ("/ColorSpace", 0), b"CS": ("/ColorSpace", 0), b"scn": ("/Pattern", -1),
             b"SCN": ("/Pattern", -1), b"BDC": ("/Properties", 1), b"DP": ("/Properties", 1)}


class _Name(bytes):
    """A resource's name in a band (without its slash): renamed when the page is made."""


def read_stamps(path: str, roles: Sequence[str], pages: Sequence[int]) -> list[Stamp | None]:
    """Pages ``pages`` of a marked PDF read back as stamps, as ``roles`` (one per
    page) says: a card's page (:data:`_CARD`) as what it draws beyond the last
    blank sheet before it (None when it does not begin as that sheet)."""
    stamps: list[Stamp | None] = []
    for number in pages:
        if roles[number] == _CARD:
            blank = max((n for n in range(number) if roles[n] == _BLANK), default=None)
            stamps.append(None if blank is None else _stamp_at(path, number, blank))
        else:
            stamps.append(_stamp_at(path, number, None))
    return stamps


@functools.lru_cache(maxsize=8)
def _marked_pdf(path: str) -> tuple[Any, dict[int, _Font]]:
    """A marked PDF's reader, and the decoders of its fonts (by object number):
    its pages share them."""
    from pypdf import PdfReader

    return PdfReader(path), {}


@functools.lru_cache(maxsize=1024)
def _stamp_at(path: str, number: int, blank: int | None) -> Stamp | None:
    """Page ``number`` of a marked PDF as a stamp (what it draws beyond page
    ``blank``, when given): kept, as a process (a Celery worker) reads the same
    pages for chunk after chunk of a run."""
    reader, fonts = _marked_pdf(path)
    under = None
    if blank is not None:
        page = _stamp_at(path, blank, None)
        if page is None:
            return None
        under = page.outline
    return _read_page(reader, path, number, under=under, fonts=fonts)


def _read_page(
    reader: Any, path: str, number: int, under: tuple[tuple[bytes, ...], ...] | None = None,
    fonts: dict[int, _Font] | None = None,
) -> Stamp | None:
    """Page ``number`` read back as a stamp; ``under``: the outline of a page
    this one draws over (a card's sheet without it): only what it draws beyond
    that, or None when it does not begin with that page's blocks."""
    from pypdf.generic import ArrayObject, ByteStringObject, ContentStream, IndirectObject

    page = reader.pages[number]
    resources = page["/Resources"].get_object()
    font_dicts = resources.get("/Font", {})
    font_dicts = font_dicts.get_object() if font_dicts else {}
    fonts = {} if fonts is None else fonts
    decoders = {}
    for name, value in font_dicts.items():
        key = value.idnum if isinstance(value, IndirectObject) else -1 - len(fonts)
        if key not in fonts:
            fonts[key] = _Font(value.get_object())
        decoders[name] = fonts[key]
    xobjects = resources.get("/XObject", {})
    xobjects = xobjects.get_object() if xobjects else {}
    try:
        operations = _operations(page.get_contents().get_data())
    except _Unusual:
        operations = ContentStream(page.get_contents(), reader).operations
    kinds: list[tuple[str, bytes, int | bytes]] = []
    for kind in _RESOURCE_KINDS:
        entries = resources.get(kind)
        for name, value in (entries.get_object().items() if entries is not None else []):
            if isinstance(value, IndirectObject):
                kinds.append((kind, name.encode("latin-1"), value.idnum))
            else:
                buffer = io.BytesIO()
                value.write_to_stream(buffer)
                kinds.append((kind, name.encode("latin-1"), buffer.getvalue()))
    named = {(kind, name) for kind, name, _value in kinds}

    fields: dict[int, Field] = {}
    number_field: Field | None = None
    qr: tuple[float, float, float, float] | None = None
    stand_in = b""  # the QR code stand-in's name: not drawn, not kept
    # The graphics state this reading needs: matrix, font, size, leading, colour.
    ctm: tuple[float, ...] = (1, 0, 0, 1, 0, 0)
    font: _Font | None = None
    font_name = b""
    size = 0.0
    leading = 0.0
    color: tuple[float, ...] = (0.0,)
    saved: list[tuple[Any, ...]] = []
    tm = tlm = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    depth = 0
    # Top-level blocks: (operations, holds the number, bottom).
    blocks: list[list[Any]] = [[[], False, None]]
    kept: list[Any] = blocks[0][0]

    def show(data: bytes, pieces: list[Any]) -> list[Any]:
        """``data``'s pieces added to the text operation under way; at each marker
        that operation is cut (its account's text drawn there). The pieces left."""
        nonlocal number_field, tm
        assert font is not None
        text = font.decode(data)
        spans = [(m.start(), m.end(), int(m.group(1))) for m in _MARK.finditer(text)]
        figures = re.search(FIGURE + "+", text)
        if figures:
            spans.append((figures.start(), figures.end(), NUMBER))
            blocks[-1][1] = True
        spans.sort()
        widths = [font.widths.get(code, 0.0) * size / 1000 for code in data]
        start = 0
        for begin, end, index in spans:
            if begin > start:
                pieces.append(ByteStringObject(data[start:begin]))
            point = _multiply(_multiply((1, 0, 0, 1, sum(widths[:begin]), 0), tm), ctm)
            found = Field(round(point[4], 3), round(point[5], 3), font.name, size * (tm[0] if tm[0] else 1), color, leading)
            if index >= 0:
                fields[index] = found
            else:
                number_field = found
            if pieces:
                kept.append(([ArrayObject(pieces)], b"TJ"))
            kept.append(_Cut(index, font_name, size))
            pieces = []
            start = end
        if start < len(data):
            pieces.append(ByteStringObject(data[start:]))
        tm = _multiply((1, 0, 0, 1, sum(widths), 0), tm)
        return pieces

    def raw(value: Any) -> bytes:
        return bytes(value) if isinstance(value, bytes) else bytes(value.original_bytes)

    for operands, operator in operations:
        op = operator
        out_operands, out_operator = operands, operator
        if op == b"q":
            saved.append((ctm, font, font_name, size, leading, color))
            if depth == 0:
                blocks.append([[], False, None])
                kept = blocks[-1][0]
            depth += 1
        elif op == b"Q":
            if saved:
                ctm, font, font_name, size, leading, color = saved.pop()
            depth = max(0, depth - 1)
        elif op == b"cm":
            matrix = tuple(float(v) for v in operands)
            ctm = _multiply(matrix, ctm)
            if depth == 1 and blocks[-1][2] is None:
                blocks[-1][2] = ctm[5]
        elif op == b"BT":
            tm = tlm = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
        elif op == b"Tm":
            tm = tlm = tuple(float(v) for v in operands)
        elif op in (b"Td", b"TD"):
            tx, ty = (float(v) for v in operands)
            tlm = _multiply((1, 0, 0, 1, tx, ty), tlm)
            tm = tlm
            if op == b"TD":
                leading = -ty
        elif op == b"T*":
            tlm = _multiply((1, 0, 0, 1, 0, -leading), tlm)
            tm = tlm
        elif op == b"TL":
            leading = float(operands[0])
        elif op == b"Tf":
            font, font_name = decoders.get(operands[0]), str(operands[0]).encode("latin-1")
            size = float(operands[1])
        elif op == b"rg":
            color = tuple(float(v) for v in operands)
        elif op == b"g":
            color = (float(operands[0]),)
        elif op in (b"Tj", b"TJ", b"'") and font is not None:
            if op == b"'":
                tlm = _multiply((1, 0, 0, 1, 0, -leading), tlm)
                tm = tlm
                kept.append(([], b"T*"))
            pieces: list[Any] = []
            items = operands[0] if op == b"TJ" else [operands[0]]
            for item in items:
                if isinstance(item, (int, float)) or type(item).__name__ in ("FloatObject", "NumberObject"):
                    pieces.append(item)
                    tm = _multiply((1, 0, 0, 1, -float(item) / 1000 * size, 0), tm)
                    continue
                pieces = show(raw(item), pieces)
            if not pieces:
                continue
            out_operands, out_operator = [ArrayObject(pieces)], b"TJ"
        elif op == b"Do":
            target = xobjects.get(operands[0])
            target = target.get_object() if target is not None else None
            if target is not None and target.get("/Subtype") == "/Image" and int(target.get("/Width", 0)) == QR_PIXELS \
                    and int(target.get("/Height", 0)) == QR_PIXELS:
                a, _b, _c, d, e, f = ctm
                qr = (e, f, a, d)
                stand_in = str(operands[0]).encode("latin-1")
                continue
        kept.append((out_operands, out_operator))

    outline = tuple(tuple(op[1] if isinstance(op, tuple) else b"" for op in block[0]) for block in blocks)
    if under is not None:
        if outline[: len(under)] != under:
            return None
        blocks = blocks[len(under):]
    header_ops: list[Any] = []
    body_ops: list[Any] = []
    header_bottom: float | None = None
    for operations_of, holds_number, bottom in blocks:
        if holds_number:
            header_ops += operations_of
            header_bottom = bottom if header_bottom is None else min(header_bottom, bottom or 0)
        else:
            body_ops += operations_of
    return Stamp(path, number, _band(header_ops, reader, named), _band(body_ops, reader, named),
                 header_bottom, fields, number_field, qr,
                 tuple(k for k in kinds if (k[0], k[1]) != ("/XObject", stand_in)), outline)


#: The tokens of a content stream as reportlab writes it (:func:`_operations`).
_TOKEN = re.compile(
    rb"\s+|%[^\r\n]*"
    rb"|(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    rb"|(?P<name>/[^\s/\[\]()<>{}%#]*)(?![#])"
    rb"|(?P<string>\()"
    rb"|(?P<hex><[0-9A-Fa-f\s]*>)"
    rb"|(?P<open>\[)|(?P<close>\])"
    rb"|(?P<operator>[A-Za-z'\"*][A-Za-z0-9'\"*]*)"
)
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("f"): b"\f",
            ord("("): b"(", ord(")"): b")", ord("\\"): b"\\"}


class _Unusual(Exception):
    """A content stream :func:`_operations` leaves to pypdf's parser."""


def _literal(data: bytes, start: int) -> tuple[bytes, int]:
    """The string opening at ``start`` (after its parenthesis), decoded; where it ends."""
    out = bytearray()
    depth = 1
    index = start
    while index < len(data):
        char = data[index]
        if char == 0x5C:  # backslash
            following = data[index + 1 : index + 2]
            if following in (b"\n", b"\r"):
                index += 2 + (following == b"\r" and data[index + 2 : index + 3] == b"\n")
                continue
            if following.isdigit():
                digits = re.match(rb"[0-7]{1,3}", data[index + 1 : index + 4])
                if digits is None:
                    raise _Unusual("escape")
                out.append(int(digits.group(0), 8) & 0xFF)
                index += 1 + len(digits.group(0))
                continue
            out += _ESCAPES.get(following[0], following) if following else b""
            index += 2
            continue
        if char == 0x28:
            depth += 1
        elif char == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out), index + 1
        out.append(char)
        index += 1
    raise _Unusual("unterminated string")


def _operations(data: bytes) -> list[tuple[list[Any], bytes]]:
    """A content stream's operations, as pypdf's ``ContentStream.operations``
    gives them (numbers, names, strings, arrays), read with one regular
    expression: pypdf reads byte by byte, which made most of a marked page's
    reading. Anything else (dictionaries, inline images) is :class:`_Unusual`."""
    from pypdf.generic import ArrayObject, ByteStringObject, FloatObject, NameObject, NumberObject

    operations: list[tuple[list[Any], bytes]] = []
    operands: list[Any] = []
    stack: list[list[Any]] = []
    index = 0
    match = _TOKEN.match
    while index < len(data):
        found = match(data, index)
        if found is None:
            raise _Unusual(data[index : index + 10])
        index = found.end()
        kind = found.lastgroup
        if kind is None:
            continue
        token = found.group(kind)
        target = stack[-1] if stack else operands
        if kind == "number":
            target.append(FloatObject(token.decode()) if b"." in token else NumberObject(int(token)))
        elif kind == "name":
            target.append(NameObject(token.decode("latin-1")))
        elif kind == "string":
            value, index = _literal(data, index)
            target.append(ByteStringObject(value))
        elif kind == "hex":
            digits = re.sub(rb"\s", b"", token[1:-1])
            target.append(ByteStringObject(bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode())))
        elif kind == "open":
            stack.append(ArrayObject())
        elif kind == "close":
            if not stack:
                raise _Unusual("]")
            array = stack.pop()
            (stack[-1] if stack else operands).append(array)
        else:
            if stack or token in (b"BI", b"ID", b"EI", b"true", b"false", b"null"):
                raise _Unusual(token)
            operations.append((operands, token))
            operands = []
    if stack or operands:
        raise _Unusual("trailing operands")
    return operations


def _band(operations: list[Any], reader: Any, named: set[tuple[str, bytes]]) -> Band:
    """Operations written as a band: cut at each marker, resource names apart."""
    from pypdf.generic import ContentStream, NameObject

    parts: list[tuple[bytes, ...]] = []
    slots: list[int] = []
    part: list[bytes] = []
    buffer = io.BytesIO()

    def flush() -> None:
        if buffer.tell():
            part.append(buffer.getvalue())
            buffer.seek(0)
            buffer.truncate()

    for operation in operations:
        if isinstance(operation, _Cut):
            flush()
            parts.append(tuple(part))
            slots.append(operation.slot)
            part = operation.resume()
            continue
        operands, operator = operation
        if operator == b"INLINE IMAGE":
            stream = ContentStream(None, reader)
            stream.operations = [operation]
            buffer.write(stream.get_data() + b"\n")
            continue
        kind, at = _NAMED_BY.get(operator, (None, 0))
        for position, operand in enumerate(operands):
            if (kind is not None and isinstance(operand, NameObject) and position == at % max(len(operands), 1)
                    and (kind, str(operand).encode("latin-1")) in named):
                flush()
                part.append(_Name(str(operand).encode("latin-1")[1:]))
            else:
                operand.write_to_stream(buffer)
            buffer.write(b" ")
        buffer.write(operator + b"\n")
    flush()
    parts.append(tuple(part))
    return Band(tuple(parts), tuple(slots))


# -- the workers: drawing and stamping ------------------------------------------------------------


#: PostScript name of each shipped font file -> (family, bold).
_FACES = {
    "DejaVuSans": ("PPSans", False),
    "DejaVuSans-Bold": ("PPSans", True),
    "DejaVuSansMono": ("PPMono", False),
    "DejaVuSansMono-Bold": ("PPMono", True),
}


def compose(plan: Plan, out: Any) -> None:
    """Write the chunk's PDF to the binary file ``out``: each letter the marked
    page's content with the account's texts in the markers' places.

    The canvas draws each page's texts and QR code, each after a comment naming
    its slot; a page's content stream is then the bands of its marked pages, its
    texts put in between where the markers stood: the text reads in the order of
    a letter laid out whole. Written as bytes, as :mod:`.merge` copies chunks:
    the canvas's objects as they are but for the pages' contents and resources,
    then the marked pages' resources (fonts, images) and what they refer to,
    once a chunk, under names of their own (``/L<stamp>.<name>``)."""
    from .merge import _LENGTH, _raw_objects

    overlay = _draw(plan, fonts.typesetter(plan.fallbacks))
    drawn = _raw_objects(overlay)
    numbers = iter(range(max(drawn.offsets) + 1, 1 << 30))
    written: list[tuple[int, bytes]] = []
    copied: dict[tuple[str, int], int] = {}

    def copy(path: str, number: int) -> int:
        """Object ``number`` of a marked PDF (and all it refers to), renumbered."""
        key = (path, number)
        if key in copied:
            return copied[key]
        copied[key] = new = next(numbers)
        head, tail = _raw_of(path).body(number)
        written.append((new, _REFERENCE.sub(lambda m: b"%d 0 R" % copy(path, int(m.group(1))), head) + tail))
        return new

    @functools.cache
    def entries(index: int) -> dict[str, bytes]:
        """The resources of stamp ``index`` by kind, renamed."""
        stamp = plan.stamps[index]
        by_kind: dict[str, list[bytes]] = {}
        for kind, name, value in stamp.resources:
            if isinstance(value, int):
                target = b"%d 0 R" % copy(stamp.path, value)
            else:
                target = _REFERENCE.sub(lambda m: b"%d 0 R" % copy(stamp.path, int(m.group(1))), value)
            by_kind.setdefault(kind, []).append(b"/" + _prefix(index) + name[1:] + b" " + target)
        return {kind: b" ".join(items) for kind, items in by_kind.items()}

    @functools.cache
    def bound(index: int, band: str) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
        """A band's parts with their resources renamed."""
        cut = getattr(plan.stamps[index], band)
        prefix = b"/" + _prefix(index)
        return tuple(b"".join(prefix + p if isinstance(p, _Name) else p for p in part) for part in cut.parts), cut.slots

    @functools.cache
    def canvas_entries(resources: bytes, kind: bytes) -> bytes:
        return _entries(drawn, resources, kind)

    def resources_of(head: bytes, spec: Page) -> bytes:
        canvas = _resources(drawn, head)
        kinds: dict[str, list[bytes]] = {}
        for kind in ("/Font", "/XObject"):
            found = canvas_entries(canvas, kind.encode("ascii"))
            if found:
                kinds[kind] = [found]
        for index in dict.fromkeys(layer.stamp for layer in spec.layers):
            for kind, items in entries(index).items():
                kinds.setdefault(kind, []).append(items)
        return (b"<< /ProcSet [ /PDF /Text /ImageB /ImageC /ImageI ] "
                + b" ".join(kind.encode("ascii") + b" << " + b" ".join(items) + b" >>" for kind, items in kinds.items())
                + b" >>")

    def content(head: bytes, tail: bytes, spec: Page) -> bytes:
        length = _LENGTH.search(head)
        assert length is not None
        start = tail.index(b"\n") + 1
        data = tail[start : start + int(length.group(1))]
        if b"/ASCII85Decode" in head:
            data = base64.a85decode(data.strip(), adobe=True)
        if b"/FlateDecode" in head:
            data = zlib.decompress(data)
        pieces = _SLOT.split(data)
        texts = {(layer, slot): piece for layer, slot, piece in zip(pieces[1::3], pieces[2::3], pieces[3::3])}
        parts: list[bytes] = []
        for number, layer in enumerate(spec.layers):
            cuts, slots = bound(layer.stamp, layer.band)
            key = b"%d" % number
            if layer.offset is not None:
                parts.append(b"q 1 0 0 1 " + _numbers(layer.offset) + b" cm\n")
            for cut, slot in zip(cuts, slots):
                parts += (cut, texts.get((key, b"%d" % slot), b""))
            parts += (cuts[-1], texts.get((key, b"qr"), b""))
            if layer.offset is not None:
                parts.append(b"Q\n")
        data = zlib.compress(b"".join(parts))
        return b"<< /Filter /FlateDecode /Length %d >>\n" % len(data) + b"stream\n" + data + b"\nendstream"

    pages = dict(zip(drawn.page_order, plan.pages))
    contents: dict[int, Page] = {}
    for number, spec in pages.items():
        found = re.search(rb"/Contents (\d+) 0 R", drawn.body(number)[0])
        assert found is not None
        contents[int(found.group(1))] = spec
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for number in sorted(drawn.offsets):
        head, tail = drawn.body(number)
        spec = pages.get(number)
        if spec is not None:
            head = _replace_resources(head, resources_of(head, spec))
        elif number in contents:
            head, tail = content(head, tail, contents[number]), b""
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + head + tail + b"\nendobj\n")
    for number, body in written:
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    size = max(offsets) + 1
    xref = out.tell()
    lines = [b"xref\n0 %d\n" % size, b"0000000000 65535 f \n"]
    for number in range(1, size):
        offset = offsets.get(number)
        lines.append(b"%010d 00000 n \n" % offset if offset is not None else b"0000000000 65535 f \n")
    out.write(b"".join(lines))
    root = re.search(rb"/Root (\d+) 0 R", overlay[overlay.rindex(b"trailer"):])
    assert root is not None
    out.write(b"trailer\n<< /Size %d /Root %s 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, root.group(1), xref))


_REFERENCE = re.compile(rb"(\d+) 0 R")
#: The comment the canvas writes before each text it draws: the text's layer and slot.
_SLOT = re.compile(rb"%PP(\d+)\.(-?\d+|qr)\r?\n")


def _prefix(index: int) -> bytes:
    """What the names of stamp ``index``'s resources start with, on a page."""
    return b"L%d." % index


def _entries(objects: Any, resources: bytes, kind: bytes) -> bytes:
    """The entries of the ``kind`` dictionary of ``resources`` (followed when a reference), or b""."""
    found = re.compile(rb"%s\s*(?:(\d+) 0 R|<<)" % re.escape(kind)).search(resources)
    if found is None:
        return b""
    if found.group(1) is not None:
        data = objects.body(int(found.group(1)))[0].strip()
        return data[data.index(b"<<") + 2 : data.rindex(b">>")].strip()
    start = found.end() - 2
    return resources[start + 2 : _dictionary_end(resources, start) - 2].strip()


def _resources(objects: Any, head: bytes) -> bytes:
    """A page's resource dictionary, as bytes (followed when it is a reference)."""
    at = head.index(b"/Resources") + len(b"/Resources")
    found = re.compile(rb"\s*(\d+) 0 R").match(head, at)
    if found is not None:
        return objects.body(int(found.group(1)))[0].strip()
    start = head.index(b"<<", at)
    return head[start : _dictionary_end(head, start)]


def _dictionary_end(data: bytes, start: int) -> int:
    """Where the dictionary opening at ``start`` ends (past its ``>>``)."""
    depth = 0
    index = start
    while index < len(data):
        pair = data[index : index + 2]
        if pair == b"<<":
            depth += 1
            index += 2
            continue
        if pair == b">>":
            depth -= 1
            index += 2
            if depth == 0:
                return index
            continue
        index += 1
    raise ValueError("unbalanced dictionary")


def _replace_resources(head: bytes, resources: bytes) -> bytes:
    at = head.index(b"/Resources")
    after = at + len(b"/Resources")
    found = re.compile(rb"\s*(\d+) 0 R").match(head, after)
    if found is not None:
        end = found.end()
    else:
        end = _dictionary_end(head, head.index(b"<<", after))
    return head[:at] + b"/Resources " + resources + head[end:]


@functools.lru_cache(maxsize=16)
def _raw_of(path: str) -> Any:
    from .merge import _raw_objects

    with open(path, "rb") as handle:
        return _raw_objects(handle.read())


def _draw(plan: Plan, typesetter: fonts.Typesetter) -> bytes:
    """The accounts' texts and QR codes, a page each (reportlab's canvas), each
    after a comment naming its slot (:data:`_SLOT`). Its streams encoded as
    xhtml2pdf encodes them (``rl_config.useA85`` as it is when saving): the
    fonts' programs are then the same bytes as the layouts', and the merge keeps
    one copy of them."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas
    from xhtml2pdf.bidi import get_display, needs_bidi

    fonts.register_stable_fonts()
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, pageCompression=1, initialFontName=fonts.initial_font())
    qr_forms: dict[str, str] = {}
    for spec in plan.pages:
        for number, layer in enumerate(spec.layers):
            stamp = plan.stamps[layer.stamp]
            for index, text in enumerate(layer.texts):
                place = stamp.fields.get(index)
                if place is not None and text:
                    pdf.addLiteral(f"%PP{number}.{index}")
                    _text(pdf, typesetter, place, text, get_display, needs_bidi)
            if layer.number and stamp.number is not None:
                pdf.addLiteral(f"%PP{number}.{NUMBER}")
                _text(pdf, typesetter, stamp.number, layer.number, get_display, needs_bidi)
            if layer.qr and stamp.qr:
                pdf.addLiteral(f"%PP{number}.qr")
                _qr(pdf, layer.qr, stamp.qr, qr_forms)
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _text(pdf: Any, typesetter: fonts.Typesetter, place: Field, text: str, get_display: Any, needs_bidi: Any) -> None:
    """The operators showing ``text`` in the marked page's text object, where the
    marker was (its position, colour and leading are in effect there): font
    changes and strings only, written as a literal of the page."""
    from xhtml2pdf.util import shape_frag_text

    family, bold = _FACES.get(place.font, ("PPSans", False))
    # As xhtml2pdf does: Arabic letters joined, run by run in the face that
    # draws them, then the line put in drawing order.
    text = "".join(shape_frag_text(run, face.metrics) or run for face, run in typesetter.runs(text, family, bold))
    if needs_bidi(text, "L"):
        text = get_display(text, "L")
    line = pdf.beginText()
    assert line._code[0] == "BT" and line._code[1].endswith(" Tm")
    for face, run in typesetter.runs(text, family, bold):
        line.setFont(face.metrics, place.size, place.leading)
        line.textOut(run)
    pdf.addLiteral(" ".join(line._code[2:]))


@functools.lru_cache(maxsize=64)
def _qr_code(data: str) -> str:
    """The QR code of ``data`` as PDF operators in the unit square (white, then
    the dark modules, rows merged into runs), quiet zone included: the same
    modules as the PNG of :func:`~.render.qr_data_uri`, drawn as squares."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=4, border=2)
    code.add_data(data)
    code.make(fit=True)
    matrix = code.get_matrix()
    step = 1 / len(matrix)
    parts = ["1 1 1 rg 0 0 1 1 re f 0 0 0 rg"]
    for number, row in enumerate(matrix):
        bottom = 1 - (number + 1) * step
        start = None
        for index, dark in enumerate([*row, False]):
            if dark and start is None:
                start = index
            elif not dark and start is not None:
                parts.append(f"{start * step:.5f} {bottom:.5f} {(index - start) * step:.5f} {step:.5f} re")
                start = None
    parts.append("f")
    return "\n".join(parts)


def _qr(pdf: Any, data: str, box: tuple[float, float, float, float], forms: dict[str, str]) -> None:
    """The QR code in ``box`` (x, y, width, height): a form per content and chunk."""
    name = forms.get(data)
    if name is None:
        name = forms[data] = f"ppqr{len(forms)}"
        pdf.beginForm(name, 0, 0, 1, 1)
        pdf.addLiteral(_qr_code(data))
        pdf.endForm()
    x, y, width, height = box
    pdf.saveState()
    pdf.transform(width, 0, 0, height, x, y)
    pdf.doForm(name)
    pdf.restoreState()

