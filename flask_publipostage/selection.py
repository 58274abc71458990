"""One selection of accounts, parsed once and used by every output.

The preview, the CSV, the PDF and the mail all run :meth:`Selection.statement`:
what the admin checked on screen is exactly what gets printed or sent. Every
filter and sort runs in SQL.

:data:`FILTERS` is the one table of the selection's parameters: each says its
query-string name, label, choices, parser and SQL. The form, the page's script,
the command-line options and the labels of errors and journals read it. An output
adds a restriction of its own with :func:`register` (the mail package adds
``campaign``: the accounts a campaign did not reach); nothing here imports one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from werkzeug.datastructures import MultiDict

from .access import Scope
from .config import config_value, time_zone
from .host import HostModels, parse_key
from .i18n import gettext as _
from .i18n import lazy_gettext as _l
from .profiles import PROFILE_ORDER, Profile
from .sql import bytewise, materialized, name_order
from .state import state

MAX_CLASSES = 500
#: Longest accepted value of any parameter (a class id, a date, a choice).
MAX_VALUE_LENGTH = 64
#: Creation-date filters outside these years are typing mistakes (and would
#: overflow the time-zone conversion).
MIN_YEAR, MAX_YEAR = 1900, 2999
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class SelectionError(Exception):
    """Bad filters: a French message naming the field, and the HTTP status."""

    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


# -- the table of filters ----------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One parameter of a selection.

    :param param: its query-string (and command-line) name.
    :param choices: ``(value, label)`` pairs, the first one the default; the
        parser then only checks the value is one of them.
    :param multiple: repeatable (``?class=1&class=2``).
    :param read: parse the raw values (a list) into the value; raises
        :class:`SelectionError`. Choice filters need none.
    :param write: the value back to raw values.
    :param condition: ``(selection, host, value) -> SQL condition`` on the user model.
    :param check: ``(selection, value) -> None``, raising a 403 for what lies
        outside the admin's perimeter.
    :param default: the value when the parameter is absent.
    :param banner: ``(selection, value) -> str``: an output's restriction shows on
        the page as a banner saying what it keeps, until the admin removes it.
    """

    param: str
    label: Any
    choices: tuple[tuple[str, Any], ...] = ()
    multiple: bool = False
    read: Callable[[list[str]], Any] | None = None
    write: Callable[[Any], list[str]] = lambda value: [str(value)]
    condition: Callable[["Selection", HostModels, Any], Any] | None = None
    check: Callable[["Selection", Any], None] | None = None
    default: Any = None
    help: str = ""
    banner: Callable[["Selection", Any], str] | None = None

    def __post_init__(self) -> None:
        if self.choices and self.default is None:
            object.__setattr__(self, "default", self.choices[0][0])

    def parse(self, values: list[str]) -> Any:
        if not self.multiple and len(values) > 1:
            raise SelectionError(_("The field “%(name)s” is given several times.", name=self.label), field=self.param)
        values = [v for v in values if v.strip() != ""]
        if not values:
            return self.default
        if any(len(v) > MAX_VALUE_LENGTH for v in values):
            raise SelectionError(_("The value of the field “%(name)s” is too long.", name=self.label), field=self.param)
        if self.choices:
            value = values[0]
            if value not in dict(self.choices):
                raise SelectionError(
                    _("Invalid value “%(value)s” for the field “%(name)s”.", value=value[:40], name=self.label),
                    field=self.param,
                )
            return value
        assert self.read is not None
        return self.read(values if self.multiple else values[:1])

    def choice_label(self, value: str) -> str:
        return str(dict(self.choices).get(value, value))


#: The filters, by parameter, in the form's order.
FILTERS: dict[str, Filter] = {}


def register(filter_: Filter) -> Filter:
    """Add a filter (an output's restriction) to the table; idempotent."""
    FILTERS[filter_.param] = filter_
    return filter_


def field_label(param: str) -> str:
    if param == "page":
        return _("Page")
    found = FILTERS.get(param)
    return str(found.label) if found else param


def describe(args: Mapping[str, list[str]], class_names: Mapping[str, str] | None = None) -> str:
    """A stored selection in words, as the journal shows it ("Parents · CP, CE1 ·
    Avec un courriel"); ``class_names``: class id (text) -> name."""
    words = []
    for param, found in FILTERS.items():
        raw = args.get(param)
        if not raw or param == "then":
            continue
        if param == "profile":
            words.append(", ".join(p.plural_label for p in _read_profiles(raw)))
        elif param == "class":
            words.append(", ".join((class_names or {}).get(v, v) for v in raw))
        elif param in ("sort", "then"):
            keys = [found.choice_label(raw[0]), *(FILTERS["then"].choice_label(v) for v in args.get("then", []))]
            words.append(_("Sorted by %(keys)s", keys=", ".join(keys).lower()))
        elif found.choices:
            words.append(found.choice_label(raw[0]))
        elif found.read is not None and param.startswith("created_"):
            words.append(f"{found.label} {found.parse(raw).strftime('%d/%m/%Y')}")
        else:
            words.append(f"{found.label} {', '.join(raw)}")
    return " · ".join(words) or _("All accounts")


def _read_profiles(values: list[str]) -> tuple[Profile, ...]:
    if len(values) > len(Profile):
        raise SelectionError(_("The field “%(name)s” is given several times.", name=field_label("profile")), field="profile")
    chosen = set()
    for value in values:
        try:
            chosen.add(Profile(value))
        except ValueError:
            raise SelectionError(_("Unknown profile “%(value)s”.", value=value[:40]), field="profile") from None
    return tuple(p for p in PROFILE_ORDER if p in chosen)


def _read_classes(values: list[str]) -> tuple[Any, ...]:
    if len(values) > MAX_CLASSES:
        raise SelectionError(_("Too many classes: choose at most %(max)d.", max=MAX_CLASSES), field="class")
    column = state().host.class_id
    parsed = []
    for value in values:
        key = parse_key(column, value)
        if key is None or key == "":
            raise SelectionError(_("Invalid class “%(value)s”.", value=value[:40]), field="class")
        parsed.append(key)
    return tuple(dict.fromkeys(parsed))


def read_date(value: str, label: Any, field: str) -> date:
    """A day typed as YYYY-MM-DD (what ``<input type="date">`` sends), between
    1900 and 2999; a French :class:`SelectionError` naming ``label`` otherwise."""
    value = value.strip()
    try:
        # fromisoformat alone would also take "20250901" or "2025-W36-1".
        if not _ISO_DATE.fullmatch(value):
            raise ValueError(value)
        parsed = date.fromisoformat(value)
    except ValueError:
        raise SelectionError(
            _("Invalid date “%(value)s” for the field “%(name)s” (expected YYYY-MM-DD).", value=value[:40], name=label),
            field=field,
        ) from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise SelectionError(
            _("The date “%(value)s” of the field “%(name)s” is out of range.", value=value, name=label), field=field
        )
    return parsed


def _reader_of_date(param: str) -> Callable[[list[str]], date]:
    return lambda values: read_date(values[0], field_label(param), param)


def _profile_condition(selection: "Selection", host: HostModels, profiles: tuple[Profile, ...]) -> Any:
    return host.profile_column().in_([v for p in profiles for v in host.host_profile_values(p)])


def _class_condition(selection: "Selection", host: HostModels, class_ids: tuple[Any, ...]) -> Any:
    """In one of the classes, or (a parent) a child of the admin's perimeter is: a
    child the admin may not see (a super admin's account, another school's pupil)
    selects nobody, else the parent's row would betray the family link."""
    direct = host.relationship("classes").any(host.class_id.in_(class_ids))
    if not host.has_children:
        return direct
    child = aliased(host.user_model)
    child_in_class = host.relationship("classes", child).any(host.class_id.in_(class_ids))
    users = selection.scope.users if selection.scope is not None else None
    if users is not None:
        child_in_class = sa.and_(sa.inspect(child)._adapt_element(users), child_in_class)
    return sa.or_(direct, host.relationship("children").of_type(child).any(child_in_class))


def _check_classes(selection: "Selection", class_ids: tuple[Any, ...]) -> None:
    """403 for a class outside the admin's scope, or that does not exist: the same
    answer for both, so nothing is learnt about other schools."""
    host = state().host
    stmt = sa.select(sa.func.count()).select_from(host.class_model).where(host.class_id.in_(class_ids))
    if selection.scope is not None and selection.scope.classes is not None:
        stmt = stmt.where(selection.scope.classes)
    if state().session.execute(stmt).scalar_one() != len(class_ids):
        raise SelectionError(_("One of the chosen classes is outside your scope."), status=403, field="class")


def _activation_condition(selection: "Selection", host: HostModels, value: str) -> Any:
    activated = host.user_column("activated")
    return activated if value == "active" else sa.not_(activated)


def has_email(host: HostModels) -> Any:
    email = host.user_column("email")
    return sa.and_(email.is_not(None), email != "")


def _email_condition(selection: "Selection", host: HostModels, value: str) -> Any:
    return has_email(host) if value == "with" else sa.not_(has_email(host))


def _local_admin_condition(selection: "Selection", host: HostModels, value: str) -> Any:
    is_admin = sa.func.coalesce(host.user_column("local_admin"), sa.false()) == sa.true()
    return is_admin if value == "only" else sa.not_(is_admin)


def _day_start(day: date, column: Any) -> datetime:
    """Midnight of ``day`` in the school's time zone, as the column stores it: an
    aware value for a ``DateTime(timezone=True)`` column, else the naive wall-clock
    time of ``HOST_TIMEZONE``, the zone the host writes its naive datetimes in."""
    local = datetime.combine(day, time.min, tzinfo=time_zone("TIMEZONE"))
    if getattr(column.type, "timezone", False):
        return local
    return local.astimezone(time_zone("HOST_TIMEZONE")).replace(tzinfo=None)


def _since_condition(selection: "Selection", host: HostModels, day: date) -> Any:
    created = host.user_column("created_at")
    return created >= _day_start(day, created)


def _before_condition(selection: "Selection", host: HostModels, day: date) -> Any:
    created = host.user_column("created_at")
    return created < _day_start(day + timedelta(days=1), created)


_ALL = ("all", _l("All"))
_SORT_CHOICES = (("none", _l("None")), ("profile", _l("Profile")), ("class", _l("Class")))

for _filter in (
    Filter(
        "profile", _l("Profiles"), multiple=True, read=_read_profiles, default=(),
        write=lambda profiles: [p.value for p in profiles], condition=_profile_condition,
        help="Teacher, Student, Relative, Personnel, Guest (repeatable).",
    ),
    Filter(
        "class", _l("Classes"), multiple=True, read=_read_classes, default=(),
        write=lambda ids: [str(i) for i in ids], condition=_class_condition, check=_check_classes,
        help="Class id (repeatable).",
    ),
    Filter(
        "activation", _l("Activation"),
        choices=(_ALL, ("inactive", _l("Not activated")), ("active", _l("Activated"))),
        condition=_activation_condition,
    ),
    Filter(
        "email", _l("Email"),
        choices=(_ALL, ("with", _l("With an email")), ("without", _l("Without an email"))),
        condition=_email_condition,
    ),
    Filter(
        "local_admin", _l("Local administrators"),
        choices=(_ALL, ("only", _l("Local administrators only")), ("exclude", _l("Excluding local administrators"))),
        condition=_local_admin_condition,
    ),
    Filter(
        "created_since", _l("Created since"), read=_reader_of_date("created_since"),
        write=lambda day: [day.isoformat()], condition=_since_condition, help="YYYY-MM-DD",
    ),
    Filter(
        "created_before", _l("Created before"), read=_reader_of_date("created_before"),
        write=lambda day: [day.isoformat()], condition=_before_condition, help="YYYY-MM-DD",
    ),
    Filter("sort", _l("Sort by"), choices=_SORT_CHOICES),
    Filter("then", _l("Then by"), choices=_SORT_CHOICES),
):
    register(_filter)


# -- the selection ------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Validated filters and sort: one value per :data:`FILTERS` parameter.

    Build it with :meth:`from_args` (a query string) or :meth:`from_dict` (what
    :meth:`to_dict` stored).
    """

    values: Mapping[str, Any] = field(default_factory=dict)
    scope: Scope | None = field(default=None, compare=False, repr=False)

    # -- reading values ------------------------------------------------------------------

    def get(self, param: str) -> Any:
        return self.values.get(param, FILTERS[param].default)

    @property
    def profiles(self) -> tuple[Profile, ...]:
        return self.get("profile")  # type: ignore[no-any-return]

    @property
    def class_ids(self) -> tuple[Any, ...]:
        return self.get("class")  # type: ignore[no-any-return]

    @property
    def email(self) -> str:
        return self.get("email")  # type: ignore[no-any-return]

    @property
    def sort(self) -> tuple[str, ...]:
        """The sort keys in order, ``()`` when none."""
        return tuple(k for k in (self.get("sort"), self.get("then")) if k != "none")

    @property
    def group_by(self) -> str | None:
        """The key starting a new sheet in the PDF: ``"class"``, ``"profile"`` or None."""
        return self.sort[0] if self.sort else None

    def with_values(self, **values: Any) -> "Selection":
        return Selection._of({**self.values, **values}, self.scope)

    # -- parsing ---------------------------------------------------------------------------

    @classmethod
    def from_args(
        cls,
        args: MultiDict[str, str] | Mapping[str, Any],
        scope: Scope,
        *,
        extra_params: Iterable[str] = ("page",),
    ) -> "Selection":
        """Parse and validate a query string, and check it against ``scope``;
        raise :class:`SelectionError`."""
        if not isinstance(args, MultiDict):
            args = MultiDict(args)
        known = set(extra_params)
        for key in args.keys():
            if key not in FILTERS and key not in known:
                raise SelectionError(_("Unknown parameter “%(name)s”.", name=key[:40]))
        selection = cls.from_dict({p: args.getlist(p) for p in FILTERS if p in args}, scope)
        selection.check_scope()
        return selection

    @classmethod
    def from_dict(cls, data: Mapping[str, list[str]], scope: Scope | None) -> "Selection":
        """The selection of :meth:`to_dict`'s output (no scope check: the caller
        checked it when the selection was first made)."""
        values = {}
        for param, raw in data.items():
            if param not in FILTERS:
                raise SelectionError(_("Unknown parameter “%(name)s”.", name=param[:40]))
            values[param] = FILTERS[param].parse([str(v) for v in raw])
        first, then = values.get("sort", "none"), values.get("then", "none")
        if first == "none" and then != "none":
            values["sort"], values["then"] = then, "none"
        elif then != "none" and then == first:
            raise SelectionError(_("“Then by” must differ from “Sort by”."), field="then")
        since, before = values.get("created_since"), values.get("created_before")
        if since and before and since > before:
            raise SelectionError(
                _("“Created since” must not be later than “Created before”."), field="created_since"
            )
        return cls._of(values, scope)

    @classmethod
    def _of(cls, values: Mapping[str, Any], scope: Scope | None) -> "Selection":
        """Only values other than the defaults are kept: equal selections compare equal."""
        return cls(MappingProxyType({k: v for k, v in values.items() if v != FILTERS[k].default}), scope)

    def check_scope(self) -> None:
        for param, value in self.values.items():
            check = FILTERS[param].check
            if check is not None:
                check(self, value)

    # -- back to a query string --------------------------------------------------------------

    def to_args(self) -> MultiDict[str, str]:
        """The query string that gives this selection back (links, runs, audit)."""
        items = []
        for param, filter_ in FILTERS.items():
            value = self.get(param)
            if value != filter_.default:
                items += [(param, raw) for raw in filter_.write(value)]
        return MultiDict(items)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-friendly form, stored with runs and audit rows."""
        args = self.to_args()
        return {k: args.getlist(k) for k in args.keys()}

    # -- SQL ---------------------------------------------------------------------------------

    def conditions(self, host: HostModels) -> list[Any]:
        conds: list[Any] = []
        if self.scope is not None and self.scope.users is not None:
            conds.append(self.scope.users)
        for param, value in self.values.items():
            condition = FILTERS[param].condition
            if condition is not None:
                conds.append(condition(self, host, value))
        return conds

    def class_key(self, host: HostModels) -> tuple[Any, list[tuple[Any, Any]]]:
        """An account's class, as a sort key: the smallest :meth:`~.HostModels.class_sort_key` of its
        classes, among the chosen classes and those of the scope; for an account
        in none of them, the smallest of their children's (a parent); NULL
        without a class.

        The one rule of "an account's class": the sort and the PDF groups use it,
        and :func:`~flask_publipostage.recipients.build` names a group by finding the
        class with this key. Returns the key and the ``(subquery, on)`` outer join
        it needs: one grouped query over the (member, class) pairs, much faster
        over a territory than a correlated subquery per account. The classes' keys
        are computed once per class (:meth:`_class_keys`), not once per pair; a
        parent's pairs (through a child) read "1" before the key, an account's own
        "0", so an account's own classes come first.
        """
        users = self.scope.users if self.scope is not None else None
        keys = self._class_keys(host)
        cls = aliased(host.class_model)
        own = host.pairs("classes", cls, users)
        stmt = own.select(sa.literal("0", sa.String).concat(keys.c.k).label("k"))
        branches = [self._restrict_classes(stmt.join(keys, keys.c.id == host.class_id_of(cls)), host, cls)]
        if host.has_children:
            via_cls = aliased(host.class_model)
            via = host.children_classes(aliased(host.user_model), via_cls, users)
            stmt = via.select(sa.literal("1", sa.String).concat(keys.c.k).label("k"))
            branches.append(self._restrict_classes(stmt.join(keys, keys.c.id == host.class_id_of(via_cls)), host, via_cls))
        members = (sa.union_all(*branches) if len(branches) > 1 else branches[0]).subquery("pp_member")
        first = (
            sa.select(members.c.owner, sa.func.min(members.c.k).label("k")).group_by(members.c.owner).subquery("pp_class")
        )
        return bytewise(sa.func.substr(first.c.k, 2)), [(first, first.c.owner == host.user_id)]

    def _class_keys(self, host: HostModels) -> Any:
        """(``id``, ``k``) of the classes an account's class is chosen among (the
        chosen ones, the scope's): a materialized CTE, so each key is computed once
        per class (a few thousand over a territory) rather than once per account
        and class (a hundred thousand)."""
        cls = aliased(host.class_model)
        stmt = sa.select(host.class_id_of(cls).label("id"), host.class_sort_key(cls).label("k"))
        return self._restrict_classes(stmt, host, cls).cte("pp_class_keys").prefix_with(materialized())

    def _restrict_classes(self, stmt: Any, host: HostModels, cls: Any) -> Any:
        """Only the chosen classes and the scope's (``cls``: an alias of the class
        model). Said again beside the keys' CTE, where the planner sees it: the
        chosen classes then lead to their few members, not to every family link."""
        if self.class_ids:
            stmt = stmt.where(host.class_id_of(cls).in_(self.class_ids))
        if self.scope is not None and self.scope.classes is not None:
            stmt = stmt.where(sa.inspect(cls)._adapt_element(self.scope.classes))
        return stmt

    def profile_rank(self, host: HostModels) -> Any:
        profile = host.profile_column()
        whens = [(profile.in_(host.host_profile_values(p)), index) for index, p in enumerate(PROFILE_ORDER)]
        return sa.case(*whens, else_=len(PROFILE_ORDER))

    def _query(self, host: HostModels) -> tuple[Any, Any, list[Any]]:
        """(FROM clause, class key, ORDER BY keys); every key ascending, never NULL."""
        source: Any = host.user_model
        class_key: Any = sa.null()
        if "class" in self.sort:
            class_key, joins = self.class_key(host)
            source = sa.orm.join(host.user_model, *joins[0], isouter=True)
            for subquery, on in joins[1:]:
                source = source.outerjoin(subquery, on)
        keys: list[Any] = []
        for key in self.sort:
            if key == "class":
                # Accounts without a class last.
                keys.append(sa.func.coalesce(sa.literal("0", sa.String).concat(class_key), sa.literal("1", sa.String)))
            else:
                keys.append(self.profile_rank(host))
        # Then French name order, the account id last: ties in print order never
        # depend on the database.
        names = (host.user_column(name) for name in ("last_name", "first_name", "login"))
        keys += [*name_order(*names), host.user_id]
        return source, class_key, keys

    def statement(self, host: HostModels) -> sa.Select[Any]:
        """The selected accounts, one row each, in print order.

        Columns: :meth:`HostModels.scalar_columns` (``id``, each scalar logical field,
        ``address_<n>``) and ``class_key`` (NULL unless sorted by class).
        """
        return self.ordered_statement(host)[0]

    def ordered_statement(self, host: HostModels) -> tuple[sa.Select[Any], list[Any]]:
        """:meth:`statement` and its ORDER BY expressions (keyset pages compare them)."""
        source, class_key, keys = self._query(host)
        stmt = sa.select(*host.scalar_columns(), class_key.label("class_key")).select_from(source)
        return stmt.where(*self.conditions(host)).order_by(*keys), keys

    def numbered(self, host: HostModels) -> sa.Select[Any]:
        """The selected accounts as the rows a run freezes: ``position`` (1-based,
        print order), ``user_id`` (as text), ``name``, ``email`` (NULL without one)
        and ``group_key`` (the class key or the profile rank when grouped)."""
        source, class_key, keys = self._query(host)
        first = sa.func.coalesce(host.user_column("first_name"), "")
        last = sa.func.coalesce(host.user_column("last_name"), "")
        email = host.user_column("email")
        group_key = {"class": class_key, "profile": sa.cast(self.profile_rank(host), sa.String)}.get(
            self.group_by or "", sa.null()
        )
        return (
            sa.select(
                sa.func.row_number().over(order_by=keys).label("position"),
                sa.cast(host.user_id, sa.String).label("user_id"),
                sa.func.trim(first.concat(" ").concat(last)).label("name"),
                sa.case((has_email(host), email), else_=sa.null()).label("email"),
                group_key.label("group_key"),
            )
            .select_from(source)
            .where(*self.conditions(host))
        )

    def counters_statement(self, host: HostModels) -> sa.Select[Any]:
        """Selected accounts, those without email, those not activated: one query."""
        return sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((sa.not_(has_email(host)), 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((sa.not_(host.user_column("activated")), 1), else_=0)), 0),
        ).where(*self.conditions(host))


@dataclass(frozen=True)
class Counters:
    selected: int
    without_email: int
    not_activated: int


def count(selection: Selection) -> Counters:
    found = state()
    row = found.session.execute(selection.counters_statement(found.host)).one()
    return Counters(int(row[0]), int(row[1]), int(row[2]))


def check_size(counters: Counters) -> None:
    """Refuse a selection larger than ``MAX_SELECTION`` (every output)."""
    limit = config_value("MAX_SELECTION")
    if counters.selected > limit:
        raise SelectionError(
            _(
                "This selection holds %(count)d accounts, more than the %(max)d allowed "
                "at once. Narrow it with the filters (a class, a profile).",
                count=counters.selected,
                max=limit,
            )
        )
