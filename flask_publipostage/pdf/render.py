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
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from flask import current_app

from ..config import EntLinks, config_value
from ..i18n import gettext as _
from ..i18n import ngettext
from ..recipients import Recipient
from . import fonts

LETTER = "letter"
CARDS = "cards"
CARDS_PER_PAGE = 8

#: Text widths in millimetres, matching the templates' CSS.
LETTER_WIDTH = 176.0
#: Inside the credentials box, left of the QR code.
LETTER_BOX = 134.0
CARD_WIDTH = 88.0
#: Cards: column and row steps, first row's top (mm, from the page's content box).
CARD_STEP_X = 97
CARD_STEP_Y = 67
CARD_TOP = 7
#: Lines kept on a letter for a parent's children before "and N more".
LETTER_CHILDREN = 5
MISSING_ROWS = 30


@dataclass(frozen=True)
class Options:
    """What the admin chose under "Générer en PDF"."""

    template: str = LETTER
    postal: bool = False
    signoff: bool = False

    @property
    def unit(self) -> int:
        """Accounts per page: chunks inside a group are cut on multiples of it."""
        return CARDS_PER_PAGE if self.template == CARDS else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        return cls(
            template=str(data.get("template", LETTER)),
            postal=bool(data.get("postal")),
            signoff=bool(data.get("signoff")),
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

    # The names the letter and card templates use.
    ent_name = property(lambda self: self.links.name)
    ent_url = property(lambda self: self.links.url)
    activation_url = property(lambda self: self.links.activation_url)
    reset_url = property(lambda self: self.links.reset_url)
    password_rule = property(lambda self: self.links.password_rule)

    @classmethod
    def from_config(cls, school_name: str = "") -> Settings:
        logo = config_value("LOGO_PATH")
        logo = str(logo) if fonts.logo_usable(logo) else None
        address = config_value("SCHOOL_ADDRESS") or ()
        if isinstance(address, str):
            address = tuple(line for line in address.splitlines() if line.strip())
        return cls(
            links=EntLinks.from_config(),
            logo_path=logo,
            school_name=school_name or str(config_value("SCHOOL_NAME") or ""),
            school_address=tuple(str(a) for a in address),
            qr_code=bool(config_value("PDF_QR_CODE")),
            qr_params=config_value("PDF_QR_PARAMS"),
            signoff_rows=max(5, int(config_value("PDF_SIGNOFF_ROWS"))),
            roots=fonts.allowed_roots(logo),
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


def group_label(recipient_group: str, group_by: str | None) -> str:
    if group_by is None:
        return ""
    if recipient_group:
        return recipient_group
    return _("Without a class") if group_by == "class" else _("Without a profile")


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


def qr_for(recipient: Recipient, settings: Settings) -> str | None:
    if not settings.qr_code:
        return None
    url = settings.reset_url if recipient.activated else settings.activation_url
    if settings.qr_params and not recipient.activated:
        url += settings.qr_params.format(
            login=quote(recipient.login, safe=""),
            code=quote(recipient.activation_code or "", safe=""),
        )
    elif settings.qr_params and "{code}" not in settings.qr_params:
        url += settings.qr_params.format(login=quote(recipient.login, safe=""), code="")
    return qr_data_uri(url)


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


def letter_view(recipient: Recipient, settings: Settings) -> dict[str, Any]:
    """What one letter prints, already fitted to the page."""
    children = [_child_text(c) for c in recipient.children]
    shown = children
    more = 0
    if len(children) > LETTER_CHILDREN:
        shown, more = children[: LETTER_CHILDREN - 1], len(children) - (LETTER_CHILDREN - 1)
    return {
        "r": recipient,
        "name_lines": fonts.fit_lines(recipient.full_name, LETTER_WIDTH, 15, lines=2, bold=True),
        "profile": recipient.profile_label,
        "class_lines": fonts.fit_lines(_class_text(recipient), LETTER_WIDTH, 11, lines=2),
        "children": [fonts.fit(c, LETTER_WIDTH - 8, 11) for c in shown],
        "more_children": more,
        "login_lines": fonts.fit_lines(recipient.login, LETTER_BOX, 15, lines=4, family="PPMono", bold=True),
        "code": recipient.activation_code,
        "code_lines": fonts.fit_lines(recipient.activation_code or "", LETTER_BOX, 15, lines=4, family="PPMono", bold=True),
        "address": [fonts.fit(line, 82, 10.5) for line in recipient.postal_address[:6]],
        "address_name": fonts.fit(recipient.full_name, 82, 10.5),
        "qr": qr_for(recipient, settings),
    }


def card_view(recipient: Recipient, settings: Settings) -> dict[str, Any]:
    """What one card prints: short, fitted to the card whatever the data."""
    if recipient.children:
        who = _("Parent of: %(children)s", children=", ".join(_child_text(c) for c in recipient.children))
        lines = fonts.fit_lines(who, CARD_WIDTH, 8.5, lines=2)
    else:
        detail = recipient.profile_label
        if recipient.classes:
            detail = _("%(profile)s, %(classes)s", profile=detail, classes=", ".join(recipient.classes)) if detail else ", ".join(recipient.classes)
        lines = fonts.fit_lines(detail, CARD_WIDTH, 8.5, lines=2)
    return {
        "r": recipient,
        "name_lines": fonts.fit_lines(recipient.full_name, CARD_WIDTH, 11, lines=2, bold=True),
        "detail_lines": lines,
        "profile": recipient.profile_label if recipient.children else "",
        "login_lines": fonts.fit_lines(recipient.login, CARD_WIDTH, 10.5, lines=3, family="PPMono", bold=True),
        "code": recipient.activation_code,
        "code_lines": fonts.fit_lines(recipient.activation_code or "", CARD_WIDTH, 10.5, lines=3, family="PPMono", bold=True),
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
                    {"cards": cards, "rows": math.ceil(len(batch) / 2), "group": group, "sheet": number, "sheets": total},
                )
            )
        return sheets
    for index, recipient in enumerate(recipients):
        number = group.first + index if group else 0
        sheets.append(Sheet("letter", {"v": letter_view(recipient, settings), "group": group, "number": number}))
    return sheets


def signoff_sheets(recipients: Sequence[Recipient], group: Group, settings: Settings) -> list[Sheet]:
    """The sign-off list of a class group, ``PDF_SIGNOFF_ROWS`` rows a page."""
    rows = [
        {
            "last_name": fonts.fit(r.last_name, 44, 10),
            "first_name": fonts.fit(r.first_name, 36, 10),
            "login": fonts.fit(r.login, 42, 9.5, family="PPMono"),
        }
        for r in recipients
    ]
    per_page = settings.signoff_rows
    pages = max(1, math.ceil(len(rows) / per_page))
    return [
        Sheet(
            "signoff",
            {"group": group, "rows": rows[i * per_page : (i + 1) * per_page], "page": i + 1, "pages": pages},
        )
        for i in range(pages)
    ]


def signoff_pages(count: int, settings: Settings) -> int:
    return max(1, math.ceil(count / settings.signoff_rows))


def missing_sheets(rows: Sequence[Sequence[str]]) -> list[Sheet]:
    """The closing list of accounts without a postal address."""
    items = [
        {"name": fonts.fit(r[0], 70, 10), "login": fonts.fit(r[1], 50, 9.5, family="PPMono"), "group": fonts.fit(r[2], 45, 10)}
        for r in rows
    ]
    pages = max(1, math.ceil(len(items) / MISSING_ROWS))
    return [
        Sheet("missing", {"rows": items[i * MISSING_ROWS : (i + 1) * MISSING_ROWS], "page": i + 1, "pages": pages, "total": len(items)})
        for i in range(pages)
    ]


def missing_row(recipient: Recipient, group_by: str | None) -> list[str]:
    return [recipient.full_name, recipient.login, group_label(recipient.group, group_by)]


# -- the document ---------------------------------------------------------------------


def render_document(sheets: Iterable[Sheet], options: Options, settings: Settings) -> str:
    """The whole HTML of a chunk (or of a small run): one page per sheet."""
    template = current_app.jinja_env.get_template("publipostage/pdf/document.html")
    return template.render(
        sheets=list(sheets),
        options=options,
        settings=settings,
        font_faces=fonts.font_face_css(),
        # The same few labels repeat on every page: translate each once.
        _pp=_memo(_),
        _pp_n=_memo(ngettext),
    )


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
