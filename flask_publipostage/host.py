"""The host's models, seen through a field mapping.

The extension never owns users: it reads the host's user and class models. The host
maps each *logical* field to an attribute name of its model or to a SQL expression;
nothing else in the package names a column.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import RelationshipProperty, aliased
from sqlalchemy.orm.attributes import QueryableAttribute
from sqlalchemy.sql.elements import BinaryExpression

from .class_order import host_rank, school_order, text_rank
from .profiles import Profile
from .sql import bytewise, name_key

#: The scalar fields every output reads, in the order of the selection's columns.
SCALAR_FIELDS = (
    "login",
    "first_name",
    "last_name",
    "profile",
    "email",
    "activation_code",
    "activated",
    "created_at",
    "local_admin",
)
#: The account's state beyond activation, each optional: ``federated`` (signs in
#: with an academic identity: no code), ``blocked`` (left out unless asked for),
#: ``code_valid_until`` (the activation code's last valid moment: a datetime, or a
#: date valid through that day).
STATE_FIELDS = ("federated", "blocked", "code_valid_until")
#: Logical fields of the user model: the scalar ones, the state ones, then
#: relationships and the address lines.
USER_FIELDS = (*SCALAR_FIELDS, *STATE_FIELDS, "classes", "children", "postal_address", "school")
#: Logical fields of the class model.
CLASS_FIELDS = ("class_name", "class_school", "class_order")
#: Logical field of the school model (``school_model`` of ``init_app``).
SCHOOL_FIELDS = ("school_name",)
#: The school dimension: all three or none of them (``class_school`` may be left
#: out: class names are then never qualified by their school).
SCHOOL_MAPPING = ("school", "school_name")
#: Fields a host may leave out (``activated`` defaults to ``activation_code IS NULL``;
#: without ``class_order``, classes follow the school levels of their names).
OPTIONAL_FIELDS = (
    "activated", *STATE_FIELDS, "children", "postal_address", "school", "class_school", "school_name", "class_order",
)
REQUIRED_USER_FIELDS = tuple(f for f in USER_FIELDS if f not in OPTIONAL_FIELDS)
REQUIRED_CLASS_FIELDS = tuple(f for f in CLASS_FIELDS if f not in OPTIONAL_FIELDS)


def parse_key(column: Any, raw: str) -> Any | None:
    """A primary-key value from the query string, or None when it cannot be one.

    Integers must fit the column's width: PostgreSQL refuses 3000000000 for an
    ``INTEGER`` with an error instead of finding nothing.
    """
    raw = raw.strip()
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if python_type is int:
        digits = raw[1:] if raw.startswith("-") else raw
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
            return None
        value = int(raw)
        bits = 16 if isinstance(column.type, sa.SmallInteger) else 64 if isinstance(column.type, sa.BigInteger) else 32
        return value if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1) else None
    if not raw or len(raw) > 64:
        return None
    try:
        return python_type(raw)
    except (TypeError, ValueError):
        return None


class MappingError(ValueError):
    """The host's field mapping does not match its models."""


@dataclass
class HostModels:
    """Adapter over the host's user and class models.

    :param user_model: the host's mapped user class.
    :param class_model: the host's mapped class ("classe") model.
    :param fields: logical field -> attribute name, or a SQL expression built on the
        user model (``User.activated_flag.is_(True)``). ``classes`` and ``children``
        name relationships (user -> classes, parent -> pupils). ``postal_address``
        may be a list of attribute names, printed one per line. The optional
        :data:`STATE_FIELDS` (``federated``, ``blocked``, ``code_valid_until``)
        each bring a filter, counters and their letters (:meth:`maps`).
        ``class_name`` and ``class_order`` (an integer or a text: the host's own
        order of its classes) are on the class model.
    :param profiles: host profile value -> canonical profile name, when the host
        stores other values ("ELEVE" -> "Student").
    :param school_model: the host's school ("établissement") model, for the
        optional school dimension: ``school`` (the account's school: a many-to-one
        relationship or a column holding the school's key), ``school_name`` (on
        the school model) and ``class_school`` (the class's school, same forms).
    """

    user_model: Any
    class_model: Any
    fields: Mapping[str, Any]
    profiles: Mapping[Any, str] | None = None
    school_model: Any = None
    _user_pk: Any = field(init=False, repr=False)
    _class_pk: Any = field(init=False, repr=False)
    _school_pk: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        unknown = set(self.fields) - set(USER_FIELDS) - set(CLASS_FIELDS) - set(SCHOOL_FIELDS)
        if unknown:
            raise MappingError(f"unknown logical fields: {sorted(unknown)}")
        missing = [f for f in (*REQUIRED_USER_FIELDS, *REQUIRED_CLASS_FIELDS) if f not in self.fields]
        if missing:
            raise MappingError(f"the field mapping lacks: {missing}")
        self._user_pk = self._single_pk(self.user_model)
        self._class_pk = self._single_pk(self.class_model)
        for name in ("classes", "children"):
            if name in self.fields and not isinstance(self.fields[name], str):
                raise MappingError(f"{name!r} must name a relationship of the user model")
        for name in self.fields:
            if name in SCALAR_FIELDS or name in STATE_FIELDS:
                self.user_column(name)  # fail now, not at the first request
        self.class_name_column()
        self.class_sort_key()
        self._check_schools()
        if self.profiles is not None:
            bad = {v for v in self.profiles.values() if v not in {p.value for p in Profile}}
            if bad:
                raise MappingError(f"profile mapping to unknown profiles: {sorted(bad)}")

    def _check_schools(self) -> None:
        given = [f for f in (*SCHOOL_MAPPING, "class_school") if f in self.fields]
        if not given and self.school_model is None:
            return
        if self.school_model is None:
            raise MappingError(f"the fields {given} need the school model (school_model=...)")
        missing = [f for f in SCHOOL_MAPPING if f not in self.fields]
        if missing:
            raise MappingError(f"the school dimension lacks: {missing}")
        self._school_pk = self._single_pk(self.school_model)
        self.school_of_user()
        self.school_name_column()
        if "class_school" in self.fields:
            self.school_of_class()

    @staticmethod
    def _single_pk(model: Any) -> Any:
        pk = sa.inspect(model).primary_key
        if len(pk) != 1:
            raise MappingError(f"{model.__name__} must have a single-column primary key")
        return getattr(model, sa.inspect(model).get_property_by_column(pk[0]).key)

    # -- columns -------------------------------------------------------------

    @property
    def user_id(self) -> Any:
        return self._user_pk

    @property
    def class_id(self) -> Any:
        return self._class_pk

    def user_column_pk(self, alias: Any) -> Any:
        """The primary key of an alias of the user model."""
        return getattr(alias, self._user_pk.key)

    def class_id_of(self, alias: Any) -> Any:
        """The primary key of an alias of the class model."""
        return getattr(alias, self._class_pk.key)

    def user_column(self, name: str, model: Any = None) -> Any:
        """The SQL expression of a scalar logical field, on ``model`` (an alias) or the model."""
        if name == "activated" and "activated" not in self.fields:
            return self.user_column("activation_code", model).is_(None)
        if name not in self.fields:
            raise MappingError(f"the field mapping lacks {name!r}")
        return self._on(self.user_model, self.fields[name], model, name)

    def class_name_column(self, model: Any = None) -> Any:
        return self._on(self.class_model, self.fields["class_name"], model, "class_name")

    def class_sort_key(self, model: Any = None) -> Any:
        """The sort key of a class (``model``: an alias of the class model), one
        text compared byte-wise: the one rule ordering classes, in the filter
        form, on a person's list of classes, in the class sort and the PDF's
        bundles.

        The host's ``class_order`` first when mapped (an integer, lower first, or
        a text compared byte-wise; classes without one after), then the school
        order of the name (:mod:`~flask_publipostage.class_order`), then the
        class's id: two classes of the same name (two "CE1" of a territory) never
        share a key, so never share a bundle.
        """
        model = model if model is not None else self.class_model
        key = school_order(self.class_name_column(model))
        if "class_order" in self.fields:
            order = self._on(self.class_model, self.fields["class_order"], model, "class_order")
            if isinstance(order.type, sa.Integer):
                key = host_rank(order).concat(key)
            elif isinstance(order.type, sa.String):
                key = text_rank(order).concat(key)
            else:
                raise MappingError("'class_order' must be an integer or a text (a column or an expression)")
        return bytewise(key.concat(sa.cast(self.class_id_of(model), sa.String)))

    # -- the school dimension (optional) --------------------------------------------

    @property
    def has_schools(self) -> bool:
        """The host mapped the account's school and the school's name."""
        return self._school_pk is not None

    @property
    def qualifies_classes(self) -> bool:
        """Class names can be qualified by their school (``class_school`` mapped)."""
        return self.has_schools and "class_school" in self.fields

    @property
    def school_id(self) -> Any:
        """The school model's primary key."""
        return self._school_pk

    def school_id_of(self, alias: Any) -> Any:
        """The primary key of an alias of the school model."""
        return getattr(alias, self._school_pk.key)

    def school_of_user(self, model: Any = None) -> Any:
        """The key of the account's school (``model``: an alias of the user model)."""
        return self._key_of("school", self.user_model, model)

    def school_of_class(self, model: Any = None) -> Any:
        """The key of the class's school (``model``: an alias of the class model)."""
        return self._key_of("class_school", self.class_model, model)

    def school_sort_key(self, model: Any = None) -> Any:
        """The sort key of a school (``model``: an alias of the school model): its
        name in French order, then its key, so two schools of the same name stay
        apart; one text compared byte-wise."""
        key = sa.cast(self.school_id_of(model) if model is not None else self._school_pk, sa.String)
        name = sa.func.coalesce(name_key(self.school_name_column(model)), bytewise(sa.literal("", sa.String)))
        return name.concat(bytewise(sa.literal("\x01", sa.String))).concat(bytewise(key))

    def school_name_column(self, model: Any = None) -> Any:
        """The school's display name (``model``: an alias of the school model)."""
        return self._on(self.school_model, self.fields["school_name"], model, "school_name")

    def _key_of(self, name: str, owner: Any, model: Any) -> Any:
        """A school key held by ``owner``: a column, an expression, or the foreign
        key of a many-to-one relationship to the school model."""
        value = self.fields[name]
        if isinstance(value, str):
            prop = sa.inspect(owner).attrs.get(value)
            if isinstance(prop, RelationshipProperty):
                if prop.uselist or prop.mapper.class_ is not self.school_model or len(prop.local_columns) != 1:
                    raise MappingError(f"{name!r} must be a many-to-one relationship to the school model")
                (column,) = prop.local_columns
                value = sa.inspect(owner).get_property_by_column(column).key
        return self._on(owner, value, model, name)

    @staticmethod
    def _on(owner: Any, value: Any, model: Any, name: str) -> Any:
        """``value`` (an attribute name or an expression on ``owner``) on ``model``,
        an alias of ``owner`` (``owner`` itself by default)."""
        model = model if model is not None else owner
        if isinstance(value, str):
            try:
                return getattr(model, value)
            except AttributeError:
                raise MappingError(f"{owner.__name__} has no attribute {value!r} ({name})") from None
        if model is not owner:
            # Built on the model itself (an expression, or a column given as one):
            # adapt it to the alias.
            element = value.__clause_element__() if hasattr(value, "__clause_element__") else value
            return sa.inspect(model)._adapt_element(element)
        return value

    def maps(self, name: str) -> bool:
        """The host mapped the optional logical field ``name`` (``"school"``: the
        whole school dimension). What depends on it (a filter, a column, a counter)
        exists only then."""
        if name == "school":
            return self.has_schools
        return name in self.fields

    def state_columns(self, model: Any = None) -> list[Any]:
        """The mapped :data:`STATE_FIELDS`, labelled by their logical names."""
        return [self.user_column(name, model).label(name) for name in STATE_FIELDS if name in self.fields]

    def relationship(self, name: str, model: Any = None) -> QueryableAttribute[Any] | None:
        if name not in self.fields:
            return None
        return getattr(model if model is not None else self.user_model, self.fields[name])

    @property
    def has_children(self) -> bool:
        return "children" in self.fields

    @property
    def has_postal_address(self) -> bool:
        return "postal_address" in self.fields

    def postal_address_columns(self) -> list[Any]:
        value = self.fields.get("postal_address")
        if value is None:
            return []
        items = value if isinstance(value, (list, tuple)) else [value]
        return [getattr(self.user_model, v) if isinstance(v, str) else v for v in items]

    # -- profiles ------------------------------------------------------------

    def canonical_profile(self, host_value: Any) -> Profile | None:
        if self.profiles is not None:
            name = self.profiles.get(host_value)
        else:
            name = host_value
        try:
            return Profile(name)
        except ValueError:
            return None

    def host_profile_values(self, profile: Profile) -> list[Any]:
        if self.profiles is None:
            return [profile.value]
        return [k for k, v in self.profiles.items() if v == profile.value]

    def profile_column(self) -> Any:
        return self.user_column("profile")

    def scalar_columns(self, model: Any = None) -> list[Any]:
        """The id and every scalar field, labelled by their logical names, the
        mapped state fields, then ``school_id`` (the account's school, when mapped)
        and ``address_<n>`` for each postal address line."""
        model = model if model is not None else self.user_model
        columns = [self.user_column_pk(model).label("id")]
        columns += [self.user_column(name, model).label(name) for name in SCALAR_FIELDS]
        columns += self.state_columns(model)
        if self.has_schools:
            columns.append(self.school_of_user(model).label("school_id"))
        if model is self.user_model:
            columns += [c.label(f"address_{i}") for i, c in enumerate(self.postal_address_columns())]
        return columns

    # -- relationships as rows -------------------------------------------------

    def pairs(self, name: str, target: Any, users: Any = None) -> "Pairs":
        """(user id, ``target``) rows of the relationship ``name`` ("classes" or
        "children"), ``target`` an alias of the class or user model.

        A plain many-to-many relationship (one link table, one column each way) is
        read from its link table alone, with no pass over the users table; any
        other goes through the relationship itself. ``users`` (a SQL condition on
        the user model) restricts the owners when the rows go through them.
        """
        link = self._plain_link(name)
        if link is not None:
            table, to_owner, to_target = link
            pk = self._class_pk if name == "classes" else self._user_pk
            clause = table.join(target, getattr(target, pk.key) == to_target)
            return Pairs(self, clause, to_owner, None)
        owner = aliased(self.user_model)
        clause = sa.orm.join(owner, target, getattr(owner, self.fields[name]).of_type(target))
        pairs = Pairs(self, clause, self.user_column_pk(owner), owner)
        return pairs.where_owner(users)

    def children_classes(self, child: Any, cls: Any, users: Any = None) -> "Pairs":
        """(parent id, ``cls``) rows: the classes of each parent's children (``child``
        an alias of the user model, restricted to ``users`` when given)."""
        family = self._plain_link("children")
        classes = self._plain_link("classes")
        if family is not None and classes is not None:
            table, to_parent, to_child = family
            link, to_member, to_class = classes
            clause = table.join(link, to_member == to_child).join(cls, self.class_id_of(cls) == to_class)
            if users is not None:
                clause = clause.join(child, self.user_column_pk(child) == to_child)
            pairs = Pairs(self, clause, to_parent, None)
        else:
            parent = aliased(self.user_model)
            clause = sa.orm.join(parent, child, getattr(parent, self.fields["children"]).of_type(child)).join(
                cls, getattr(child, self.fields["classes"]).of_type(cls)
            )
            pairs = Pairs(self, clause, self.user_column_pk(parent), parent).where_owner(users)
        return pairs.where(users, child)

    def _plain_link(self, name: str) -> tuple[Any, Any, Any] | None:
        """(link table, its column to the user, its column to the target) of a plain
        many-to-many relationship of the user model; None otherwise."""
        prop = sa.inspect(self.user_model).relationships.get(self.fields.get(name, ""))
        if prop is None or prop.secondary is None or not hasattr(prop.secondary, "c"):
            return None
        if len(prop.synchronize_pairs) != 1 or len(prop.secondary_synchronize_pairs) != 1:
            return None
        for condition in (prop.primaryjoin, prop.secondaryjoin):
            if not (isinstance(condition, BinaryExpression) and condition.operator is operator.eq):
                return None
        ((user_key, to_user),) = prop.synchronize_pairs
        ((target_key, to_target),) = prop.secondary_synchronize_pairs
        if user_key is not sa.inspect(self.user_model).primary_key[0]:
            return None
        target = self.class_model if name == "classes" else self.user_model
        if target_key is not sa.inspect(target).primary_key[0]:
            return None
        return prop.secondary, to_user, to_target


@dataclass(frozen=True)
class Pairs:
    """A FROM clause giving (owner id, target) rows; see :meth:`HostModels.pairs`."""

    host: HostModels
    clause: Any
    owner_id: Any
    #: The alias of the user model the owners are read from, or None (link table).
    owner: Any
    conditions: tuple[Any, ...] = ()

    def where(self, condition: Any, alias: Any) -> "Pairs":
        """Also require ``condition`` (built on a model) of ``alias``."""
        if condition is None:
            return self
        adapted = sa.inspect(alias)._adapt_element(condition)
        return Pairs(self.host, self.clause, self.owner_id, self.owner, (*self.conditions, adapted))

    def where_owner(self, users: Any) -> "Pairs":
        return self if self.owner is None else self.where(users, self.owner)

    def select(self, *columns: Any) -> sa.Select[Any]:
        """``owner`` (the owner's id) and ``columns``."""
        return sa.select(self.owner_id.label("owner"), *columns).select_from(self.clause).where(*self.conditions)
