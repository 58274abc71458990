"""The page "Suivi des activations": who received their credentials, who activated.

It breaks a selection down (the page's query string, read and checked as the
page reads it: a class or a school outside the perimeter is a 403):

* a perimeter of several schools, none chosen (a super admin): a row per school,
  each leading to its breakdown by class;
* otherwise (a local admin, a class teacher, or a super admin once a school is
  chosen), for each school: a row per class, holding its teachers, its pupils and
  their parents, as the class filter lists them
  (:meth:`~flask_publipostage.selection.Selection.class_memberships`: a parent of
  two classes counts in both); a row per profile the classes do not hold (staff,
  guests); the teachers, pupils and parents in no class;
* a total, each account once.

Each row counts its accounts, the activated ones, those whose credentials left
(:mod:`.history`), and those whose code changed since their latest sheet or
message; each number links to the page listing exactly those accounts. Every
count is one grouped query over the selection, whatever the number of rows; the
changed codes are told in Python (the hash needs the secret key) over the not
activated accounts that have one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, render_template, request, url_for

from . import history
from .access import VIEW, require
from .csv_export import safe_cell, stamped_name
from .i18n import gettext as _
from .profiles import PROFILE_ORDER, Profile
from .recipients import Related
from .selection import Selection, perimeter_schools
from .state import state
from .views import current_selection

#: The profiles a class holds (a parent through their children); the others
#: (staff, guests) get a row of their own.
CLASS_PROFILES = (Profile.TEACHER, Profile.STUDENT, Profile.RELATIVE)
#: The numbers of a row, in the table's order, with the filter values listing them.
COLUMNS = (
    ("accounts", {}),
    ("activated", {"activation": "active"}),
    ("not_activated", {"activation": "inactive"}),
    ("distributed", {"distributed": "yes"}),
    ("never", {"distributed": "never"}),
)


@dataclass
class Row:
    """One line of the table, and the selection listing its accounts (None when
    no filter lists them: the accounts in no class, or in no school)."""

    label: str
    kind: str
    args: dict[str, list[str]] | None
    accounts: int = 0
    activated: int = 0
    distributed: int = 0
    stale: int = 0
    #: A school's breakdown by class (its rows' page).
    detail: dict[str, list[str]] | None = None
    links: dict[str, str] = field(default_factory=dict)

    @property
    def not_activated(self) -> int:
        return self.accounts - self.activated

    @property
    def never(self) -> int:
        return self.accounts - self.distributed

    @property
    def percent(self) -> int:
        """Activated, in percent, rounded; 100 only when all are, 0 only when none is."""
        if not self.accounts:
            return 0
        return min(99, max(1, round(100 * self.activated / self.accounts))) if 0 < self.activated < self.accounts else (
            100 if self.activated else 0
        )

    def add(self, other: Any) -> None:
        self.accounts += int(other.accounts)
        self.activated += int(other.activated)
        self.distributed += int(other.distributed)


@dataclass
class Section:
    """A school's rows (one section without the school dimension)."""

    name: str
    subtotal: Row | None
    rows: list[Row]


@dataclass
class FollowUp:
    selection: Selection
    by_school: bool
    sections: list[Section]
    total: Row

    @property
    def rows(self) -> Iterator[Row]:
        for section in self.sections:
            if section.subtotal is not None:
                yield section.subtotal
            yield from section.rows
        yield self.total


def build(selection: Selection) -> FollowUp:
    """The rows of ``selection``'s follow-up, their numbers and links."""
    host = state().host
    schools = perimeter_schools(selection.scope)
    several = len(schools) > 1
    by_school = several and not selection.school_ids and not selection.class_ids
    base = selection.to_dict()
    school_tally = _school_tally(selection) if host.has_schools else {}
    total = _total(selection, base, school_tally)
    if by_school:
        rows = [_school_row(key, name, school_tally, base) for key, name in schools if key in school_tally]
        if None in school_tally:
            rows.append(_school_row(None, _("Without a school"), school_tally, base))
        sections = [Section("", None, rows)]
    else:
        sections = _class_sections(selection, base, schools if several else [], school_tally)
    result = FollowUp(selection, by_school, sections, total)
    for row in result.rows:
        _link(row, selection)
    return result


def _school_tally(selection: Selection) -> dict[Any, Row]:
    """School key -> its row (accounts, activated, distributed, changed codes)."""
    host = state().host
    school = host.school_of_user().label("school")
    conditions = selection.conditions(host)
    found = {
        r.school: Row("", "school", None, int(r.accounts), int(r.activated), int(r.distributed))
        for r in state().session.execute(
            sa.select(school, *history.tally_columns(host)).where(*conditions).group_by(school)
        )
    }
    stale = history.count_stale(
        state().session.execute(
            sa.select(school, *history.stale_rows(host)).where(*conditions, sa.not_(host.user_column("activated")))
        ),
        key=lambda r: r.school,
    )
    for key, number in stale.items():
        if key in found:
            found[key].stale = number
    return found


def _school_row(key: Any, name: str, tally: dict[Any, Row], base: dict[str, list[str]]) -> Row:
    row = tally[key]
    row.label, row.kind = name, "school"
    if key is not None:
        row.args = {**base, "school": [str(key)]}
        row.detail = row.args
    return row


def _total(selection: Selection, base: dict[str, list[str]], school_tally: dict[Any, Row]) -> Row:
    """Each account once: the sum of the schools' rows (every account is in one,
    or in none: a row too), or, without schools, one more pass."""
    row = Row(_("Total"), "total", base)
    if school_tally:
        for school in school_tally.values():
            row.add(school)
            row.stale += school.stale
        return row
    host = state().host
    conditions = selection.conditions(host)
    row.add(state().session.execute(sa.select(*history.tally_columns(host)).where(*conditions)).one())
    stale = history.count_stale(
        state().session.execute(
            sa.select(*history.stale_rows(host)).where(*conditions, sa.not_(host.user_column("activated")))
        )
    )
    row.stale = stale.get(None, 0)
    return row


def _class_sections(
    selection: Selection, base: dict[str, list[str]], schools: list[tuple[Any, str]], school_tally: dict[Any, Row]
) -> list[Section]:
    """A section per school (one without schools): its classes, its profiles
    outside the classes, its accounts in no class."""
    host = state().host
    session = state().session
    memberships = selection.class_memberships(host)
    profile = host.profile_column()
    class_values = [v for p in CLASS_PROFILES for v in host.host_profile_values(p)]
    source = sa.orm.outerjoin(
        host.user_model, memberships, sa.and_(memberships.c.owner == host.user_id, profile.in_(class_values))
    )
    keys = [
        *([host.school_of_user().label("school")] if schools else []),
        memberships.c.class_id.label("class_id"),
        sa.case((memberships.c.class_id.is_(None), profile), else_=sa.null()).label("profile"),
    ]
    conditions = selection.conditions(host)
    tally = session.execute(
        sa.select(*keys, *history.tally_columns(host)).select_from(source).where(*conditions).group_by(*keys)
    ).all()
    stale = history.count_stale(
        session.execute(
            sa.select(*keys, *history.stale_rows(host)).select_from(source)
            .where(*conditions, sa.not_(host.user_column("activated")))
        ),
        key=lambda r: (_school_of(r), r.class_id, _canonical(r.profile)),
    )
    names = _class_names(selection, {r.class_id for r in tally if r.class_id is not None})
    sections: dict[Any, dict[Any, Row]] = {}
    for r in tally:
        school = _school_of(r)
        rows = sections.setdefault(school, {})
        where = {"school": [str(school)]} if school is not None else {}
        if r.class_id is not None:
            key: Any = ("class", r.class_id)
            label, sort_key = names.get(r.class_id, (str(r.class_id), ""))
            wanted = [p for p in (selection.profiles or CLASS_PROFILES) if p in CLASS_PROFILES]
            args = {**base, **where, "class": [str(r.class_id)], "profile": [p.value for p in wanted]}
            row = rows.setdefault(key, Row(label, "class", args))
        else:
            canonical = _canonical(r.profile)
            if canonical in CLASS_PROFILES:
                key, label, args, kind = ("none", None), _("Teachers, pupils and parents in no class"), None, "none"
            else:
                key = ("profile", canonical)
                label = canonical.plural_label if canonical else _("Without a profile")
                args = {**base, **where, "profile": [canonical.value]} if canonical else None
                kind = "profile"
            row = rows.setdefault(key, Row(label, kind, args))
        row.add(r)
        row.stale += stale.get((school, r.class_id, _canonical(r.profile)), 0)
    order = {"class": 0, "profile": 1, "none": 2}
    ranks = {p: i for i, p in enumerate(PROFILE_ORDER)}

    def rank(item: tuple[Any, Row]) -> tuple[Any, ...]:
        (kind, value), _row = item
        if kind == "class":
            return (order[kind], names.get(value, ("", ""))[1], str(value))
        return (order[kind], ranks.get(value, len(ranks)) if kind == "profile" else 0, "")

    found = []
    named = dict(schools)
    for key in [k for k, _n in schools if k in sections] + [k for k in sections if k not in named]:
        rows = [row for _key, row in sorted(sections[key].items(), key=rank)]
        subtotal = None
        if schools:
            name = named.get(key) or _("Without a school")
            subtotal = _school_row(key, name, school_tally, base) if key in school_tally else None
            if subtotal is not None:
                subtotal.kind, subtotal.detail = "subtotal", None
        found.append(Section(named.get(key, ""), subtotal, rows))
    return found


def _school_of(row: Any) -> Any:
    """The school of a row of :func:`_class_sections` (None: not grouped by school)."""
    return getattr(row, "school", None)


def _canonical(value: Any) -> Profile | None:
    return state().host.canonical_profile(value) if value is not None else None


def _class_names(selection: Selection, ids: set[Any]) -> dict[Any, tuple[str, str]]:
    """Class id -> (its label, as every output names it; its sort key)."""
    if not ids:
        return {}
    host = state().host
    columns = [host.class_id, host.class_name_column(), host.class_sort_key()]
    if host.qualifies_classes:
        columns.append(host.school_of_class())
    rows = state().session.execute(sa.select(*columns).where(host.class_id.in_(ids))).all()
    related = Related(host, selection)
    if host.qualifies_classes:
        related.school_names(state().session, {row[3] for row in rows})
    return {row[0]: (related.label(row[1], row[3] if len(row) > 3 else None), row[2] or "") for row in rows}


def _link(row: Row, selection: Selection) -> None:
    """The page's address listing each number's accounts; none where the
    selection's own filters already keep none of them (its count is then 0)."""
    if row.args is None:
        return
    for column, wanted in COLUMNS:
        if any(selection.get(param) not in ("all", value) for param, value in wanted.items()):
            continue
        if wanted.get("distributed") == "never" and (
            selection.get("distributed_since") or selection.get("distributed_before")
        ):
            continue
        row.links[column] = url_for("publipostage.index", **{**row.args, **{k: [v] for k, v in wanted.items()}})


# -- the routes -----------------------------------------------------------------------------


@require(VIEW)
def follow_up() -> str:
    report = build(current_selection(extra_params=()))
    return render_template("publipostage/follow_up.html", report=report, csv_args=request.args.to_dict(flat=False))


@require(VIEW)
def follow_up_csv() -> Response:
    """The same rows as CSV (UTF-8 with BOM, ``;``)."""
    report = build(current_selection(extra_params=()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow([_("School"), _("Row"), _("Accounts"), _("Activated"), _("% activated"), _("Not activated"),
                     _("Distributed"), _("Never distributed"), _("Code changed since it was printed or emailed")])
    for section in report.sections:
        rows = ([section.subtotal] if section.subtotal else []) + section.rows
        for row in rows:
            school = row.label if row.kind in ("school", "subtotal") else section.name
            label = "" if row.kind == "subtotal" else row.label
            writer.writerow([safe_cell(school), safe_cell(label), *_numbers(row)])
    writer.writerow(["", safe_cell(report.total.label), *_numbers(report.total)])
    name = stamped_name(report.selection.scope, [_("follow-up")], "csv")
    return Response(
        "\ufeff" + buffer.getvalue(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _numbers(row: Row) -> list[str]:
    return [str(n) for n in (row.accounts, row.activated, row.percent, row.not_activated, row.distributed, row.never,
                             row.stale)]


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/follow-up", view_func=follow_up)
    bp.add_url_rule("/follow-up.csv", view_func=follow_up_csv)
