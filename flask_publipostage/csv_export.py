"""CSV export of a selection: the preview's columns, streamed."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator
from datetime import date, tzinfo
from typing import Any

from .i18n import gettext as _
from .recipients import Recipient, iter_batches, local_date, parent_of_formatter, school_zone
from .recipients import parent_of as parent_of_name
from .selection import Selection
from .sql import fold_for_sort

#: What makes a spreadsheet read a cell as a formula (Excel, LibreOffice) or run a
#: command (``|`` in DDE payloads): compared after NFKC, so the fullwidth and small
#: forms (＝＋－＠｜, ﹦﹢﹣﹫) count too.
FORMULA_CHARS = frozenset("=+-@|")


def safe_cell(value: str) -> str:
    """Neutralise spreadsheet formulas: a cell whose first visible character is one
    of :data:`FORMULA_CHARS` (after any white space and control or format
    characters, which spreadsheets skip: ``" =1+1"``, ``"\n=1+1"``), or that starts
    with a tab or CR, is prefixed with ``'`` and so shown as text."""
    if not value or value[0].isalnum():
        return value  # the common case, at once: a name starts with a letter
    if value[0] in "\t\r":
        return "'" + value
    for char in value:
        if unicodedata.category(char)[0] in "CZ":
            continue  # control, format (zero-width), separator (spaces)
        if unicodedata.normalize("NFKC", char)[:1] in FORMULA_CHARS:
            return "'" + value
        break
    return value


class _Texts:
    """The translated words of the rows, looked up once per export: a catalog
    lookup costs more than the rest of a row."""

    def __init__(self) -> None:
        self.activated = _("Account activated")
        self.profiles: dict[Any, str] = {}
        self.parent_of = parent_of_formatter()

    def profile(self, recipient: Recipient) -> str:
        if recipient.profile not in self.profiles:
            self.profiles[recipient.profile] = recipient.profile_label
        return self.profiles[recipient.profile]


def classes_cell(recipient: Recipient, texts: _Texts | None = None) -> str:
    """As in the preview: a parent's children with their classes, else the classes."""
    if recipient.children:
        parent_of = texts.parent_of if texts else parent_of_name
        return " / ".join(
            parent_of(c.full_name) + (f" ({', '.join(c.classes)})" if c.classes else "")
            for c in recipient.children
        )
    return ", ".join(recipient.classes)


def header() -> list[str]:
    return [
        _("Last name"),
        _("First name"),
        _("Profile"),
        _("Login"),
        _("Activation code"),
        _("Email"),
        _("Class(es)"),
        _("Created on"),
    ]


def row(recipient: Recipient, texts: _Texts | None = None, zone: tzinfo | None = None) -> list[str]:
    texts = texts or _Texts()
    created = local_date(recipient.created_at, zone)
    return [
        recipient.last_name,
        recipient.first_name,
        texts.profile(recipient),
        recipient.login,
        recipient.activation_code or texts.activated,
        recipient.email or "",
        classes_cell(recipient, texts),
        f"{created.day:02d}/{created.month:02d}/{created.year:04d}" if created else "",
    ]


def stream(selection: Selection) -> Iterator[str]:
    """UTF-8 with BOM, ``;``-separated, one batch of rows in memory at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(header())
    yield "\ufeff" + buffer.getvalue()
    texts = _Texts()
    zone = school_zone()
    for batch in iter_batches(selection):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([safe_cell(v) for v in row(recipient, texts, zone)] for recipient in batch)
        yield buffer.getvalue()


def filename(selection: Selection, extension: str = "csv") -> str:
    """``publipostage_<school>_<date>.<ext>``, ASCII only."""
    school = selection.scope.school_name if selection.scope else ""
    slug = "".join(c if c.isascii() and c.isalnum() else "_" for c in (fold_for_sort(school) or "")).strip("_")
    slug = "_".join(part for part in slug.split("_") if part)[:60]
    stem = "_".join(p for p in ("publipostage", slug, date.today().isoformat()) if p)
    return f"{stem}.{extension}"
