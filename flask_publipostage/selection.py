"""One selection of accounts, parsed once and used by every output.

The preview, the CSV, the PDF and the mail all run :meth:`Selection.statement`:
what the admin checked on screen is exactly what gets printed or sent. Every
filter and sort runs in SQL.

:data:`FILTERS` is the one table of the selection's parameters: each says its
query-string name, label, choices, parser and SQL. The form, the page's script,
the command-line options and the labels of errors and journals read it. An output
adds a restriction of its own with :func:`register` (the mail package adds
``campaign``: the accounts a campaign did not reach; the history adds
``distributed``); nothing here imports one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
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
from .sql import bytewise, fold_for_sort, materialized, name_key, name_order
from .state import state

MAX_CLASSES = 500
#: Words of a search (``q``), at most.
MAX_SEARCH_WORDS = 5
#: Between the sort levels' parts of a run item's group key (a control character
#: no class or school name holds).
LEVEL_SEPARATOR = "\x1f"
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
    :param requires: the optional logical field the host must map
        (:meth:`HostModels.maps`) for the filter to exist: without it the form
        does not offer it and the parameter is unknown (400).
    :param restricts_by_default: its default value restricts too (``blocked``:
        blocked accounts are left out unless asked for), where the default of
        every other filter keeps every account.
    :param not_before: a day filter's partner it may not precede (the last day
        of a range names its first: ``created_before`` names ``created_since``).
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
    requires: str | None = None
    restricts_by_default: bool = False
    not_before: str = ""

    def __post_init__(self) -> None:
        if self.choices and self.default is None:
            object.__setattr__(self, "default", self.choices[0][0])

    def available(self, host: HostModels) -> bool:
        """The host maps what the filter needs."""
        return self.requires is None or host.maps(self.requires)

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


def available_filters(host: HostModels) -> dict[str, Filter]:
    """The filters this host's mapping allows, in the form's order: what the form,
    its script and the preview offer."""
    return {param: found for param, found in FILTERS.items() if found.available(host)}


def field_label(param: str) -> str:
    if param == "page":
        return _("Page")
    found = FILTERS.get(param)
    return str(found.label) if found else param


def describe(args: Mapping[str, list[str]], names: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """A stored selection in words, as the journal shows it ("Parents · CP, CE1 ·
    Avec un courriel"); ``names``: ``"class"``, ``"school"`` and ``"account"`` ->
    id (text) -> name."""
    words = []
    for param, found in FILTERS.items():
        raw = args.get(param)
        if not raw or param == "then":
            continue
        if param == "profile":
            words.append(", ".join(p.plural_label for p in _read_profiles(raw)))
        elif param in ("class", "school", "account"):
            known = (names or {}).get(param, {})
            words.append(", ".join(known.get(v) or (v if names is None else _unnamed(param, v)) for v in raw))
        elif param in ("sort", "then"):
            keys = [found.choice_label(raw[0]), *(FILTERS["then"].choice_label(v) for v in args.get("then", []))]
            words.append(_("Sorted by %(keys)s", keys=", ".join(keys).lower()))
        elif found.choices:
            words.append(found.choice_label(raw[0]))
        elif isinstance(value := found.parse(raw), date):
            words.append(f"{found.label} {value.strftime('%d/%m/%Y')}")
        else:
            words.append(f"{found.label} {', '.join(raw)}")
    return " · ".join(words) or _("All accounts")


def _unnamed(param: str, value: str) -> str:
    """A class, school or account a stored selection names that the admin's
    perimeter no longer holds (or that no longer exists): its id, and why."""
    if param == "class":
        return _("class %(id)s, unknown or outside your perimeter", id=value[:40])
    if param == "school":
        return _("school %(id)s, unknown or outside your perimeter", id=value[:40])
    return _("account %(id)s, unknown or outside your perimeter", id=value[:40])


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


def _read_keys(values: list[str], column: Any, param: str, invalid: str, too_many: str) -> tuple[Any, ...]:
    """Primary keys of ``column``'s model, each checked, duplicates dropped."""
    if len(values) > MAX_CLASSES:
        raise SelectionError(too_many % {"max": MAX_CLASSES}, field=param)
    parsed = []
    for value in values:
        key = parse_key(column, value)
        if key is None or key == "":
            raise SelectionError(invalid % {"value": value[:40]}, field=param)
        parsed.append(key)
    return tuple(dict.fromkeys(parsed))


def _read_classes(values: list[str]) -> tuple[Any, ...]:
    return _read_keys(
        values, state().host.class_id, "class",
        _("Invalid class “%(value)s”."), _("Too many classes: choose at most %(max)d."),
    )


def _read_schools(values: list[str]) -> tuple[Any, ...]:
    host = state().host
    return _read_keys(
        values, host.school_id, "school",
        _("Invalid school “%(value)s”."), _("Too many schools: choose at most %(max)d."),
    )


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


def perimeter_schools(scope: Scope | None) -> list[tuple[Any, str]]:
    """(key, name) of the schools of the admin's perimeter, in name order: the
    schools of the accounts they may see (every school for a super admin); ``[]``
    without the school dimension."""
    host = state().host
    if not host.has_schools:
        return []
    name = host.school_name_column()
    stmt = sa.select(host.school_id, name).order_by(host.school_sort_key(), host.school_id)
    if scope is not None and scope.users is not None:
        theirs = sa.select(host.school_of_user()).where(scope.users).distinct().scalar_subquery()
        stmt = stmt.where(host.school_id.in_(theirs))
    return [(key, value or "") for key, value in state().session.execute(stmt).all()]


def _school_condition(selection: "Selection", host: HostModels, school_ids: tuple[Any, ...]) -> Any:
    return host.school_of_user().in_(school_ids)


def _check_schools(selection: "Selection", school_ids: tuple[Any, ...]) -> None:
    """403 for a school outside the admin's perimeter or that does not exist, as
    for a class."""
    known = {key for key, _name in perimeter_schools(selection.scope)}
    if any(key not in known for key in school_ids):
        raise SelectionError(_("One of the chosen schools is outside your scope."), status=403, field="school")


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


def _flag(host: HostModels, name: str) -> Any:
    """A boolean field of the host (``federated``, ``blocked``) as a true/false
    condition, NULL read as false."""
    return sa.func.coalesce(host.user_column(name), sa.false()) == sa.true()


def is_federated(host: HostModels) -> Any:
    """The account signs in with its academic identity (false when not mapped)."""
    return _flag(host, "federated") if host.maps("federated") else sa.false()


def is_blocked(host: HostModels) -> Any:
    """The account is blocked (false when not mapped)."""
    return _flag(host, "blocked") if host.maps("blocked") else sa.false()


def _validity_now(column: Any) -> date | datetime:
    """This moment as ``column`` (``code_valid_until``) stores a validity end:
    today in the school's zone for a date (valid through that day), an aware
    moment for ``DateTime(timezone=True)``, else the naive wall-clock time of
    ``HOST_TIMEZONE``, as for ``created_at``."""
    now = datetime.now(time_zone("TIMEZONE"))
    if isinstance(column.type, sa.Date):
        return now.date()
    if getattr(column.type, "timezone", False):
        return now
    return now.astimezone(time_zone("HOST_TIMEZONE")).replace(tzinfo=None)


def has_code(host: HostModels) -> Any:
    """An activation code to print: not activated, not federated, a code."""
    code = host.user_column("activation_code")
    return sa.and_(sa.not_(host.user_column("activated")), code.is_not(None), code != "", sa.not_(is_federated(host)))


def code_expired(host: HostModels) -> Any:
    """The one rule of an expired code, in SQL: an activation code to print whose
    validity (``code_valid_until``) has ended; false when not mapped. The filter
    ``code``, the counters and every output (the column ``code_expired`` of
    :func:`state_columns`) read it."""
    if not host.maps("code_valid_until"):
        return sa.false()
    until = host.user_column("code_valid_until")
    return sa.and_(has_code(host), until.is_not(None), until < _validity_now(until))


def state_columns(host: HostModels) -> list[Any]:
    """Columns the outputs read beside :meth:`HostModels.scalar_columns`:
    ``code_expired`` when the host maps the code's validity."""
    if not host.maps("code_valid_until"):
        return []
    return [sa.case((code_expired(host), True), else_=False).label("code_expired")]


def _federated_condition(selection: "Selection", host: HostModels, value: str) -> Any:
    return is_federated(host) if value == "only" else sa.not_(is_federated(host))


def _code_condition(selection: "Selection", host: HostModels, value: str) -> Any:
    if value == "expired":
        return code_expired(host)
    return sa.and_(has_code(host), sa.not_(code_expired(host)))


def _blocked_condition(selection: "Selection", host: HostModels, value: str) -> Any:
    if value == "all":
        return None
    return is_blocked(host) if value == "only" else sa.not_(is_blocked(host))


def day_start(day: date, column: Any, naive_in: tzinfo | None = None) -> datetime:
    """Midnight of ``day`` in the school's time zone, as the column stores it: an
    aware value for a ``DateTime(timezone=True)`` column, else the naive wall-clock
    time of ``naive_in``: by default ``HOST_TIMEZONE``, the zone the host writes
    its naive datetimes in (the extension's own tables write UTC). Every day
    filter counts calendar days of ``TIMEZONE`` through it, both ends inclusive."""
    local = datetime.combine(day, time.min, tzinfo=time_zone("TIMEZONE"))
    if getattr(column.type, "timezone", False):
        return local
    return local.astimezone(naive_in or time_zone("HOST_TIMEZONE")).replace(tzinfo=None)


def _since_condition(selection: "Selection", host: HostModels, day: date) -> Any:
    created = host.user_column("created_at")
    return created >= day_start(day, created)


def _before_condition(selection: "Selection", host: HostModels, day: date) -> Any:
    created = host.user_column("created_at")
    return created < day_start(day + timedelta(days=1), created)


def search_words(text: str) -> list[str]:
    """The words of a search, folded as names are sorted (accents, ligatures and
    case ignored: "Élo" -> "elo")."""
    return (fold_for_sort(text) or "").split()


def _read_search(values: list[str]) -> str:
    text = " ".join(values[0].split())
    if len(search_words(text)) > MAX_SEARCH_WORDS:
        raise SelectionError(
            _("Search with at most %(max)d words.", max=MAX_SEARCH_WORDS), field="q"
        )
    return text


def starts_with(key: Any, prefix: str) -> Any:
    """``key`` (a :class:`~flask_publipostage.sql.name_key`, compared byte-wise)
    starts with ``prefix``: a range, so an index on the key could serve it."""
    return sa.and_(key >= prefix, key < prefix + "\U0010ffff")


def _search_condition(selection: "Selection", host: HostModels, text: str) -> Any:
    """Each word starts the last name, the first name or the login, accents and
    case ignored ("elo abe" finds Élodie Abel): the names' sort keys
    (:class:`~flask_publipostage.sql.name_key`), which fold an ASCII name with
    ``lower()`` alone, so a territory's search costs about one sort of its names."""
    columns = [host.user_column(name) for name in ("last_name", "first_name", "login")]
    return sa.and_(*(sa.or_(*(starts_with(name_key(c), word) for c in columns)) for word in search_words(text)))


def _read_account(values: list[str]) -> Any:
    key = parse_key(state().host.user_id, values[0])
    if key is None or key == "":
        raise SelectionError(_("Invalid account “%(value)s”.", value=values[0][:40]), field="account")
    return key


def _account_condition(selection: "Selection", host: HostModels, key: Any) -> Any:
    return host.user_id == key


def _account_row(selection: "Selection", key: Any) -> Any:
    """(first name, last name, login) of the account when the admin may see it, else None."""
    host = state().host
    stmt = sa.select(*(host.user_column(n) for n in ("first_name", "last_name", "login"))).where(host.user_id == key)
    if selection.scope is not None and selection.scope.users is not None:
        stmt = stmt.where(selection.scope.users)
    return state().session.execute(stmt).first()


def _check_account(selection: "Selection", key: Any) -> None:
    """403 for an account outside the admin's perimeter or that does not exist,
    as for a class."""
    if _account_row(selection, key) is None:
        raise SelectionError(_("This account is outside your scope."), status=403, field="account")


def _account_banner(selection: "Selection", key: Any) -> str:
    row = _account_row(selection, key)
    name = f"{row[0] or ''} {row[1] or ''}".strip() if row else ""
    return _("One account only: %(name)s (%(login)s)", name=name, login=row[2] if row else key)


_ALL = ("all", _l("All"))
_SORT_CHOICES = (("none", _l("None")), ("profile", _l("Profile")), ("class", _l("Class")), ("school", _l("School")))

for _filter in (
    Filter(
        "q", _l("Search"), read=_read_search, write=lambda text: [text], condition=_search_condition,
        help="Start of the last name, first name or login (accents and case ignored).",
    ),
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
        "school", _l("School"), multiple=True, read=_read_schools, default=(),
        write=lambda ids: [str(i) for i in ids], condition=_school_condition, check=_check_schools,
        help="School id (repeatable), when the host maps schools.", requires="school",
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
        "federated", _l("Federated accounts"),
        choices=(_ALL, ("only", _l("Federated accounts only")), ("exclude", _l("Excluding federated accounts"))),
        condition=_federated_condition, requires="federated",
        help="Accounts signing in with their academic identity, when the host maps them.",
    ),
    Filter(
        "code", _l("Activation code"),
        choices=(_ALL, ("valid", _l("Code still valid")), ("expired", _l("Code expired"))),
        condition=_code_condition, requires="code_valid_until",
        help="Activation codes still valid or expired, when the host maps their validity.",
    ),
    Filter(
        "blocked", _l("Blocked accounts"),
        choices=(("exclude", _l("Excluding blocked accounts")), ("only", _l("Blocked accounts only")), _ALL),
        condition=_blocked_condition, requires="blocked", restricts_by_default=True,
        help="Blocked accounts are left out unless asked for, when the host maps them.",
    ),
    Filter(
        "created_since", _l("Created since"), read=_reader_of_date("created_since"),
        write=lambda day: [day.isoformat()], condition=_since_condition, help="YYYY-MM-DD",
    ),
    Filter(
        "created_before", _l("Created before"), read=_reader_of_date("created_before"),
        write=lambda day: [day.isoformat()], condition=_before_condition, help="YYYY-MM-DD",
        not_before="created_since",
    ),
    Filter("sort", _l("Sort by"), choices=_SORT_CHOICES),
    Filter("then", _l("Then by"), choices=_SORT_CHOICES),
    Filter(
        "account", _l("Account"), read=_read_account, condition=_account_condition, check=_check_account,
        banner=_account_banner, help="One account id: its own sheet.",
    ),
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
    def school_ids(self) -> tuple[Any, ...]:
        return self.get("school")  # type: ignore[no-any-return]

    @property
    def email(self) -> str:
        return self.get("email")  # type: ignore[no-any-return]

    @property
    def sort(self) -> tuple[str, ...]:
        """The sort keys in order, ``()`` when none."""
        return tuple(k for k in (self.get("sort"), self.get("then")) if k != "none")

    @property
    def group_by(self) -> str | None:
        """The first sort key: ``"class"``, ``"profile"``, ``"school"`` or None. Each
        group of the first key is a bundle of the PDF (a class bundle when sorted by
        class first); every group of every key starts a new sheet."""
        return self.sort[0] if self.sort else None

    @property
    def by_class(self) -> bool:
        """Sorted by class, first or then: every class is a group of the PDF."""
        return "class" in self.sort

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
        host = state().host
        for param, raw in data.items():
            if param not in FILTERS or not FILTERS[param].available(host):
                raise SelectionError(_("Unknown parameter “%(name)s”.", name=param[:40]))
            values[param] = FILTERS[param].parse([str(v) for v in raw])
        first, then = values.get("sort", "none"), values.get("then", "none")
        if first == "none" and then != "none":
            values["sort"], values["then"] = then, "none"
        elif then != "none" and then == first:
            raise SelectionError(_("“Then by” must differ from “Sort by”."), field="then")
        if "school" in (first, then) and not state().host.has_schools:
            param = "sort" if first == "school" else "then"
            raise SelectionError(
                _("Invalid value “%(value)s” for the field “%(name)s”.", value="school", name=FILTERS[param].label),
                field=param,
            )
        for param, value in values.items():
            first = FILTERS[param].not_before
            if first and value and values.get(first) and values[first] > value:
                raise SelectionError(
                    _("The date “%(since)s” must not be later than “%(before)s”.",
                      since=FILTERS[first].label, before=FILTERS[param].label),
                    field=first,
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
        """The scope's condition, then each filter's: those given, and those whose
        default restricts too (``blocked``)."""
        conds: list[Any] = []
        if self.scope is not None and self.scope.users is not None:
            conds.append(self.scope.users)
        for param, found in FILTERS.items():
            if found.condition is None or not (param in self.values or found.restricts_by_default):
                continue
            if not found.available(host):
                continue
            condition = found.condition(self, host, self.get(param))
            if condition is not None:
                conds.append(condition)
        return conds

    def class_key(
        self, host: HostModels, owner: Any = None, among: Any = None, keys: Any = None
    ) -> tuple[Any, list[tuple[Any, Any]], Any]:
        """An account's class, as a sort key: the smallest :meth:`~.HostModels.class_sort_key` of its
        classes, among the chosen classes and those of the scope; for an account
        in none of them, the smallest of their children's (a parent); NULL
        without a class.

        The one rule of "an account's class": the sort and the PDF groups use it,
        and :func:`~flask_publipostage.recipients.build` names a group by finding the
        class with this key. Returns the key's rank (an integer, NULL without a
        class), the outer joins ``(subquery, on)`` it needs, and the CTE of the
        ranks' keys (``rank``, ``k``): the text of a rank, joined only where the
        key is shown. The joins are a grouped query over the (member, class)
        pairs, much faster over a territory than a correlated subquery per
        account, and another over the (parent, child's class) pairs. The classes'
        keys are computed once per class (:meth:`_class_keys`), not once per
        pair, and ranked: the pairs carry the key's rank, so the groupings (a
        hundred thousand accounts) and the sort compare and hold integers, not
        texts, and each grouping reads one link table whose statistics the
        database knows. ``owner``: that account's key alone (the rest are not
        computed); ``among``: a CTE of ids (``id``), the keys of those accounts
        alone; ``keys``: :meth:`_class_keys`, when the statement already has it.
        """
        users = self.scope.users if self.scope is not None else None
        keys = self._class_keys(host) if keys is None else keys

        def smallest(pairs: Any, cls: Any, name: str) -> Any:
            stmt = pairs.select(keys.c.rank.label("r")).join(keys, keys.c.id == host.class_id_of(cls))
            if owner is not None:
                stmt = stmt.where(pairs.owner_id == owner)
            if among is not None:
                stmt = stmt.where(pairs.owner_id.in_(sa.select(among.c.id)))
            rows = self._restrict_classes(stmt, host, cls).subquery(f"{name}_pairs")
            return sa.select(rows.c.owner, sa.func.min(rows.c.r).label("r")).group_by(rows.c.owner).subquery(name)

        cls = aliased(host.class_model)
        own = smallest(host.pairs("classes", cls, users), cls, "pp_class")
        joins = [(own, own.c.owner == host.user_id)]
        rank = own.c.r
        if host.has_children:
            via_cls = aliased(host.class_model)
            via = smallest(host.children_classes(aliased(host.user_model), via_cls, users), via_cls, "pp_child_class")
            joins.append((via, via.c.owner == host.user_id))
            rank = sa.func.coalesce(own.c.r, via.c.r)
        ranks = sa.select(keys.c.rank, keys.c.k).distinct().cte("pp_class_ranks").prefix_with(materialized())
        return rank, joins, ranks

    def _class_window(self, host: HostModels, keys: Any, low: int, high: int) -> Any:
        """A CTE of the ids (``id``) of the accounts whose class ranks from ``low``
        to ``high`` (:meth:`class_key`), and of some more: the members of those
        classes and the parents of their pupils, found through the link tables'
        indexes, whose own rank is computed next (``keys``: :meth:`_class_keys`)."""
        found = [
            stmt.join(keys, keys.c.id == host.class_id_of(cls)).where(keys.c.rank.between(low, high))
            for stmt, cls, _owner_id in self._class_owner_rows(host)
        ]
        return sa.union(*found).cte("pp_window").prefix_with(materialized())

    def _class_owners(self, host: HostModels, owner: Any) -> list[Any]:
        """The (owner, class) rows of :meth:`class_key` of the account ``owner``
        (a column), its own classes and its children's: a correlated subquery each."""
        return [stmt.where(owner_id == owner) for stmt, _cls, owner_id in self._class_owner_rows(host)]

    def _class_owner_rows(self, host: HostModels) -> list[tuple[Any, Any, Any]]:
        """``(statement, class alias, owner id)`` of the owners' ids (``id``) of
        :meth:`class_key`'s rows: the members of the chosen classes and the
        scope's, the parents of their pupils."""
        users = self.scope.users if self.scope is not None else None
        cls, via_cls = aliased(host.class_model), aliased(host.class_model)
        pairs = [(host.pairs("classes", cls, users), cls)]
        if host.has_children:
            pairs.append((host.children_classes(aliased(host.user_model), via_cls, users), via_cls))
        found = []
        for rows, model in pairs:
            stmt = sa.select(rows.owner_id.label("id")).select_from(rows.clause).where(*rows.conditions)
            found.append((self._restrict_classes(stmt, host, model), model, rows.owner_id))
        return found

    def _class_keys(self, host: HostModels) -> Any:
        """(``id``, ``k``, ``rank``) of the classes an account's class is chosen
        among (the chosen ones, the scope's): a materialized CTE, so each key is
        computed once per class (a few thousand over a territory) rather than once
        per account and class (a hundred thousand), and then ranked (a CTE of its
        own: else the key would be computed again for the rank). ``rank``: the
        key's, from 1, equal keys equal ranks."""
        cls = aliased(host.class_model)
        stmt = sa.select(host.class_id_of(cls).label("id"), host.class_sort_key(cls).label("k"))
        classes = self._restrict_classes(stmt, host, cls).cte("pp_class_key").prefix_with(materialized())
        ranked = sa.select(
            classes.c.id, classes.c.k, sa.func.dense_rank().over(order_by=bytewise(classes.c.k)).label("rank")
        )
        return ranked.cte("pp_class_keys").prefix_with(materialized())

    def class_pairs(self, host: HostModels) -> Any:
        """Every class bundle an account counts in, as ``(owner, bundle)`` rows:
        its own classes, or, for an account without one (a parent), its
        children's; the chosen classes and the scope's only. ``bundle`` is the
        smallest id of the classes sharing the class's
        :meth:`~.HostModels.class_sort_key` (they make one bundle), so the rows
        are told apart by ids, not texts: counting them over a territory takes a
        third less time. :meth:`class_key` is the smallest key of them: the same
        rule, one class or all of them ("a bundle for every class")."""
        cls = aliased(host.class_model)
        bundles = self._restrict_classes(
            sa.select(
                host.class_id_of(cls).label("id"),
                sa.func.min(host.class_id_of(cls)).over(partition_by=host.class_sort_key(cls)).label("bundle"),
            ),
            host,
            cls,
        ).subquery("pp_class_bundle")
        (own, own_owner), via = self._class_rows(host, lambda _cls: bundles.c.bundle, bundles)
        if via is None:
            return own.distinct().subquery("pp_class_pairs")
        with_own = own.subquery("pp_with_own_class")
        children = via[0].where(via[1].not_in(sa.select(with_own.c.owner)))
        return sa.union(own, children).subquery("pp_class_pairs")

    def class_memberships(self, host: HostModels) -> Any:
        """Every class an account is in for the ``class`` filter, as ``(owner,
        class_id)`` rows: its own classes and its children's (the chosen classes
        and the scope's only). The class filter's rule, one row per class: the
        follow-up counts a class's accounts as the page lists them."""
        (own, _owner), via = self._class_rows(host, lambda cls: host.class_id_of(cls).label("class_id"))
        return (own if via is None else sa.union(own, via[0])).subquery("pp_class_memberships")

    def _class_rows(
        self, host: HostModels, column: Callable[[Any], Any], bundles: Any = None
    ) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
        """``(statement, owner id)`` of the rows ``(owner, column(class))`` of each
        account's own classes, and of its children's classes (None when the host
        maps no children), restricted to the chosen classes and the scope's;
        ``bundles`` (``id``, ``bundle``) joined on each class."""
        users = self.scope.users if self.scope is not None else None

        def rows(pairs: Any, cls: Any) -> Any:
            stmt = self._restrict_classes(pairs.select(column(cls)), host, cls)
            return stmt if bundles is None else stmt.join(bundles, bundles.c.id == host.class_id_of(cls))

        cls = aliased(host.class_model)
        own = host.pairs("classes", cls, users)
        if not host.has_children:
            return (rows(own, cls), own.owner_id), None
        via_cls = aliased(host.class_model)
        via = host.children_classes(aliased(host.user_model), via_cls, users)
        return (rows(own, cls), own.owner_id), (rows(via, via_cls), via.owner_id)

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

    def school_key(self, host: HostModels) -> tuple[Any, Any, tuple[Any, Any]]:
        """An account's school, as a sort key (:meth:`HostModels.school_sort_key`;
        NULL without a school), the key's rank (an integer, NULL without a
        school), and the ``(school keys, on)`` outer join they need: the keys are
        computed once per school (a materialized CTE of a few hundred rows), not
        once per account, and ranked there (the sort compares integers)."""
        key = host.school_sort_key()
        keys = (
            sa.select(
                host.school_id.label("id"),
                key.label("k"),
                sa.func.dense_rank().over(order_by=key).label("rank"),
            )
            .cte("pp_school_keys")
            .prefix_with(materialized())
        )
        return keys.c.k, keys.c.rank, (keys, keys.c.id == host.school_of_user())

    def _query(
        self,
        host: HostModels,
        every_class: bool = False,
        owner: Any = None,
        texts: bool = True,
        window: tuple[int, int] | None = None,
    ) -> "_Sort":
        """The FROM clause and keys of the sort (:class:`_Sort`). ``every_class``:
        one row per account and class it counts in (:meth:`class_pairs`) rather
        than one per account; ``owner``: the row of that account alone
        (:meth:`ordered_statement`); ``texts``: with the levels' texts (the class
        key, the group key), else with the ORDER BY keys alone; ``window``: only
        the accounts whose first sort level (a class or a school) ranks between
        these two (:meth:`page_statement`)."""
        source: Any = host.user_model
        class_key: Any = sa.null()
        ranks: dict[str, Any] = {}
        class_ranks = None
        conditions: list[Any] = []
        # The accounts of a window of classes (schools), or of "no class" ("no
        # school") alone, are found first: the class keys are computed for them
        # alone. A window from a class (school) to the end is read whole.
        among = None
        alone = window == (NO_RANK, NO_RANK)
        first = self.sort[0] if window is not None and (window[1] < NO_RANK or alone) else None
        if "school" in self.sort:
            school_text, ranks["school"], (school, school_on) = self.school_key(host)
            if first == "school":
                assert window is not None
                of_user = host.school_of_user()
                if alone:
                    in_window = sa.or_(of_user.is_(None), of_user.not_in(sa.select(school.c.id)))
                else:
                    in_window = of_user.in_(sa.select(school.c.id).where(school.c.rank.between(*window)))
                conditions.append(in_window)
                among = sa.select(host.user_id.label("id")).where(in_window).cte("pp_window")
        if first == "class" and alone:
            # No class: neither their own nor their children's (apart: else the
            # database sorts every account before it looks at their classes).
            ranks["class"] = sa.null()
            none = [sa.not_(sa.exists(rows)) for rows in self._class_owners(host, host.user_id)]
            among = sa.select(host.user_id.label("id")).where(*none).cte("pp_window").prefix_with(materialized())
            conditions.append(host.user_id.in_(sa.select(among.c.id)))
        elif self.by_class and every_class:
            pairs = self.class_pairs(host)
            bundle = aliased(host.class_model)
            class_key = host.class_sort_key(bundle)
            source = sa.orm.join(host.user_model, pairs, pairs.c.owner == host.user_id, isouter=True)
            source = source.outerjoin(bundle, host.class_id_of(bundle) == pairs.c.bundle)
        elif self.by_class:
            keys = self._class_keys(host)
            if first == "class":
                assert window is not None
                among = self._class_window(host, keys, *window)
                conditions.append(host.user_id.in_(sa.select(among.c.id)))
            ranks["class"], joins, class_ranks = self.class_key(host, owner, among, keys)
            source = sa.orm.join(host.user_model, *joins[0], isouter=True)
            for subquery, on in joins[1:]:
                source = source.outerjoin(subquery, on)
            if texts:
                class_key = bytewise(class_ranks.c.k)
                source = source.outerjoin(class_ranks, class_ranks.c.rank == ranks["class"])
        if "school" in self.sort:
            source = sa.orm.outerjoin(source, school, school_on)
        keys_texts = {"class": class_key}
        if "school" in self.sort:
            keys_texts["school"] = school_text
        levels: dict[str, Any] = {}
        order: list[Any] = []
        for key in self.sort:
            if key in keys_texts:
                # Accounts without a class (a school) last. The texts name the
                # groups; the ranks sort in the same order, as integers.
                text = keys_texts[key]
                levels[key] = sa.func.coalesce(sa.literal("0", sa.String).concat(text), sa.literal("1", sa.String))
                order.append(sa.func.coalesce(ranks[key], NO_RANK) if key in ranks else levels[key])
            else:
                levels[key] = self.profile_rank(host)
                order.append(levels[key])
        # Then French name order, the account id last: ties in print order never
        # depend on the database.
        names = (host.user_column(name) for name in ("last_name", "first_name", "login"))
        keys = [*order, *name_order(*names), host.user_id]
        if window is not None:
            conditions.append(order[0].between(*window))
        return _Sort(source, keys, levels, class_key, class_ranks, conditions)

    def statement(self, host: HostModels) -> sa.Select[Any]:
        """The selected accounts, one row each, in print order.

        Columns: :meth:`HostModels.scalar_columns` (``id``, each scalar logical field,
        ``address_<n>``) and ``class_key`` (NULL unless sorted by class).
        """
        return self.ordered_statement(host)[0]

    def ordered_statement(self, host: HostModels, owner: Any = None) -> tuple[sa.Select[Any], list[Any]]:
        """:meth:`statement` and its ORDER BY expressions (keyset pages compare them).
        ``owner``: that account's row alone, its keys computed for it alone (the
        boundary of a keyset page costs a lookup, not a pass over the territory)."""
        sort = self._query(host, owner=owner)
        stmt = sa.select(*self._columns(host), sort.class_key.label("class_key")).select_from(sort.source)
        stmt = stmt.where(*self.conditions(host))
        if owner is not None:
            stmt = stmt.where(host.user_id == owner)
        return stmt.order_by(*sort.keys), sort.keys

    def first_ranks(self, host: HostModels) -> int | None:
        """How many ranks the first sort level has when it is the class or the
        school (the ranks :meth:`page_statement`'s windows count in: one per
        class of the chosen ones and the scope's, one per school; "no class" is
        :data:`NO_RANK`), else None: a page is then read in one go."""
        if not self.sort or self.sort[0] not in ("class", "school"):
            return None
        session = state().session
        if self.sort[0] == "school":
            if len(perimeter_schools(self.scope)) < MIN_WINDOW_SCHOOLS:
                return None
            return int(session.execute(sa.select(sa.func.count()).select_from(host.school_model)).scalar_one())
        cls = aliased(host.class_model)
        stmt = self._restrict_classes(sa.select(sa.func.count()).select_from(cls), host, cls)
        ranks = int(session.execute(stmt).scalar_one())
        return ranks if ranks >= MIN_WINDOW_CLASSES else None

    @staticmethod
    def _columns(host: HostModels) -> list[Any]:
        return [*host.scalar_columns(), *state_columns(host)]

    def page_statement(
        self,
        host: HostModels,
        size: int,
        offset: int = 0,
        *,
        bound: Any = None,
        backwards: bool = False,
        window: tuple[int, int] | None = None,
    ) -> sa.Select[Any]:
        """A page of :meth:`statement`'s rows, in print order: ``size`` rows from
        ``offset``, or (``bound``: the values of :meth:`ordered_statement`'s keys
        for one account) the ``size`` rows just after it; ``backwards``: the
        ``size`` rows just before it, or the last ones without ``bound``.

        The sort runs on narrow rows, each account's id and sort keys, and only the
        page's accounts are then read whole, with their class's key: over a
        territory the sort holds a hundred thousand short rows rather than as many
        accounts joined to their class keys.

        ``window`` (``(low, high)``, see :meth:`first_ranks`): only the accounts
        whose first sort level ranks between the two, both included. Short of
        :data:`NO_RANK`, its accounts are found through the indexes (a class's
        members and their parents, a school's accounts) and the class keys are
        computed for them alone: a page of a territory sorted by class or school
        reads a few classes or one school, not a hundred thousand accounts."""
        sort = self._query(host, texts=False, window=window)
        columns = [key.label(f"pp_key_{index}") for index, key in enumerate(sort.keys)]
        narrow = sa.select(host.user_id.label("pp_id"), *columns).select_from(sort.source)
        narrow = narrow.where(*self.conditions(host), *sort.conditions)
        keys: list[Any] = sort.keys
        if bound is not None:
            values = sa.tuple_(*[sa.literal(v) if v is not None else sa.null() for v in bound])
            narrow = narrow.where(sa.tuple_(*keys) < values if backwards else sa.tuple_(*keys) > values)
        if backwards:
            keys = [key.desc() for key in keys]
        found = narrow.order_by(*keys).limit(size).offset(offset or None).subquery("pp_page")
        source = sa.orm.join(host.user_model, found, found.c.pp_id == host.user_id)
        class_key: Any = sa.null()
        if sort.class_ranks is not None:
            rank = found.c[f"pp_key_{self.sort.index('class')}"]
            source = source.outerjoin(sort.class_ranks, sort.class_ranks.c.rank == rank)
            class_key = bytewise(sort.class_ranks.c.k)
        stmt = sa.select(*self._columns(host), class_key.label("class_key")).select_from(source)
        return stmt.order_by(*(found.c[c.name] for c in columns))

    def numbered(self, host: HostModels, *, every_class: bool = False) -> sa.Select[Any]:
        """The selected accounts as the rows a run freezes: ``position`` (1-based,
        print order), ``user_id`` (as text), ``name``, ``email`` (NULL without one)
        and ``group_key``. ``every_class`` (sorted by class): a row for every class
        an account counts in, in each class's place.

        ``group_key`` names the account's group at every sort level, one text
        compared byte-wise (:meth:`class_key_of` and :meth:`first_level_of` read it
        back): the level keys in sort order, joined by :data:`LEVEL_SEPARATOR` —
        the profile's rank, "0" and the class's (the school's) key or "1" without
        one; NULL unsorted."""
        sort = self._query(host, every_class)
        source, levels, keys = sort.source, sort.levels, sort.keys
        first = sa.func.coalesce(host.user_column("first_name"), "")
        last = sa.func.coalesce(host.user_column("last_name"), "")
        email = host.user_column("email")
        parts = [sa.cast(levels[key], sa.String) if key == "profile" else levels[key] for key in self.sort]
        group_key: Any = parts[0] if parts else sa.null()
        for part in parts[1:]:
            group_key = group_key.concat(sa.literal(LEVEL_SEPARATOR, sa.String)).concat(part)
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

    def _levels_of(self, group_key: str | None) -> dict[str, str]:
        """Sort level -> its part of a :meth:`numbered` group key."""
        if group_key is None or not self.sort:
            return {}
        return dict(zip(self.sort, group_key.split(LEVEL_SEPARATOR, len(self.sort) - 1)))

    def class_key_of(self, group_key: str | None) -> str | None:
        """The class key (:meth:`class_key`) inside a :meth:`numbered` group key;
        None without a class, or when not sorted by class."""
        part = self._levels_of(group_key).get("class", "")
        return part[1:] if part[:1] == "0" else None

    def first_level_of(self, group_key: str | None) -> str | None:
        """The part of a :meth:`numbered` group key naming its group of the first
        sort key: its bundle (a class, when sorted by class first)."""
        return self._levels_of(group_key).get(self.sort[0]) if self.sort else None

    def sheets_statement(self, host: HostModels) -> sa.Select[Any]:
        """How many rows :meth:`numbered` gives with ``every_class``: an account
        once per class it counts in, once without a class."""
        pairs = self.class_pairs(host)
        source = sa.orm.join(host.user_model, pairs, pairs.c.owner == host.user_id, isouter=True)
        return sa.select(sa.func.count()).select_from(source).where(*self.conditions(host))

    def counters_statement(self, host: HostModels) -> sa.Select[Any]:
        """Selected accounts, those without email, not activated, federated, with
        an expired code, blocked, with a code to give: one query."""

        def how_many(condition: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        return sa.select(
            sa.func.count(),
            how_many(sa.not_(has_email(host))),
            how_many(sa.not_(host.user_column("activated"))),
            how_many(is_federated(host)),
            how_many(code_expired(host)),
            how_many(is_blocked(host)),
            how_many(sa.and_(has_code(host), sa.not_(code_expired(host)))),
        ).where(*self.conditions(host))


@dataclass(frozen=True)
class _Sort:
    """How :meth:`Selection._query` sorts the selected accounts."""

    #: The users joined to what the keys need.
    source: Any
    #: The ORDER BY keys, each ascending and never NULL (keyset pages compare
    #: them as a tuple): a rank for the class and the school levels.
    keys: list[Any]
    #: Each sort level's text (the group key's parts; the class's is NULL
    #: without ``texts``).
    levels: dict[str, Any]
    #: The account's class key (a text; NULL unless sorted by each account's class).
    class_key: Any
    #: (``rank``, ``k``): the class key of each rank, when sorted by class.
    class_ranks: Any
    #: Conditions of the window (:meth:`Selection.page_statement`).
    conditions: list[Any]


#: The rank of "no class" ("no school"): after every class (school).
NO_RANK = 2**31 - 1
#: A page sorted by class (school) first is read by windows of classes (schools)
#: from this many classes in the selection (schools in the perimeter) on; below,
#: in one go (:meth:`Selection.first_ranks`).
MIN_WINDOW_CLASSES = 64
MIN_WINDOW_SCHOOLS = 3


@dataclass(frozen=True)
class Counters:
    selected: int
    without_email: int
    not_activated: int
    #: Accounts signing in with their academic identity (0 when not mapped).
    federated: int = 0
    #: Activation codes whose validity has ended: never printed nor sent.
    expired: int = 0
    #: Blocked accounts in the selection (``blocked`` = ``only`` or ``all``).
    blocked: int = 0
    #: Activation codes given: not activated, not federated, not expired.
    codes: int = 0
    #: Blocked accounts the default ``blocked=exclude`` left out.
    blocked_left_out: int = 0


def count(selection: Selection) -> Counters:
    found = state()
    row = found.session.execute(selection.counters_statement(found.host)).one()
    left_out = 0
    if found.host.maps("blocked") and selection.get("blocked") == "exclude":
        blocked = selection.with_values(blocked="only")
        stmt = sa.select(sa.func.count()).select_from(found.host.user_model).where(*blocked.conditions(found.host))
        left_out = int(found.session.execute(stmt).scalar_one())
    return Counters(*(int(value) for value in row), blocked_left_out=left_out)


def count_sheets(selection: Selection) -> int:
    """The sheets of "a bundle for every class": each account once per class it
    counts in (:meth:`Selection.class_pairs`), once without a class."""
    found = state()
    return int(found.session.execute(selection.sheets_statement(found.host)).scalar_one())


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
