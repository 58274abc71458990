"""Before printing: the accounts whose names the fonts cannot draw.

A character that neither the shipped fonts nor the fallback fonts draw prints as
a box (:class:`~.fonts.Typesetter`). The PDF form looks at the selection's names
first and, when some would print so, answers a page listing those accounts with
a button to print anyway (``pdf_check.html``): the admin decides before anything
is printed, for a small PDF and a background one alike.

Only names are read (the accounts' names and logins in one query, their children's
names in another), not whole accounts: a territory's 100,000 names take about a
second, and a school's a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ..recipients import parent_of
from ..selection import Selection
from ..sql import fold_for_sort
from ..state import state
from .fonts import Typesetter

#: Accounts listed on the page at most (the count says how many there are).
LISTED = 200
#: Names read from the database at a time.
BATCH = 2000


@dataclass(frozen=True)
class Unprintable:
    """An account whose letter would show boxes, and what would."""

    last_name: str
    first_name: str
    login: str
    #: The printed text holding the characters: the name, the login, or "Parent de …".
    text: str
    characters: tuple[str, ...]

    @property
    def codes(self) -> list[tuple[str, str]]:
        """Each character with its code point ("U+738B"), for the page."""
        return [(c, f"U+{ord(c):04X}") for c in self.characters]

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (fold_for_sort(self.last_name) or "", fold_for_sort(self.first_name) or "", self.login)


def unprintable(selection: Selection, typesetter: Typesetter) -> tuple[list[Unprintable], int]:
    """The selected accounts whose name, login or children's names the fonts
    cannot draw, in French name order (``LISTED`` at most), and how many there are."""
    found = state()
    host, session = found.host, found.session
    conditions = selection.conditions(host)
    login, first, last = (host.user_column(name) for name in ("login", "first_name", "last_name"))
    accounts = sa.select(host.user_id, login, first, last).where(*conditions)
    problems: dict[Any, Unprintable] = {}
    for user_id, *row in _rows(session, accounts):
        login_value, first_name, last_name = (value or "" for value in row)
        if f"{login_value}{first_name}{last_name}".isascii():
            continue
        name = f"{first_name} {last_name}".strip()
        for text in (name, login_value):
            missing = typesetter.missing(text)
            if missing:
                problems[user_id] = Unprintable(last_name, first_name, login_value, text, tuple(missing))
                break
    if host.has_children:
        _children(selection, typesetter, problems)
    listed = sorted(problems.values(), key=lambda p: p.sort_key)
    return listed[:LISTED], len(listed)


def _children(selection: Selection, typesetter: Typesetter, problems: dict[Any, Unprintable]) -> None:
    """Parents whose letter names a child the fonts cannot draw (children of the
    perimeter only, as letters print them)."""
    found = state()
    host, session = found.host, found.session
    scope = selection.scope
    child = aliased(host.user_model)
    family = host.pairs("children", child).where(scope.users if scope else None, child)
    selected = sa.select(host.user_id).where(*selection.conditions(host))
    stmt = family.select(host.user_column("first_name", child), host.user_column("last_name", child)).where(
        family.owner_id.in_(selected)
    )
    parents: dict[Any, tuple[str, tuple[str, ...]]] = {}
    for owner, first_name, last_name in _rows(session, stmt):
        name = f"{first_name or ''} {last_name or ''}".strip()
        if owner in problems or owner in parents or name.isascii():
            continue
        missing = typesetter.missing(name)
        if missing:
            parents[owner] = (parent_of(name), tuple(missing))
    if not parents:
        return
    login, first, last = (host.user_column(name) for name in ("login", "first_name", "last_name"))
    ids = list(parents)
    for start in range(0, len(ids), BATCH):
        rows = session.execute(
            sa.select(host.user_id, login, first, last).where(host.user_id.in_(ids[start : start + BATCH]))
        ).all()
        for user_id, login_value, first_name, last_name in rows:
            text, missing = parents[user_id]
            problems[user_id] = Unprintable(last_name or "", first_name or "", login_value or "", text, missing)


def _rows(session: Any, stmt: Any) -> Any:
    """The statement's rows, ``BATCH`` at a time (memory flat over a territory)."""
    result = session.connection().execute(stmt.execution_options(yield_per=BATCH))
    for rows in result.partitions(BATCH):
        yield from rows
