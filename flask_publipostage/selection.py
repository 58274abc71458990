"""One selection of accounts, parsed once and used by every output.

The preview, the CSV, the PDF and the mail all run :meth:`Selection.statement`:
what the admin checked on screen is exactly what gets printed or sent. Every
filter and sort runs in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import aliased
from werkzeug.datastructures import MultiDict

from .access import Scope
from .config import config_value
from .host import HostModels
from .i18n import gettext as _
from .profiles import PROFILE_ORDER, Profile
from .sql import french_fold

ACTIVATION_CHOICES = ("all", "inactive", "active")
EMAIL_CHOICES = ("all", "with", "without")
LOCAL_ADMIN_CHOICES = ("all", "only", "exclude")
SORT_CHOICES = ("none", "profile", "class")

#: Query-string parameters of a selection; ``page`` belongs to the preview.
MULTI_PARAMS = ("profile", "class")
SINGLE_PARAMS = (
    "activation",
    "email",
    "local_admin",
    "created_before",
    "created_since",
    "sort",
    "then",
    "campaign",
)
MAX_CLASSES = 500


class SelectionError(Exception):
    """Bad filters: a French message naming the field, and the HTTP status."""

    def __init__(self, message: str, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Selection:
    """Validated filters and sort. Build it with :meth:`from_args`."""

    profiles: tuple[Profile, ...] = ()
    class_ids: tuple[Any, ...] = ()
    activation: str = "all"
    email: str = "all"
    local_admins: str = "all"
    created_before: date | None = None
    created_since: date | None = None
    sort: tuple[str, ...] = ()
    #: Accounts a mail campaign did not reach (failed or without email).
    campaign: int | None = None
    scope: Scope | None = field(default=None, compare=False, repr=False)

    # -- parsing ---------------------------------------------------------------

    @classmethod
    def from_args(
        cls,
        args: MultiDict[str, str] | Mapping[str, Any],
        scope: Scope,
        *,
        extra_params: Iterable[str] = ("page",),
    ) -> "Selection":
        """Parse and validate a query string; raise :class:`SelectionError`."""
        if not isinstance(args, MultiDict):
            args = MultiDict(args)
        known = {*MULTI_PARAMS, *SINGLE_PARAMS, *extra_params}
        for key in args.keys():
            if key not in known:
                raise SelectionError(_("Unknown parameter “%(name)s”.", name=key[:40]))
        for key in SINGLE_PARAMS:
            if len(args.getlist(key)) > 1:
                raise SelectionError(
                    _("The field “%(name)s” is given several times.", name=_field_label(key)),
                    field=key,
                )

        profiles = []
        for value in args.getlist("profile"):
            if not value:
                continue
            try:
                profile = Profile(value)
            except ValueError:
                raise SelectionError(
                    _("Unknown profile “%(value)s”.", value=value[:40]), field="profile"
                ) from None
            if profile not in profiles:
                profiles.append(profile)

        raw_classes = [v for v in args.getlist("class") if v]
        if len(raw_classes) > MAX_CLASSES:
            raise SelectionError(
                _("Too many classes: choose at most %(max)d.", max=MAX_CLASSES), field="class"
            )
        class_ids = tuple(dict.fromkeys(_parse_class_id(v) for v in raw_classes))

        sort_first = _choice(args, "sort", SORT_CHOICES, "none")
        sort_then = _choice(args, "then", SORT_CHOICES, "none")
        if sort_first == "none" and sort_then != "none":
            sort_first, sort_then = sort_then, "none"
        if sort_then != "none" and sort_then == sort_first:
            raise SelectionError(
                _("“Then by” must differ from “Sort by”."), field="then"
            )
        sort = tuple(k for k in (sort_first, sort_then) if k != "none")

        created_before = _date(args, "created_before")
        created_since = _date(args, "created_since")
        campaign = None
        if args.get("campaign"):
            try:
                campaign = int(args["campaign"])
            except ValueError:
                raise SelectionError(_("Invalid campaign."), field="campaign") from None

        selection = cls(
            profiles=tuple(p for p in PROFILE_ORDER if p in profiles),
            class_ids=class_ids,
            activation=_choice(args, "activation", ACTIVATION_CHOICES, "all"),
            email=_choice(args, "email", EMAIL_CHOICES, "all"),
            local_admins=_choice(args, "local_admin", LOCAL_ADMIN_CHOICES, "all"),
            created_before=created_before,
            created_since=created_since,
            sort=sort,
            campaign=campaign,
            scope=scope,
        )
        selection.check_scope()
        return selection

    def check_scope(self) -> None:
        """403 for a class outside the admin's scope (or one that does not exist)."""
        if not self.class_ids:
            return
        state = current_app.extensions["publipostage"]
        host: HostModels = state.host
        stmt = sa.select(sa.func.count()).select_from(host.class_model).where(
            host.class_id.in_(self.class_ids)
        )
        if self.scope is not None and self.scope.classes is not None:
            stmt = stmt.where(self.scope.classes)
        found = state.db.session.execute(stmt).scalar_one()
        if found != len(self.class_ids):
            raise SelectionError(
                _("One of the chosen classes is outside your scope."), status=403, field="class"
            )

    def with_scope(self, scope: Scope) -> "Selection":
        return replace(self, scope=scope)

    # -- back to a query string ---------------------------------------------------

    def to_args(self) -> MultiDict[str, str]:
        """The query string that gives this selection back (links, jobs, audit)."""
        items: list[tuple[str, str]] = [("profile", p.value) for p in self.profiles]
        items += [("class", str(c)) for c in self.class_ids]
        for key, value, default in (
            ("activation", self.activation, "all"),
            ("email", self.email, "all"),
            ("local_admin", self.local_admins, "all"),
        ):
            if value != default:
                items.append((key, value))
        if self.created_before:
            items.append(("created_before", self.created_before.isoformat()))
        if self.created_since:
            items.append(("created_since", self.created_since.isoformat()))
        if self.sort:
            items.append(("sort", self.sort[0]))
        if len(self.sort) > 1:
            items.append(("then", self.sort[1]))
        if self.campaign is not None:
            items.append(("campaign", str(self.campaign)))
        return MultiDict(items)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-friendly form, stored with jobs and audit rows."""
        return {k: self.to_args().getlist(k) for k in self.to_args().keys()}

    @property
    def group_by(self) -> str | None:
        """The key starting a new sheet in the PDF: ``"class"``, ``"profile"`` or None."""
        return self.sort[0] if self.sort else None

    # -- SQL -----------------------------------------------------------------------

    def conditions(self, host: HostModels) -> list[Any]:
        user = host.user_model
        conds: list[Any] = []
        if self.scope is not None and self.scope.users is not None:
            conds.append(self.scope.users)
        if self.profiles:
            values = [v for p in self.profiles for v in host.host_profile_values(p)]
            conds.append(host.profile_column().in_(values))
        if self.class_ids:
            conds.append(self._in_classes(host))
        if self.activation != "all":
            activated = host.user_column("activated")
            conds.append(activated if self.activation == "active" else sa.not_(activated))
        if self.email != "all":
            email = host.user_column("email")
            has_email = sa.and_(email.is_not(None), email != "")
            conds.append(has_email if self.email == "with" else sa.not_(has_email))
        if self.local_admins != "all":
            flag = host.user_column("local_admin")
            is_admin = sa.func.coalesce(flag, sa.false()) == sa.true()
            conds.append(is_admin if self.local_admins == "only" else sa.not_(is_admin))
        created = host.user_column("created_at")
        if self.created_since:
            conds.append(created >= self._day_start(self.created_since, created))
        if self.created_before:
            conds.append(created < self._day_start(self.created_before + timedelta(days=1), created))
        if self.campaign is not None:
            from .mail.models import unreached_user_ids

            conds.append(sa.cast(host.user_id, sa.String).in_(unreached_user_ids(self.campaign)))
        return conds

    def _in_classes(self, host: HostModels) -> Any:
        classes = host.relationship("classes")
        direct = classes.any(host.class_id.in_(self.class_ids))
        if not host.has_children:
            return direct
        child = aliased(host.user_model)
        via_child = host.relationship("children").of_type(child).any(
            host.relationship("classes", child).any(host.class_id.in_(self.class_ids))
        )
        return sa.or_(direct, via_child)

    def _day_start(self, day: date, column: Any) -> datetime:
        """Midnight of ``day`` in the school's time zone, as the column stores it."""
        zone = ZoneInfo(config_value("TIMEZONE"))
        local = datetime.combine(day, time.min, tzinfo=zone)
        if getattr(column.type, "timezone", False):
            return local
        return local.astimezone(timezone.utc).replace(tzinfo=None)

    def sort_class_column(self, host: HostModels) -> Any:
        """The account's class for sorting and grouping: its first class in French
        order, or for a parent the first class of their children; limited to the
        chosen classes and to the scope."""
        cls = aliased(host.class_model)
        name = host.class_name_column(cls)

        own_owner = aliased(host.user_model)
        own = (
            sa.select(sa.func.min(name))
            .select_from(own_owner)
            .join(host.relationship("classes", own_owner).of_type(cls))
            .where(host.user_column_pk(own_owner) == host.user_id)
        )
        own = self._restrict_classes(own, host, cls)
        key = own.scalar_subquery()
        if host.has_children:
            parent = aliased(host.user_model)
            child = aliased(host.user_model)
            via = (
                sa.select(sa.func.min(name))
                .select_from(parent)
                .join(host.relationship("children", parent).of_type(child))
                .join(host.relationship("classes", child).of_type(cls))
                .where(host.user_column_pk(parent) == host.user_id)
            )
            via = self._restrict_classes(via, host, cls)
            key = sa.func.coalesce(key, via.scalar_subquery())
        return key

    def _restrict_classes(self, stmt: Any, host: HostModels, cls: Any) -> Any:
        if self.class_ids:
            stmt = stmt.where(host.class_id_of(cls).in_(self.class_ids))
        if self.scope is not None and self.scope.classes is not None:
            stmt = stmt.where(sa.inspect(cls)._adapt_element(self.scope.classes))
        return stmt

    def profile_rank(self, host: HostModels) -> Any:
        profile = host.profile_column()
        whens = [
            (profile.in_(host.host_profile_values(p)), index)
            for index, p in enumerate(PROFILE_ORDER)
        ]
        return sa.case(*whens, else_=len(PROFILE_ORDER))

    def order_by(self, host: HostModels, sort_class: Any) -> list[Any]:
        keys: list[Any] = []
        for key in self.sort:
            if key == "class":
                keys += [sa.case((sort_class.is_(None), 1), else_=0), french_fold(sort_class)]
            else:
                keys.append(self.profile_rank(host))
        keys += [
            french_fold(host.user_column("last_name")),
            french_fold(host.user_column("first_name")),
            host.user_id,
        ]
        return keys

    def statement(self, host: HostModels) -> sa.Select[Any]:
        """The selected accounts, one row each, in print order.

        Columns: ``id`` and each scalar logical field, ``sort_class``, and
        ``address_<n>`` when a postal address is mapped.
        """
        sort_class = self.sort_class_column(host)
        columns = [host.user_id.label("id")]
        for name in (
            "login",
            "first_name",
            "last_name",
            "profile",
            "email",
            "activation_code",
            "activated",
            "created_at",
            "local_admin",
        ):
            columns.append(host.user_column(name).label(name))
        columns.append(sort_class.label("sort_class"))
        for index, column in enumerate(host.postal_address_columns()):
            columns.append(column.label(f"address_{index}"))
        return (
            sa.select(*columns)
            .where(*self.conditions(host))
            .order_by(*self.order_by(host, sort_class))
        )

    def counters_statement(self, host: HostModels) -> sa.Select[Any]:
        """Selected accounts, those without email, those not activated: one query."""
        email = host.user_column("email")
        no_email = sa.or_(email.is_(None), email == "")
        return sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((no_email, 1), else_=0)), 0),
            sa.func.coalesce(
                sa.func.sum(sa.case((sa.not_(host.user_column("activated")), 1), else_=0)), 0
            ),
        ).where(*self.conditions(host))


@dataclass(frozen=True)
class Counters:
    selected: int
    without_email: int
    not_activated: int


def count(selection: Selection) -> Counters:
    state = current_app.extensions["publipostage"]
    row = state.db.session.execute(selection.counters_statement(state.host)).one()
    return Counters(int(row[0]), int(row[1]), int(row[2]))


def _choice(args: MultiDict[str, str], key: str, choices: tuple[str, ...], default: str) -> str:
    value = args.get(key) or default
    if value not in choices:
        raise SelectionError(
            _(
                "Invalid value “%(value)s” for the field “%(name)s”.",
                value=value[:40],
                name=_field_label(key),
            ),
            field=key,
        )
    return value


def _date(args: MultiDict[str, str], key: str) -> date | None:
    value = args.get(key)
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SelectionError(
            _(
                "Invalid date “%(value)s” for the field “%(name)s” (expected YYYY-MM-DD).",
                value=value[:40],
                name=_field_label(key),
            ),
            field=key,
        ) from None


def _parse_class_id(value: str) -> Any:
    state = current_app.extensions["publipostage"]
    python_type = state.host.class_id.type.python_type
    try:
        parsed = python_type(value)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or (python_type is int and not value.strip().lstrip("-").isdigit()):
        raise SelectionError(
            _("Invalid class “%(value)s”.", value=value[:40]), field="class"
        )
    return parsed


def _field_label(key: str) -> str:
    labels = {
        "profile": _("Profiles"),
        "class": _("Classes"),
        "activation": _("Activation"),
        "email": _("Email"),
        "local_admin": _("Local administrators"),
        "created_before": _("Created before"),
        "created_since": _("Created since"),
        "sort": _("Sort by"),
        "then": _("Then by"),
        "campaign": _("Campaign"),
        "page": _("Page"),
    }
    return labels.get(key, key)
