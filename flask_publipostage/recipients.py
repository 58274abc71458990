"""Plain view-models of the selected accounts, built in batches.

Templates (page, CSV, letters, cards, emails) get these, never ORM objects. Each
batch costs three queries whatever its size: the accounts, their classes, their
children (with the children's classes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Sequence

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import aliased

from .config import config_value
from .host import HostModels
from .profiles import Profile
from .selection import Selection
from .sql import fold_for_sort


@dataclass(frozen=True, slots=True)
class Child:
    first_name: str
    last_name: str
    classes: tuple[str, ...]

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True, slots=True)
class Recipient:
    """One selected account, as every output sees it."""

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
    #: Class name when sorted by class, profile label when sorted by profile, else "".
    group: str
    postal_address: tuple[str, ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def has_email(self) -> bool:
        return bool(self.email)

    @property
    def profile_label(self) -> str:
        return self.profile.label if self.profile else ""

    @property
    def is_relative(self) -> bool:
        return self.profile is Profile.RELATIVE


def page(selection: Selection, number: int, size: int | None = None) -> list[Recipient]:
    """One page of the preview (1-based)."""
    state = current_app.extensions["publipostage"]
    size = size or config_value("PAGE_SIZE")
    stmt = selection.statement(state.host).limit(size).offset((number - 1) * size)
    rows = state.db.session.execute(stmt).all()
    return build(selection, rows)


def iter_batches(selection: Selection, batch_size: int | None = None) -> Iterator[list[Recipient]]:
    """Every selected account, in order, ``batch_size`` at a time, memory flat."""
    state = current_app.extensions["publipostage"]
    batch_size = batch_size or config_value("BATCH_SIZE")
    stmt = selection.statement(state.host).execution_options(yield_per=batch_size)
    result = state.db.session.execute(stmt)
    for rows in result.partitions(batch_size):
        yield build(selection, rows)


def iter_recipients(selection: Selection, batch_size: int | None = None) -> Iterator[Recipient]:
    for batch in iter_batches(selection, batch_size):
        yield from batch


def build(selection: Selection, rows: Sequence[Any]) -> list[Recipient]:
    """Turn statement rows into recipients, loading classes and children in bulk."""
    if not rows:
        return []
    state = current_app.extensions["publipostage"]
    host: HostModels = state.host
    session = state.db.session
    ids = [row.id for row in rows]
    classes = _classes_of(session, host, selection, ids)
    children = _children_of(session, host, selection, ids) if host.has_children else {}
    address_keys = [k for k in rows[0]._fields if k.startswith("address_")]
    recipients = []
    for row in rows:
        profile = host.canonical_profile(row.profile)
        group = ""
        if selection.group_by == "class":
            group = row.sort_class or ""
        elif selection.group_by == "profile":
            group = profile.plural_label if profile else ""
        recipients.append(
            Recipient(
                id=row.id,
                login=row.login or "",
                first_name=row.first_name or "",
                last_name=row.last_name or "",
                profile=profile,
                email=row.email or None,
                activation_code=None if row.activated else (row.activation_code or None),
                activated=bool(row.activated),
                created_at=row.created_at,
                local_admin=bool(row.local_admin),
                classes=classes.get(row.id, ()),
                children=children.get(row.id, ()),
                group=group,
                postal_address=tuple(
                    str(getattr(row, k)) for k in address_keys if getattr(row, k)
                ),
            )
        )
    return recipients


def _classes_of(session: Any, host: HostModels, selection: Selection, ids: list[Any]) -> dict[Any, tuple[str, ...]]:
    owner = aliased(host.user_model)
    cls = aliased(host.class_model)
    owner_id = host.user_column_pk(owner)
    stmt = (
        sa.select(owner_id, host.class_name_column(cls))
        .select_from(owner)
        .join(host.relationship("classes", owner).of_type(cls))
        .where(owner_id.in_(ids))
    )
    if selection.scope is not None and selection.scope.classes is not None:
        stmt = stmt.where(sa.inspect(cls)._adapt_element(selection.scope.classes))
    found: dict[Any, list[str]] = defaultdict(list)
    for user_id, name in session.execute(stmt):
        found[user_id].append(name)
    return {k: tuple(sorted(v, key=fold_for_sort)) for k, v in found.items()}


def _children_of(session: Any, host: HostModels, selection: Selection, ids: list[Any]) -> dict[Any, tuple[Child, ...]]:
    parent = aliased(host.user_model)
    child = aliased(host.user_model)
    parent_id = host.user_column_pk(parent)
    child_id = host.user_column_pk(child)
    stmt = (
        sa.select(
            parent_id,
            child_id,
            host.user_column("first_name", child),
            host.user_column("last_name", child),
        )
        .select_from(parent)
        .join(host.relationship("children", parent).of_type(child))
        .where(parent_id.in_(ids))
    )
    rows = session.execute(stmt).all()
    if not rows:
        return {}
    child_classes = _classes_of(session, host, selection, list({r[1] for r in rows}))
    found: dict[Any, list[Child]] = defaultdict(list)
    for pid, cid, first, last in rows:
        found[pid].append(Child(first or "", last or "", child_classes.get(cid, ())))
    return {
        k: tuple(sorted(v, key=lambda c: (fold_for_sort(c.last_name), fold_for_sort(c.first_name))))
        for k, v in found.items()
    }
