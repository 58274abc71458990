"""Plain view-models of the selected accounts, built in batches.

Templates (page, CSV, letters, cards, emails) get these, never ORM objects. Each
batch costs four queries whatever its size: the accounts, their classes, their
children, the children's classes; and a fifth for the sort keys of the classes
not met in an earlier batch (:class:`Related`). The rows come from
:meth:`~flask_publipostage.selection.Selection.statement` or from a run's frozen
accounts; both carry the same columns.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo
from typing import Any

import sqlalchemy as sa
from flask import has_app_context
from sqlalchemy.orm import aliased

from .config import config_value, time_zone
from .host import HostModels
from .i18n import gettext as _
from .profiles import Profile
from .selection import NO_RANK, Selection
from .sql import fold_for_sort, name_key, name_sort_key
from .state import state


@dataclass(frozen=True, slots=True)
class Child:
    first_name: str
    last_name: str
    classes: tuple[str, ...]

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def parent_of(self) -> str:
        """"Parent de Zoé Abel", elided before a vowel: "Parent d'Élodie Zidane"."""
        return parent_of(self.full_name)


def parent_of(name: str) -> str:
    if _starts_with_vowel(name):
        # Another placeholder name makes another msgid: French elides "de".
        return _("Parent of %(vowel_name)s", vowel_name=name)
    return _("Parent of %(name)s", name=name)


def parent_of_formatter() -> Callable[[str], str]:
    """:func:`parent_of` with the catalog read once (for thousands of rows)."""
    marker = "\x00"
    vowel = _("Parent of %(vowel_name)s", vowel_name=marker)
    other = _("Parent of %(name)s", name=marker)
    return lambda name: (vowel if _starts_with_vowel(name) else other).replace(marker, name)


def _starts_with_vowel(name: str) -> bool:
    return _fold(name[:1])[:1] in _VOWELS


_VOWELS = frozenset("aeiouy")

#: What an account's letter, card and email say (:attr:`Recipient.content`):
#: first login with the activation code; a renewal code and how to use it; sign
#: in with the academic identity; how to choose a new password; or nothing at
#: all, the code having expired (never printed nor sent).
ACTIVATION = "activation"
RENEWAL = "renewal"
FEDERATED = "federated"
ACTIVATED = "activated"
EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One selected account, as every output sees it.

    ``activation_code`` is the code to print, or None: none once activated, none
    for a federated account, none once expired (``code_expired``).
    """

    id: Any
    login: str
    first_name: str
    last_name: str
    profile: Profile | None
    email: str | None
    activation_code: str | None
    activated: bool
    created_at: datetime | None
    local_admin: bool
    classes: tuple[str, ...]
    children: tuple[Child, ...]
    #: The account's group at each sort level, as printed: the class's name ("Sans
    #: classe" without one), the profile's plural label, the school's name; ()
    #: unsorted.
    groups: tuple[str, ...]
    postal_address: tuple[str, ...] = ()
    #: The account's own school (the school dimension), "" when not mapped.
    school: str = ""
    #: Signs in with the academic identity (the optional field ``federated``).
    federated: bool = False
    blocked: bool = False
    #: The activation code's validity end (a datetime of the host, or a date
    #: valid through that day), when mapped and a code is printed.
    code_valid_until: datetime | date | None = None
    #: The activation code has expired: it is not given (``activation_code`` None).
    code_expired: bool = False
    #: A renewal code the host issued for this very output (never stored by the
    #: extension), and its validity end.
    renewal_code: str | None = None
    renewal_valid_until: datetime | date | None = None

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def group(self) -> str:
        """The group's display label, every level ("Enseignants · CP de Mme Dumas"),
        as the sheets' headers and the list name it; the first level alone names
        a bundle (its sign-off sheet, its file in a ZIP)."""
        return GROUP_SEPARATOR.join(self.groups)

    @property
    def has_email(self) -> bool:
        return bool(self.email)

    @property
    def profile_label(self) -> str:
        return self.profile.label if self.profile else ""

    @property
    def created_on(self) -> date | None:
        """Creation day in the school's time zone, as the date filters count it."""
        return local_date(self.created_at)

    @property
    def content(self) -> str:
        """What this account's letter, card or email says: the one rule every
        output follows (:data:`ACTIVATION`, :data:`RENEWAL`, :data:`FEDERATED`,
        :data:`ACTIVATED` or :data:`EXPIRED`, which nothing prints nor sends)."""
        if self.federated:
            return FEDERATED
        if self.renewal_code:
            return RENEWAL
        if self.activation_code:
            return ACTIVATION
        if self.code_expired:
            return EXPIRED
        return ACTIVATED

    @property
    def code_valid_until_day(self) -> date | None:
        """The last day the activation code works, in the school's time zone."""
        return local_date(self.code_valid_until) if self.activation_code else None

    @property
    def code_expired_on(self) -> date | None:
        """The day an expired code stopped working (for the preview)."""
        return local_date(self.code_valid_until) if self.code_expired else None

    @property
    def renewal_valid_until_day(self) -> date | None:
        return local_date(self.renewal_valid_until) if self.renewal_code else None


#: Between the levels of a group's label.
GROUP_SEPARATOR = " · "


def school_zone() -> tzinfo:
    """``PUBLIPOSTAGE_TIMEZONE``, where dates and times are shown (UTC outside an app)."""
    return time_zone("TIMEZONE") if has_app_context() else timezone.utc


def host_zone() -> tzinfo:
    """``PUBLIPOSTAGE_HOST_TIMEZONE``, the zone of the host's naive datetimes (UTC
    outside an app)."""
    return time_zone("HOST_TIMEZONE") if has_app_context() else timezone.utc


def local_time(moment: datetime, zone: tzinfo | None = None, *, naive_in: tzinfo = timezone.utc) -> datetime:
    """``moment`` in the school's time zone (or ``zone``). A naive ``moment`` is
    read in ``naive_in``: UTC for the extension's own timestamps, :func:`host_zone`
    for the host's."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=naive_in)
    return moment.astimezone(zone or school_zone())


def local_date(moment: datetime | None, zone: tzinfo | None = None) -> date | None:
    """The calendar day, in the school's time zone (or ``zone``), of a datetime of
    the host (an account's ``created_at``): naive means ``HOST_TIMEZONE``, as the
    creation-date filters read it. A ``date`` is already a day."""
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        return moment
    return local_time(moment, zone, naive_in=host_zone()).date()


def page(selection: Selection, number: int, size: int | None = None) -> list[Recipient]:
    """One page of the preview (1-based)."""
    size = size or config_value("PAGE_SIZE")
    return build(selection, _page_rows(selection, size, (number - 1) * size))


def page_next_to(
    selection: Selection, boundary: Any, size: int | None = None, *, before: bool = False
) -> list[Recipient] | None:
    """The page just after (or before) the account ``boundary`` in print order.

    Keyset pagination: deep pages cost what the first one does, where OFFSET sorts
    everything up to them. None when ``boundary`` is no longer in the selection
    (the caller falls back to the page number).
    """
    host = state().host
    session = state().session
    size = size or config_value("PAGE_SIZE")
    boundary_stmt, boundary_keys = selection.ordered_statement(host, owner=boundary)
    values = session.execute(boundary_stmt.with_only_columns(*boundary_keys).order_by(None).limit(1)).first()
    if values is None:
        return None
    return build(selection, _page_rows(selection, size, bound=tuple(values), backwards=before))


def last_page(selection: Selection, count: int, size: int | None = None) -> list[Recipient]:
    """The last page, read backwards: no OFFSET over the whole selection."""
    size = size or config_value("PAGE_SIZE")
    return build(selection, _page_rows(selection, count % size or size, backwards=True))


#: The first window of a page read by windows, in ranks of its first sort level:
#: a few classes, one school; each next one is four times as wide.
WINDOW = {"class": 8, "school": 1}


def _page_rows(
    selection: Selection, size: int, offset: int = 0, *, bound: Any = None, backwards: bool = False
) -> list[Any]:
    """The rows of one page (:meth:`~.Selection.page_statement`), in print order.

    Sorted by class or by school first over many of them, a page from the start,
    next to a boundary or from the end is read by windows of classes (schools)
    from there on, each wider than the last, until it is full: the first window
    of a territory holds a few classes or one school."""
    host = state().host
    session = state().session

    def read(window: tuple[int, int] | None, wanted: int) -> list[Any]:
        stmt = selection.page_statement(host, wanted, offset, bound=bound, backwards=backwards, window=window)
        return list(session.execute(stmt).all())

    ranks = None if offset else selection.first_ranks(host)
    if ranks is None:
        return read(None, size)
    rows: list[Any] = []
    start = None if bound is None else int(bound[0])
    for window in _windows(ranks, start, backwards, WINDOW[selection.sort[0]]):
        found = read(window, size - len(rows))
        rows = found + rows if backwards else rows + found
        if len(rows) >= size:
            break
    return rows


def _windows(ranks: int, start: int | None, backwards: bool, width: int) -> Iterator[tuple[int, int]]:
    """The windows ``(low, high)`` of ranks (both included) a page reads in turn,
    from ``start`` (the first level's rank of the boundary) on, or back; the last
    ones reach :data:`~.selection.NO_RANK` (no class, no school) and rank 1;
    ``width``: the first one's."""
    if not backwards:
        low = 1 if start is None else start
        while low < NO_RANK:
            high = low + width - 1
            if high >= ranks:
                high = NO_RANK
            yield low, high
            low, width = high + 1, width * 4
        if low == NO_RANK:
            yield NO_RANK, NO_RANK
        return
    high = NO_RANK if start is None else start
    if high == NO_RANK:
        yield NO_RANK, NO_RANK
        high = NO_RANK - 1
    while high >= 1:
        low = max(1, min(high, ranks) - width + 1)
        yield low, high
        high, width = low - 1, width * 4


def iter_batches(selection: Selection, batch_size: int | None = None, stmt: Any = None) -> Iterator[list[Recipient]]:
    """Every selected account, in order, ``batch_size`` at a time, memory flat
    (``stmt``: other rows of the same columns, such as a run's frozen accounts)."""
    found = state()
    batch_size = batch_size or config_value("BATCH_SIZE")
    stmt = selection.statement(found.host) if stmt is None else stmt
    # Core rows through the session's connection (same transaction): the ORM
    # layer adds nothing for plain columns and costs a third of the time.
    result = found.session.connection().execute(stmt.execution_options(yield_per=batch_size))
    related = Related(found.host, selection)
    for rows in result.partitions(batch_size):
        yield build(selection, rows, related)


def iter_recipients(selection: Selection, batch_size: int | None = None) -> Iterator[Recipient]:
    for batch in iter_batches(selection, batch_size):
        yield from batch


def build(
    selection: Selection,
    rows: Sequence[Any],
    related: "Related | None" = None,
    class_keys: Sequence[str | None] | None = None,
) -> list[Recipient]:
    """Turn statement rows into recipients, loading classes and children in bulk.

    When sorted by class, each account's class group is the class whose key is the
    row's ``class_key`` (or ``class_keys[i]``, the key of ``rows[i]`` in a run: an
    account may be in several rows, once per class)."""
    if not rows:
        return []
    host: HostModels = state().host
    session = state().session
    related = related or Related(host, selection)
    # Positions, not attribute names: a Row attribute costs 0.7 µs, 14 per account.
    fields = list(rows[0]._fields)
    (i_id, i_login, i_first, i_last, i_profile, i_email, i_code, i_activated, i_created, i_admin) = (
        fields.index(name)
        for name in (
            "id", "login", "first_name", "last_name", "profile", "email",
            "activation_code", "activated", "created_at", "local_admin",
        )
    )
    if class_keys is None and "class_key" in fields:
        at = fields.index("class_key")
        class_keys = [row[at] for row in rows]
    address_at = [i for i, name in enumerate(fields) if name.startswith("address_")]
    i_federated, i_blocked, i_until, i_expired = (
        fields.index(name) if name in fields else None
        for name in ("federated", "blocked", "code_valid_until", "code_expired")
    )
    i_school = fields.index("school_id") if "school_id" in fields else None
    schools = related.school_names(session, [row[i_school] for row in rows]) if i_school is not None else {}
    ids = list(dict.fromkeys(row[i_id] for row in rows))
    own_classes = related.class_rows(session, ids)
    family = related.family(session, ids)
    related.learn_keys(session, [*own_classes.values(), *(family[1].values() if family else ())])
    own_classes = related.with_keys(own_classes)
    classes = _names(own_classes)
    children: dict[Any, tuple[Child, ...]] = {}
    children_classes: dict[Any, list[ClassRow]] = {}
    if family is not None:
        children, children_classes = related.children(*family)
    levels = selection.sort
    without = {"class": _("Without a class"), "profile": _("Without a profile"), "school": _("Without a school")}
    without = without if levels else {}
    profiles: dict[Any, Profile | None] = {}
    recipients = []
    for index, row in enumerate(rows):
        values = tuple(row)
        user_id = values[i_id]
        host_profile = values[i_profile]
        if host_profile not in profiles:
            profiles[host_profile] = host.canonical_profile(host_profile)
        profile = profiles[host_profile]
        school = schools.get(values[i_school], "") if i_school is not None else ""
        groups: list[str] = []
        for level in levels:
            name = ""
            if level == "profile":
                name = profile.plural_label if profile else ""
            elif level == "school":
                name = school
            elif class_keys and (key := class_keys[index]) is not None:
                # The class whose key Selection.class_key (or class_pairs) sorted by.
                name = next(
                    (n for _i, n, k in (*own_classes.get(user_id, ()), *children_classes.get(user_id, ())) if k == key),
                    "",
                )
            groups.append(name or without[level])
        activated = bool(values[i_activated])
        federated = bool(values[i_federated]) if i_federated is not None else False
        expired = bool(values[i_expired]) if i_expired is not None else False
        # The one place deciding whether a code is given: never once activated,
        # never to a federated account, never once expired.
        code = None if activated or federated or expired else (values[i_code] or None)
        recipients.append(
            Recipient(
                id=user_id,
                login=values[i_login] or "",
                first_name=values[i_first] or "",
                last_name=values[i_last] or "",
                profile=profile,
                email=values[i_email] or None,
                activation_code=code,
                activated=activated,
                created_at=values[i_created],
                local_admin=bool(values[i_admin]),
                classes=classes.get(user_id, ()),
                children=children.get(user_id, ()),
                groups=tuple(groups),
                postal_address=tuple(str(values[i]) for i in address_at if values[i]) if address_at else (),
                school=school,
                federated=federated,
                blocked=bool(values[i_blocked]) if i_blocked is not None else False,
                code_valid_until=values[i_until] if i_until is not None and (code or expired) else None,
                code_expired=expired,
            )
        )
    return recipients


@functools.lru_cache(maxsize=8192)
def _fold(value: str) -> str:
    """:func:`fold_for_sort`, remembered: first letters repeat a lot."""
    return fold_for_sort(value) or ""


#: (class id, class label, its sort key) of one account; the label is the class's
#: name, qualified by its school where several schools have a class of that name.
ClassRow = tuple[Any, str, str]


def _names(rows: dict[Any, list[ClassRow]]) -> dict[Any, tuple[str, ...]]:
    """Each person's class names in school order: by the key the database gave
    (:meth:`~.HostModels.class_sort_key`; Python's string order is its byte order)."""
    return {
        k: (v[0][1],) if len(v) == 1 else tuple(n for _c, n, _k in sorted(v, key=lambda row: row[2]))
        for k, v in rows.items()
    }


class Related:
    """The queries completing a batch (classes; children and their classes; school
    names), built once per selection and run with the batch's ids.

    The classes' sort keys are computed once per class and remembered here, not
    once per member: a key costs the database a regular expression, and a CSV of
    a territory names its classes a hundred thousand times.
    """

    def __init__(self, host: HostModels, selection: Selection) -> None:
        self._dialect = state().db.engine.dialect.name
        self._host = host
        scope = selection.scope
        cls = aliased(host.class_model)
        classes = host.pairs("classes", cls)
        columns = [host.class_id_of(cls), host.class_name_column(cls)]
        if host.qualifies_classes:
            columns.append(host.school_of_class(cls))
        stmt = classes.select(*columns)
        if scope is not None and scope.classes is not None:
            stmt = stmt.where(sa.inspect(cls)._adapt_element(scope.classes))
        self._classes = self._by_ids(stmt, classes.owner_id)
        self._key_stmt = self._by_ids(sa.select(host.class_id, host.class_sort_key()), host.class_id)
        self._keys: dict[Any, str] = {}
        self._children: dict[str, Any] | None = None
        if host.has_children:
            child = aliased(host.user_model)
            # A child outside the admin's perimeter (another school) stays unnamed.
            family = host.pairs("children", child).where(scope.users if scope else None, child)
            stmt = family.select(
                host.user_column_pk(child), host.user_column("first_name", child), host.user_column("last_name", child)
            )
            self._children = self._by_ids(stmt, family.owner_id)
        self._school_names: dict[Any, str] = {}
        self._shared_names = self._names_in_several_schools(host, selection) if host.qualifies_classes else frozenset()

    @staticmethod
    def _names_in_several_schools(host: HostModels, selection: Selection) -> frozenset[str]:
        """The class names (folded) that several schools of the selection use: those
        classes are named with their school ("CE1 (École Jules Ferry)")."""
        cls = aliased(host.class_model)
        key = name_key(host.class_name_column(cls))
        school = host.school_of_class(cls)
        stmt = sa.select(key).group_by(key).having(sa.func.count(sa.distinct(school)) > 1)
        scope = selection.scope
        if scope is not None and scope.classes is not None:
            stmt = stmt.where(sa.inspect(cls)._adapt_element(scope.classes))
        if selection.school_ids:
            stmt = stmt.where(school.in_(selection.school_ids))
        return frozenset(state().session.execute(stmt).scalars())

    def label(self, name: str, school: Any) -> str:
        """A class's name as every output shows it: with its school's name where
        another school of the selection has a class of the same name (call
        :meth:`school_names` with ``school`` first)."""
        if school is None or not self._shared_names or _fold(name) not in self._shared_names:
            return name
        return f"{name} ({self._school_names.get(school) or school})"

    def school_names(self, session: Any, keys: Iterable[Any]) -> dict[Any, str]:
        """School key -> name, read once per school for the whole selection."""
        missing = {k for k in keys if k is not None and k not in self._school_names}
        if missing:
            host = self._host
            stmt = sa.select(host.school_id, host.school_name_column()).where(host.school_id.in_(missing))
            self._school_names.update({k: n or "" for k, n in session.execute(stmt).all()})
        return self._school_names

    def _by_ids(self, stmt: Any, key: Any) -> dict[str, Any]:
        """The statement restricted to a batch of ids: ``IN (:ids...)`` everywhere,
        and one array parameter where the database takes it. PostgreSQL plans an IN
        of 500 parameters at each batch: 3x slower over 100,000 accounts."""
        variants = {"expanding": stmt.where(key.in_(sa.bindparam("ids", expanding=True)))}
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            variants["array"] = stmt.where(key == sa.any_(sa.bindparam("ids", type_=ARRAY(key.type))))
        elif self._dialect == "sqlite":
            values: Any = sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam("ids")))
            variants["json"] = stmt.where(key.in_(values))
        return variants

    @staticmethod
    def _run(session: Any, variants: dict[str, Any], ids: list[Any]) -> list[Any]:
        connection = session.connection()
        plain = all(type(i) in (int, str) for i in ids)
        if plain and "array" in variants:
            return connection.execute(variants["array"], {"ids": list(ids)}).all()
        if plain and "json" in variants:
            try:
                return connection.execute(variants["json"], {"ids": json.dumps(list(ids))}).all()
            except sa.exc.OperationalError:
                del variants["json"]  # an SQLite built without JSON functions
        return connection.execute(variants["expanding"], {"ids": list(ids)}).all()

    def class_rows(self, session: Any, ids: list[Any]) -> dict[Any, list[tuple[Any, str]]]:
        """user id -> [(class id, class label)], classes of the scope only."""
        found: dict[Any, list[tuple[Any, str]]] = defaultdict(list)
        if not ids:
            return found
        rows = self._run(session, self._classes, ids)
        if self._shared_names:
            self.school_names(session, {row[3] for row in rows})
            for user_id, class_id, name, school in rows:
                found[user_id].append((class_id, self.label(name, school)))
        else:
            for user_id, class_id, name, *_school in rows:
                found[user_id].append((class_id, name))
        return found

    def learn_keys(self, session: Any, rows: Iterable[list[tuple[Any, str]]]) -> None:
        """Ask the database for the keys of the classes of ``rows`` not seen yet (one query)."""
        missing = list({class_id for found in rows for class_id, _name in found if class_id not in self._keys})
        if missing:
            self._keys.update(self._run(session, self._key_stmt, missing))

    def with_keys(self, rows: dict[Any, list[tuple[Any, str]]]) -> dict[Any, list[ClassRow]]:
        """``rows`` with each class's key (:meth:`learn_keys` first; a class deleted
        in between gets an empty key)."""
        keys = self._keys
        return {owner: [(c, name, keys.get(c, "")) for c, name in found] for owner, found in rows.items()}

    def family(self, session: Any, ids: list[Any]) -> tuple[list[Any], dict[Any, list[tuple[Any, str]]]] | None:
        """Each parent's children in the scope (parent id, child id, first and last
        name), and those children's classes; None when the host maps no children."""
        if self._children is None or not ids:
            return None
        rows = self._run(session, self._children, ids)
        return rows, self.class_rows(session, list({r[1] for r in rows})) if rows else {}

    def children(
        self, rows: list[Any], child_classes: dict[Any, list[tuple[Any, str]]]
    ) -> tuple[dict[Any, tuple[Child, ...]], dict[Any, list[ClassRow]]]:
        """Each parent's children, and the classes of those children, from :meth:`family`."""
        if not rows:
            return {}, {}
        child_rows = self.with_keys(child_classes)
        child_names = _names(child_rows)
        found: dict[Any, list[Child]] = defaultdict(list)
        their_classes: dict[Any, list[ClassRow]] = defaultdict(list)
        for pid, cid, first, last in rows:
            found[pid].append(Child(first or "", last or "", child_names.get(cid, ())))
            their_classes[pid].extend(child_rows.get(cid, ()))
        children = {
            k: tuple(v) if len(v) == 1 else tuple(sorted(v, key=lambda c: name_sort_key(c.last_name, c.first_name)))
            for k, v in found.items()
        }
        return children, their_classes
