"""CSV export of a selection: the preview's columns, streamed."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Iterator

from .i18n import gettext as _
from .recipients import Recipient, iter_batches
from .selection import Selection
from .sql import fold_for_sort

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """Neutralise spreadsheet formulas: a cell starting with = + - @ is shown as text."""
    if value and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def classes_cell(recipient: Recipient) -> str:
    if recipient.children:
        return ", ".join(
            _("%(child)s (%(classes)s)", child=c.full_name, classes=" ".join(c.classes))
            if c.classes
            else c.full_name
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


def row(recipient: Recipient) -> list[str]:
    return [
        recipient.last_name,
        recipient.first_name,
        recipient.profile_label,
        recipient.login,
        recipient.activation_code or _("Account activated"),
        recipient.email or "",
        classes_cell(recipient),
        recipient.created_at.strftime("%d/%m/%Y") if recipient.created_at else "",
    ]


def stream(selection: Selection) -> Iterator[str]:
    """UTF-8 with BOM, ``;``-separated, one batch of rows in memory at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(header())
    yield "\ufeff" + buffer.getvalue()
    for batch in iter_batches(selection):
        buffer.seek(0)
        buffer.truncate()
        for recipient in batch:
            writer.writerow([safe_cell(v) for v in row(recipient)])
        yield buffer.getvalue()


def filename(selection: Selection, extension: str = "csv") -> str:
    """``publipostage_<school>_<date>.<ext>``, ASCII only."""
    school = selection.scope.school_name if selection.scope else ""
    slug = "".join(c if c.isascii() and c.isalnum() else "_" for c in (fold_for_sort(school) or "")).strip("_")
    slug = "_".join(part for part in slug.split("_") if part)[:60]
    stem = "_".join(p for p in ("publipostage", slug, date.today().isoformat()) if p)
    return f"{stem}.{extension}"
