"""CSV export of a selection: the preview's columns, streamed.

An export hands the credentials out as surely as a letter: it is recorded as a
run of its own kind, done as it starts, with its audit row; once the file went out
whole, like a downloaded PDF, it gains an item per account ``exported`` and
distributed (each account's history). An export broken off leaves its audit row
alone: nobody can say which accounts the admin received."""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

import sqlalchemy as sa

from .access import Scope
from .config import config_value
from .i18n import gettext as _
from .i18n import ngettext
from .models import utcnow
from .recipients import Recipient, iter_batches, local_date, local_time, parent_of_formatter, school_zone
from .recipients import parent_of as parent_of_name
from .runs import core
from .runs.models import EXPORTED, Run
from .selection import Selection, perimeter_schools
from .sql import fold_for_sort
from .state import state

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
        self.federated = _("Federated account")
        self.expired = _("Code expired")
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


def code_cell(recipient: Recipient, texts: _Texts) -> str:
    """As in the preview: the code, or why there is none (an expired code is not given)."""
    if recipient.activation_code:
        return recipient.activation_code
    if recipient.federated:
        return texts.federated
    return texts.expired if recipient.code_expired else texts.activated


def header(schools: bool = False) -> list[str]:
    """The columns; ``schools``: the school's too (a perimeter of several schools)."""
    return [
        _("Last name"),
        _("First name"),
        _("Profile"),
        _("Login"),
        _("Activation code"),
        _("Email"),
        _("Class(es)"),
        _("Created on"),
        *([_("School")] if schools else []),
    ]


def row(
    recipient: Recipient, texts: _Texts | None = None, zone: tzinfo | None = None, schools: bool = False
) -> list[str]:
    texts = texts or _Texts()
    created = local_date(recipient.created_at, zone)
    return [
        recipient.last_name,
        recipient.first_name,
        texts.profile(recipient),
        recipient.login,
        code_cell(recipient, texts),
        recipient.email or "",
        classes_cell(recipient, texts),
        f"{created.day:02d}/{created.month:02d}/{created.year:04d}" if created else "",
        *([recipient.school] if schools else []),
    ]


def stream(selection: Selection, run: Run | None = None) -> Iterator[str]:
    """UTF-8 with BOM, ``;``-separated, one batch of rows in memory at a time;
    at its end, ``run`` (:func:`record`) gains its items, distributed now."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    schools = len(perimeter_schools(selection.scope)) > 1
    writer.writerow(header(schools))
    yield "\ufeff" + buffer.getvalue()
    texts = _Texts()
    zone = school_zone()
    for batch in iter_batches(selection):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([safe_cell(v) for v in row(recipient, texts, zone, schools)] for recipient in batch)
        yield buffer.getvalue()
    if run is not None:
        _record_items(run, selection)


def _nothing(run: Run, scope: Scope) -> None:
    """An export has nothing left to do once recorded: its file is the response."""


KIND = core.register(core.Kind(name="csv", drive=_nothing, visibility=core.OWNER, url_key="token", busy=""))


def record(selection: Selection, file_name: str, accounts: int) -> Run:
    """Record the export of ``selection`` (``accounts`` accounts) and its audit row,
    in one commit; the run is done at once. Its items come when :func:`stream` ends
    (one INSERT … SELECT, distributed already: no second pass over them)."""
    run, _created = core.start(
        KIND, selection, {}, item_kind="export", file_name=file_name, audit_action="csv",
        audit_template="csv", audit_count=accounts, inline=True, items=False, perimeter=False,
    )
    core.finish(run.id)
    return run


def _record_items(run: Run, selection: Selection) -> None:
    now = sa.literal(utcnow(), sa.DateTime())
    core.freeze_items(
        run, selection, "export",
        lambda rows: {"state": sa.literal(EXPORTED), "done_at": now, "distributed_at": now},
        every_class=False,
    )
    state().session.commit()


#: Longest file name (the header and every file system take it).
FILENAME_MAX = 150
#: Classes named in a file name; more are counted ("12-classes").
FILENAME_CLASSES = 3


def filename(selection: Selection, extension: str = "csv", content: str | None = None, moment: datetime | None = None) -> str:
    """What the file holds, in its name:
    ``publipostage_<school>_<profiles>_<classes>_<content>_<date>_<time>.<ext>``, e.g.
    ``publipostage_ecole-jules-ferry_parents_cp_ce1_lettres_2026-09-03_14h21.pdf``
    (no profile or class chosen: "tous-profils", "toutes-classes"; more than
    ``FILENAME_CLASSES`` classes: "5-classes"). ``content`` says what the file is
    ("lettres", "cartes"; the CSV: "comptes")."""
    profiles = [_slug(p.plural_label) for p in selection.profiles] or [_slug(_("all profiles"))]
    classes = _class_names(selection)
    if not selection.class_ids:
        classes = [_("all classes")]
    elif len(selection.class_ids) > FILENAME_CLASSES or not all(classes):
        classes = [ngettext("%(num)d class", "%(num)d classes", len(selection.class_ids))]
    return stamped_name(selection.scope, ["-".join(profiles), *classes, content or _("accounts")], extension, moment)


def stamped_name(scope: Scope | None, words: Sequence[str], extension: str, moment: datetime | None = None) -> str:
    """``publipostage_<school>_<words>_<date>_<time>.<ext>``: the school of the scope
    (else ``SCHOOL_NAME``), the time the school's (``moment``, default now). Lower-case
    ASCII letters, digits, ``-`` and ``_`` only (safe in a Content-Disposition
    header), ``FILENAME_MAX`` characters at most."""
    school = (scope.school_name if scope else "") or str(config_value("SCHOOL_NAME") or "")
    local = local_time(moment or datetime.now(timezone.utc))
    tail = f"_{local:%Y-%m-%d_%Hh%M}.{_slug(extension) or 'bin'}"
    parts = ["publipostage", _slug(school)[:40].strip("-"), *(_slug(w) for w in words)]
    head = "_".join(p for p in parts if p)[: FILENAME_MAX - len(tail)].rstrip("-_")
    return head + tail


def _class_names(selection: Selection) -> list[str]:
    """The chosen classes' names as slugs, in school order (the scope's classes only)."""
    if not selection.class_ids or len(selection.class_ids) > FILENAME_CLASSES:
        return []
    host = state().host
    stmt = sa.select(host.class_name_column()).where(host.class_id.in_(selection.class_ids))
    if selection.scope is not None and selection.scope.classes is not None:
        stmt = stmt.where(selection.scope.classes)
    names = state().session.execute(stmt.order_by(host.class_sort_key())).scalars()
    return [_slug(name)[:20].strip("-") for name in names]


def _slug(text: str) -> str:
    """Lower-case ASCII words joined by ``-`` ("CE1 de Mme Émery" -> "ce1-de-mme-emery")."""
    folded = fold_for_sort(str(text)) or ""
    return "-".join("".join(c if c.isascii() and c.isalnum() else " " for c in folded).split())
