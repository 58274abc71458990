"""From recipients to the HTML xhtml2pdf turns into letters, cards and lists.

Everything here runs in the web (or Celery) process, in an app context: the
templates are the app's (so a host overrides them by path), the texts come from
the extension's catalog. The worker processes only get the finished HTML.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import quote

from flask import current_app

from ..config import EntLinks, config_value
from ..i18n import gettext as _
from ..i18n import ngettext
from ..recipients import ACTIVATION, FEDERATED, RENEWAL, Recipient, parent_of
from . import fonts

LETTER = "letter"
CARDS = "cards"
CARDS_PER_PAGE = 8

#: Text widths in millimetres, matching the templates' CSS.
LETTER_WIDTH = 176.0
#: Inside the credentials box, left of the QR code.
LETTER_BOX = 134.0
CARD_WIDTH = 88.0
#: A card's QR code: its side, in the card's bottom-right corner (mm; the letter's
#: is 28). Modules of about 0.6 mm for an ENT address: a phone reads it from the
#: card held in the other hand. The activation code and the address beside it keep
#: to CARD_BESIDE_QR; above it, the name, the profile or children and the login
#: take the card's whole width.
CARD_QR = 24.0
CARD_BESIDE_QR = CARD_WIDTH - CARD_QR - 3
#: Lines of name, profile or children and login (the name's are the tallest) that
#: still end above the QR code (measured: two of name, two of children and one of
#: login end 1.5 mm above it); a login reaching further is fitted beside it too.
CARD_LINES_ABOVE_QR = 5
#: Sizes (pt) tried for a card's last lines (where to activate, or to choose a new
#: password) to keep them on two lines beside the QR code; at the last one they
#: take the lines they need, up to three.
CARD_URL_SIZES = (8.0, 7.0)
#: Cards: column and row steps, first row's top (mm, from the page's content box).
CARD_STEP_X = 97
CARD_STEP_Y = 67
CARD_TOP = 7
#: Lines kept on a letter for a parent's children before "and N more".
LETTER_CHILDREN = 5
#: Lines of one child on a letter (name and classes), at most.
LETTER_CHILD_LINES = 2
#: Sizes (pt) tried in turn for the name on a letter, to keep it on two lines;
#: at the last one it takes the lines it needs, up to LETTER_NAME_MOST.
LETTER_NAME_SIZES = (15.0, 13.0, 11.0, 9.0)
LETTER_NAME_MOST = 8
#: Points a letter leaves to what varies with the account (name lines, the
#: "Parent de" or class lines, login and code lines beyond the first), without and
#: with the postal window. Measured: the postal letter of a parent with a two-line
#: name and five children on a line each fills its page.
LETTER_ROOM = {False: 300.0, True: 144.0}
#: Line pitch of the renderer, in font sizes.
LINE_PITCH = 1.5
#: The address window of a DL envelope: text width (mm) and lines at 10.5 pt.
WINDOW_WIDTH = 82.0
WINDOW_LINES = 8
#: Sign-off sheet columns (mm, 176 in all) and the text width inside each.
SIGNOFF_COLUMNS = {"last_name": 33, "first_name": 29, "profile": 35, "login": 37, "signature": 42}
SIGNOFF_TEXT = {key: width - 3 for key, width in SIGNOFF_COLUMNS.items()}
#: Lists (sign-off sheet, accounts without an address): a row's least height,
#: a text line, a cell's padding, and the height the rows of a page may take (mm),
#: as the CSS of document.html sets them.
SIGNOFF_ROW = 10.0
MISSING_ROW = 6.0
LIST_LINE = 4.5
LIST_PADDING = 2.5
LIST_HEIGHT = 235.0
MISSING_ROWS = 30


@dataclass(frozen=True)
class Options:
    """What the admin chose under "Générer en PDF"."""

    template: str = LETTER
    postal: bool = False
    signoff: bool = False
    #: A bundle for every class: an account in each of its classes (sorted by class).
    every_class: bool = False
    #: One PDF per class bundle, in a ZIP file (sorted by class first).
    zip: bool = False
    #: Renewal codes asked of the host (:mod:`~flask_publipostage.renewal`):
    #: ``""`` (none), ``"without_email"`` or ``"activated"``...
    renew: str = ""
    #: ...and for the accounts whose activation code has expired.
    renew_expired: bool = False

    @property
    def renews(self) -> bool:
        return bool(self.renew or self.renew_expired)

    @property
    def unit(self) -> int:
        """Accounts per page: chunks inside a group are cut on multiples of it."""
        return CARDS_PER_PAGE if self.template == CARDS else 1

    @property
    def extension(self) -> str:
        return "zip" if self.zip else "pdf"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def file_words(self) -> str:
        """What the file holds, for its name ("lettres", "cartes", "courrier postal",
        "avec émargement", "dans chaque classe")."""
        words = [_("cards") if self.template == CARDS else _("postal letters") if self.postal else _("letters")]
        if self.signoff:
            words.append(_("with sign-off sheets"))
        if self.every_class:
            words.append(_("in every class"))
        return " ".join(words)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        return cls(
            template=str(data.get("template", LETTER)),
            postal=bool(data.get("postal")),
            signoff=bool(data.get("signoff")),
            every_class=bool(data.get("every_class")),
            zip=bool(data.get("zip")),
            renew=str(data.get("renew") or ""),
            renew_expired=bool(data.get("renew_expired")),
        )


@dataclass(frozen=True)
class Settings:
    """Per-run values read once from the configuration."""

    links: EntLinks
    logo_path: str | None
    school_name: str
    school_address: tuple[str, ...]
    qr_code: bool
    qr_params: str | None
    signoff_rows: int
    roots: tuple[str, ...] = field(default=())
    #: The usable fallback font files (``PDF_FALLBACK_FONTS``).
    fallbacks: tuple[str, ...] = field(default=())

    # The names the letter and card templates use.
    ent_name = property(lambda self: self.links.name)
    ent_url = property(lambda self: self.links.url)
    activation_url = property(lambda self: self.links.activation_url)
    reset_url = property(lambda self: self.links.reset_url)
    renewal_url = property(lambda self: self.links.renewal_url)
    federation_name = property(lambda self: self.links.federation_name)
    federation_url = property(lambda self: self.links.federation_url)
    password_rule = property(lambda self: self.links.password_rule)

    @property
    def typesetter(self) -> fonts.Typesetter:
        return fonts.typesetter(self.fallbacks)

    @classmethod
    def from_config(cls, school_name: str = "") -> Settings:
        logo = config_value("LOGO_PATH")
        logo = str(logo) if fonts.logo_usable(logo) else None
        address = config_value("SCHOOL_ADDRESS") or ()
        if isinstance(address, str):
            address = tuple(line for line in address.splitlines() if line.strip())
        fallbacks = fonts.fallback_fonts(config_value("PDF_FALLBACK_FONTS"))
        return cls(
            links=EntLinks.from_config(),
            logo_path=logo,
            school_name=school_name or str(config_value("SCHOOL_NAME") or ""),
            school_address=tuple(str(a) for a in address),
            qr_code=bool(config_value("PDF_QR_CODE")),
            qr_params=config_value("PDF_QR_PARAMS"),
            signoff_rows=max(5, int(config_value("PDF_SIGNOFF_ROWS"))),
            roots=fonts.allowed_roots(logo, fallbacks),
            fallbacks=fallbacks,
        )


@dataclass(frozen=True)
class Group:
    """The group a sheet belongs to, for its header."""

    name: str
    count: int
    #: 1-based index of the sheet's first account in the group.
    first: int = 1


@dataclass(frozen=True)
class Sheet:
    """One printed page: ``kind`` names the template ``publipostage/pdf/<kind>.html``."""

    kind: str
    data: dict[str, Any]


# -- QR codes -------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def qr_data_uri(data: str) -> str:
    """A PNG QR code as a ``data:`` URI (decoded by the renderer, no file read)."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=4, border=2)
    code.add_data(data)
    code.make(fit=True)
    buffer = io.BytesIO()
    # RGB: the renderer decodes it on every letter, and a 1-bit PNG costs it a
    # conversion each time.
    code.make_image(fill_color="black", back_color="white").get_image().convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def qr_target(recipient: Recipient, settings: Settings) -> str | None:
    """What the account's QR code holds, or None when ``PDF_QR_CODE`` is off:
    the activation page; the renewal page with a renewal code; the ENT for a
    federated account (its sign-in page offers the academic identity); the
    password reset page once activated. ``PDF_QR_PARAMS`` added, a code only if
    the host put ``{code}`` there."""
    if not settings.qr_code:
        return None
    content = recipient.content
    code: str | None = None
    if content == RENEWAL:
        url, code = settings.renewal_url, recipient.renewal_code or ""
    elif content == FEDERATED:
        url = settings.ent_url
    elif recipient.activated:
        url = settings.reset_url
    else:
        url, code = settings.activation_url, recipient.activation_code or ""
    if settings.qr_params and (code is not None or "{code}" not in settings.qr_params):
        url += settings.qr_params.format(login=quote(recipient.login, safe=""), code=quote(code or "", safe=""))
    return url


def _day(value: Any) -> str:
    return value.strftime("%d/%m/%Y") if value else ""


def printed_code(recipient: Recipient) -> tuple[str | None, str]:
    """The code a letter or card prints (activation or renewal; None for the
    others) and the last day it works ("30/11/2026", or "" when unknown)."""
    content = recipient.content
    if content == RENEWAL:
        return recipient.renewal_code, _day(recipient.renewal_valid_until_day)
    if content == ACTIVATION:
        return recipient.activation_code, _day(recipient.code_valid_until_day)
    return None, ""


# -- per-account views -------------------------------------------------------------


def _class_text(recipient: Recipient) -> str:
    if not recipient.classes:
        return ""
    label = ngettext("Class: %(names)s", "Classes: %(names)s", len(recipient.classes), names=", ".join(recipient.classes))
    return label


def _child_text(child: Any) -> str:
    if child.classes:
        return _("%(child)s (%(classes)s)", child=child.full_name, classes=", ".join(child.classes))
    return str(child.full_name)


def letter_view(recipient: Recipient, settings: Settings, postal: bool = False) -> dict[str, Any]:
    """What one letter prints, already fitted to its one page. The name prints
    whole (smaller, or on more lines, never cut); a parent's children wrap on two
    lines each while the page has room (``LETTER_ROOM``), else take a line each."""
    t = settings.typesetter
    children = [_child_text(c) for c in recipient.children]
    shown = children
    more = 0
    if len(children) > LETTER_CHILDREN:
        shown, more = children[: LETTER_CHILDREN - 1], len(children) - (LETTER_CHILDREN - 1)
    name_size, name_lines = t.fit_block(
        recipient.full_name, LETTER_WIDTH, LETTER_NAME_SIZES, lines=2, most=LETTER_NAME_MOST, bold=True
    )
    login_lines = t.fit_lines(recipient.login, LETTER_BOX, 15, lines=4, family="PPMono", bold=True)
    code, until = printed_code(recipient)
    code_lines = t.fit_lines(code or "", LETTER_BOX, 15, lines=4, family="PPMono", bold=True)
    used = _height(len(name_lines), name_size) + _height(max(0, len(login_lines) - 1) + max(0, len(code_lines) - 1), 15)
    child_lines = [t.fit_lines(c, LETTER_WIDTH - 8, 11, lines=LETTER_CHILD_LINES) for c in shown]
    if used + _height(1 + sum(map(len, child_lines)) + (1 if more else 0), 11) > LETTER_ROOM[postal]:
        child_lines = [[t.fit(c, LETTER_WIDTH - 8, 11)] for c in shown]
    address = [t.fit(line, WINDOW_WIDTH, 10.5) for line in recipient.postal_address[:6]]
    window_size, address_name = t.fit_block(
        recipient.full_name, WINDOW_WIDTH, (10.5, 9), lines=WINDOW_LINES - len(address), most=4
    )
    if window_size != 10.5:
        address = [t.fit(line, WINDOW_WIDTH, window_size) for line in recipient.postal_address[:6]]
    return {
        "r": recipient,
        "name_lines": name_lines,
        "name_size": name_size,
        "profile": recipient.profile_label,
        "class_lines": t.fit_lines(_class_text(recipient), LETTER_WIDTH, 11, lines=2),
        "children": child_lines,
        "more_children": more,
        "login_lines": login_lines,
        "content": recipient.content,
        "code": code,
        "code_lines": code_lines,
        "valid_until": until,
        "address": address,
        "address_name": address_name,
        "window_size": window_size,
        "qr_target": (target := qr_target(recipient, settings)),
        "qr": qr_data_uri(target) if target is not None else None,
    }


def _height(lines: int, size: float) -> float:
    """Points taken by ``lines`` lines of text of ``size`` points (the renderer's line pitch)."""
    return lines * size * LINE_PITCH


def card_view(recipient: Recipient, settings: Settings) -> dict[str, Any]:
    """What one card prints: short, fitted to the card whatever the data (the one
    place a name may be cut, with an ellipsis). With a QR code, the code and the
    address are fitted beside it (``CARD_BESIDE_QR``), and the login too when the
    lines above would bring it down to the code (``CARD_LINES_ABOVE_QR``)."""
    t = settings.typesetter
    target = qr_target(recipient, settings)
    beside = CARD_BESIDE_QR if target is not None else CARD_WIDTH
    content = recipient.content
    code, until = printed_code(recipient)
    if content == FEDERATED:
        where = _("Sign in at %(url)s with %(federation)s", url=settings.ent_url, federation=settings.federation_name)
    elif content == RENEWAL and until:
        where = _("Choose a new password at %(url)s (code valid until %(date)s)", url=settings.renewal_url, date=until)
    elif content == RENEWAL:
        where = _("Choose a new password at %(url)s", url=settings.renewal_url)
    elif recipient.activated:
        where = _("Forgot password: %(url)s", url=settings.reset_url)
    elif until:
        where = _("Activate your account at %(url)s (code valid until %(date)s)", url=settings.activation_url, date=until)
    else:
        where = _("Activate your account at %(url)s", url=settings.activation_url)
    url_size, url_lines = t.fit_block(where, beside, CARD_URL_SIZES, lines=2, most=3)
    if recipient.children:
        who = _("Parent of: %(children)s", children=", ".join(_child_text(c) for c in recipient.children))
        lines = t.fit_lines(who, CARD_WIDTH, 8.5, lines=2)
    else:
        detail = recipient.profile_label
        if recipient.classes:
            detail = _("%(profile)s, %(classes)s", profile=detail, classes=", ".join(recipient.classes)) if detail else ", ".join(recipient.classes)
        lines = t.fit_lines(detail, CARD_WIDTH, 8.5, lines=2)
    # The ENT, what the card is, then the account's own school: cut first if too long.
    title = {ACTIVATION: _("My first login"), RENEWAL: _("New password")}.get(content, _("My account"))
    head = " · ".join(p for p in (settings.ent_name, title, recipient.school or settings.school_name) if p)
    name_lines = t.fit_lines(recipient.full_name, CARD_WIDTH, 11, lines=2, bold=True)
    login_lines = t.fit_lines(recipient.login, CARD_WIDTH, 10.5, lines=3, family="PPMono", bold=True)
    if target is not None and len(name_lines) + len(lines) + len(login_lines) > CARD_LINES_ABOVE_QR:
        login_lines = t.fit_lines(recipient.login, beside, 10.5, lines=3, family="PPMono", bold=True)
    return {
        "r": recipient,
        "ent_line": t.fit(head, CARD_WIDTH, 8, bold=True),
        "name_lines": name_lines,
        "detail_lines": lines,
        "profile": recipient.profile_label if recipient.children else "",
        "login_lines": login_lines,
        "content": content,
        "code": code,
        "code_lines": t.fit_lines(code or "", beside, 10.5, lines=3, family="PPMono", bold=True),
        # In place of the code's label and value (two lines at least): never cut.
        "federation": t.fit_lines(_("Sign in with %(federation)s: no code needed.", federation=settings.federation_name),
                                  beside, 8.5, lines=2) if content == FEDERATED else [],
        "url_size": url_size,
        "url_lines": url_lines,
        "qr_target": target,
        "qr": qr_data_uri(target) if target is not None else None,
    }


# -- sheets -----------------------------------------------------------------------


def account_sheets(
    recipients: Sequence[Recipient],
    options: Options,
    settings: Settings,
    group: Group | None,
) -> list[Sheet]:
    """Letters (one sheet each) or cards (eight a sheet) for consecutive accounts of
    one group; ``group.first`` is the first account's rank in the group."""
    sheets: list[Sheet] = []
    group = _printed(group, settings) if group else None
    if options.template == CARDS:
        total = math.ceil(group.count / CARDS_PER_PAGE) if group else 0
        for start in range(0, len(recipients), CARDS_PER_PAGE):
            batch = recipients[start : start + CARDS_PER_PAGE]
            number = ((group.first - 1 + start) // CARDS_PER_PAGE + 1) if group else 0
            cards = []
            for slot, recipient in enumerate(batch):
                view = card_view(recipient, settings)
                view["left"] = (slot % 2) * CARD_STEP_X
                view["top"] = CARD_TOP + (slot // 2) * CARD_STEP_Y
                cards.append(view)
            sheets.append(
                Sheet(
                    "cards",
                    {"cards": cards, "rows": math.ceil(len(batch) / 2), "group": group, "sheet": number, "sheets": total,
                     "school": batch[0].school if batch else ""},
                )
            )
        return sheets
    for index, recipient in enumerate(recipients):
        number = group.first + index if group else 0
        view = letter_view(recipient, settings, postal=options.postal)
        sheets.append(Sheet("letter", {"v": view, "group": group, "number": number}))
    return sheets


def _printed(group: Group, settings: Settings) -> Group:
    """The group with its name as the fonts print it (a class name may need a fallback font)."""
    t = settings.typesetter
    return replace(group, name=t.html(t.printable(group.name)))


def signoff_profile(recipient: Recipient, group: Group) -> str:
    """The "Profile" cell: for a parent, whose parent ("Parent de Zoé Abel"), the
    children of the sheet's class first."""
    if not recipient.children:
        return recipient.profile_label
    here = [c for c in recipient.children if str(group.name) in c.classes] or list(recipient.children)
    if len(here) == 1:
        return parent_of(here[0].full_name)
    return _("Parent of: %(children)s", children=", ".join(c.full_name for c in here))


def signoff_sheets(recipients: Sequence[Recipient], group: Group, settings: Settings) -> list[Sheet]:
    """The sign-off list of a class group: names, profile and login wrapped (never
    cut), a wide column to sign; ``PDF_SIGNOFF_ROWS`` rows a page at most, fewer
    when wrapped rows fill it."""
    t = settings.typesetter
    rows = [
        _row(
            SIGNOFF_ROW,
            last_name=t.fit_lines(r.last_name, SIGNOFF_TEXT["last_name"], 10, lines=None),
            first_name=t.fit_lines(r.first_name, SIGNOFF_TEXT["first_name"], 10, lines=None),
            profile=t.fit_lines(signoff_profile(r, group), SIGNOFF_TEXT["profile"], 9, lines=None),
            login=t.fit_lines(r.login, SIGNOFF_TEXT["login"], 9.5, lines=None, family="PPMono"),
        )
        for r in recipients
    ]
    pages = _pages(rows, settings.signoff_rows)
    group = _printed(group, settings)
    return [
        Sheet(
            "signoff",
            {"group": group, "rows": page, "page": i + 1, "pages": len(pages), "widths": SIGNOFF_COLUMNS},
        )
        for i, page in enumerate(pages)
    ]


def signoff_pages(count: int, settings: Settings) -> int:
    """Pages of a sign-off list as planned (wrapped rows may add one)."""
    return max(1, math.ceil(count / settings.signoff_rows))


def _row(least: float, **cells: list[str]) -> dict[str, Any]:
    """A row of a list: its cells (lines each), its CSS ``height`` in mm (``least``,
    or None when its text needs more: a fixed height would make the renderer
    shrink the text) and the ``room`` it takes on the page."""
    lines = max((len(v) for v in cells.values()), default=1)
    room = lines * LIST_LINE + LIST_PADDING
    return {**cells, "height": least if room <= least else None, "room": max(least, room)}


def _pages(rows: list[dict[str, Any]], per_page: int) -> list[list[dict[str, Any]]]:
    """Rows cut into pages: ``per_page`` at most, and no more than a page holds."""
    pages: list[list[dict[str, Any]]] = [[]]
    used = 0.0
    for row in rows:
        if pages[-1] and (len(pages[-1]) >= per_page or used + row["room"] > LIST_HEIGHT):
            pages.append([])
            used = 0.0
        pages[-1].append(row)
        used += row["room"]
    return pages


def missing_sheets(rows: Sequence[Sequence[str]], settings: Settings) -> list[Sheet]:
    """The closing list of accounts without a postal address (names and logins whole)."""
    t = settings.typesetter
    items = [
        _row(
            MISSING_ROW,
            name=t.fit_lines(r[0], 70, 10, lines=None),
            login=t.fit_lines(r[1], 50, 9.5, lines=None, family="PPMono"),
            group=t.fit_lines(r[2], 45, 10, lines=2),
        )
        for r in rows
    ]
    pages = _pages(items, MISSING_ROWS)
    return [
        Sheet("missing", {"rows": page, "page": i + 1, "pages": len(pages), "total": len(items)})
        for i, page in enumerate(pages)
    ]


def missing_row(recipient: Recipient) -> list[str]:
    return [recipient.full_name, recipient.login, recipient.group]


# -- the document ---------------------------------------------------------------------


def render_document(sheets: Iterable[Sheet], options: Options, settings: Settings) -> str:
    """The whole HTML of a chunk (or of a small run): one page per sheet."""
    template = current_app.jinja_env.get_template("publipostage/pdf/document.html")
    html = template.render(
        sheets=list(sheets),
        options=options,
        settings=settings,
        font_faces=FONT_FACES,
        # The same few labels repeat on every page: translate each once.
        _pp=_memo(_),
        _pp_n=_memo(ngettext),
    )
    # The fallback fonts are declared only where text is set in them.
    return html.replace(FONT_FACES, fonts.font_face_css(fonts.fallbacks_used(html, settings.fallbacks)), 1)


#: Where the ``@font-face`` rules go, once the document says which fonts it uses.
FONT_FACES = "/* publipostage: font faces */"


def _memo(function: Any) -> Any:
    cache: dict[Any, str] = {}

    def cached(*args: Any, **variables: Any) -> str:
        try:
            key = (args, tuple(sorted(variables.items())))
            hash(key)
        except TypeError:
            return str(function(*args, **variables))
        if key not in cache:
            cache[key] = str(function(*args, **variables))
        return cache[key]

    return cached
