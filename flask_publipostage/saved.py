"""My selections ("Mes sélections"): an admin's own named selections, beside
the quick ones.

The three quick selections are the same for everyone; an admin who prints "the
parents of CP without an email, by class, 8 per page" every September saves it
once under a name. A saved selection keeps the selection's query string in its
canonical form (:meth:`~flask_publipostage.selection.Selection.to_dict`: only
the values other than the defaults) and the PDF template chosen with it.

It belongs to one admin (``Scope.actor``) in one perimeter (``Scope.key``):
another admin, or the same admin in another perimeter, neither sees it nor
renames nor deletes it (404, as for a thing that does not exist).

Using one is following a link to the page with that query string: the page reads
and checks it as it reads any address (:meth:`Selection.from_args`), so a class
that left the admin's perimeter since it was saved is refused when it is used
(403), by the one rule that refuses it in a typed address. Saving checks the
selection too, with the same rule, so nothing outside the perimeter is stored.

Saving, renaming or deleting one hands no credential out: the journal, which
records what left and what became of each run, does not list them.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, abort, redirect, request, url_for
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column
from wtforms import HiddenField, StringField

from .access import VIEW, Scope, current_scope, require
from .audit import PDF_TEMPLATES
from .host import parse_key
from .i18n import gettext as _
from .models import Base, utcnow
from .selection import FILTERS, SelectionError, describe
from .sql import fold_for_sort
from .state import state
from .views import PostForm, current_selection, form_error, names_of, template_name

#: Longest name, in characters (after spaces are tidied).
NAME_LENGTH = 80
#: Saved selections an admin keeps in one perimeter, at most.
MAX_SAVED = 50
#: Where the page shows them: the redirections after a change land there.
ANCHOR = "pp-saved-title"


class SavedSelection(Base):
    """A named selection and PDF template of one admin in one perimeter."""

    __tablename__ = "publipostage_saved_selection"
    __table_args__ = (sa.UniqueConstraint("actor", "scope_key", "name", name="uq_publipostage_saved_selection_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: ``Scope.actor`` of its owner.
    actor: Mapped[str] = mapped_column(sa.String(200))
    #: ``Scope.key`` of the perimeter it was saved in.
    scope_key: Mapped[str] = mapped_column(sa.String(200))
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH))
    #: The selection's canonical query string, as JSON (``Selection.to_dict``).
    selection: Mapped[str] = mapped_column(sa.Text)
    #: The PDF template chosen with it (``letter``, ``cards``); NULL: none.
    template: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def selection_args(self) -> dict[str, list[str]]:
        return dict(json.loads(self.selection))

    @property
    def url(self) -> str:
        """The page with this selection and its template: using it."""
        return page_url(self.selection_args, self.template)


def page_url(args: dict[str, list[str]], template: str | None = None) -> str:
    """The page with the selection ``args`` (and the PDF template preselected)."""
    return url_for("publipostage.index", **args, **({"template": template} if template else {}))


class SaveForm(PostForm):
    """Save ("Enregistrer"): the selection is in the URL, as for every button of the page."""

    name = StringField()
    #: The template chosen in step 3 (publipostage.js copies it there on submit).
    template = HiddenField()


class RenameForm(PostForm):
    name = StringField()


def mine(scope: Scope) -> sa.Select[Any]:
    """The saved selections of this admin in this perimeter."""
    return sa.select(SavedSelection).where(SavedSelection.actor == scope.actor, SavedSelection.scope_key == scope.key)


def find_mine(key: str, scope: Scope) -> SavedSelection:
    """The saved selection ``key`` (its id in the URL) when it is one of the
    admin's in this perimeter; 404 for any other, or an impossible id."""
    saved_id = parse_key(SavedSelection.__table__.c.id, key)
    if saved_id is None:
        abort(404)
    found = state().session.execute(mine(scope).where(SavedSelection.id == saved_id)).scalar_one_or_none()
    if found is None:
        abort(404)
    return found  # type: ignore[no-any-return]


def clean_name(raw: str | None, scope: Scope, saved_id: int | None = None) -> str:
    """The name as kept: spaces tidied; empty, too long, unprintable or already
    another of the admin's saved selections in this perimeter: a French 400."""
    name = " ".join((raw or "").split())
    if not name:
        raise SelectionError(_("Give the selection a name."), field="name")
    if len(name) > NAME_LENGTH:
        raise SelectionError(_("The name is too long: %(max)d characters at most.", max=NAME_LENGTH), field="name")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise SelectionError(_("The name holds characters that cannot be shown."), field="name")
    same = mine(scope).where(SavedSelection.name == name)
    if saved_id is not None:
        same = same.where(SavedSelection.id != saved_id)
    if state().session.execute(same.limit(1)).first() is not None:
        raise duplicate(name)
    return name


def duplicate(name: str) -> SelectionError:
    return SelectionError(_("You already have a selection named “%(name)s”.", name=name), field="name")


def commit(name: str) -> None:
    """Commit a new name; the same name saved at the same moment is a duplicate."""
    session = state().session
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise duplicate(name) from None


def back() -> Response:
    """303 to the page, with the selection the form's address carries (the
    page checks it), at the list of saved selections."""
    args = {key: request.args.getlist(key) for key in request.args if key in FILTERS}
    return redirect(f"{page_url(args)}#{ANCHOR}", code=303)


@require(VIEW)
def save_selection() -> Response:
    form = SaveForm()
    if not form.validate_on_submit():
        raise form_error(form)
    scope = current_scope()
    selection = current_selection(extra_params=())
    raw_template = form.template.data or ""
    template = template_name([raw_template]) if raw_template else None
    if raw_template and template is None:
        raise SelectionError(_("Invalid form."), field="template")
    name = clean_name(form.name.data, scope)
    session = state().session
    held = session.execute(sa.select(sa.func.count()).select_from(mine(scope).subquery())).scalar_one()
    if held >= MAX_SAVED:
        raise SelectionError(
            _("You already keep %(max)d saved selections: delete one first.", max=MAX_SAVED), field="name"
        )
    args = selection.to_dict()
    session.add(
        SavedSelection(
            actor=scope.actor,
            scope_key=scope.key,
            name=name,
            selection=json.dumps(args),  # in the order of the filters, as the page writes it
            template=template,
        )
    )
    commit(name)
    return redirect(f"{page_url(args, template)}#{ANCHOR}", code=303)


@require(VIEW)
def rename_selection(saved_id: str) -> Response:
    form = RenameForm()
    if not form.validate_on_submit():
        raise form_error(form)
    scope = current_scope()
    saved = find_mine(saved_id, scope)
    saved.name = clean_name(form.name.data, scope, saved.id)
    commit(saved.name)
    return back()


@require(VIEW)
def delete_selection(saved_id: str) -> Response:
    form = PostForm()
    if not form.validate_on_submit():
        raise form_error(form)
    session = state().session
    session.delete(find_mine(saved_id, current_scope()))
    session.commit()
    return back()


@dataclass(frozen=True)
class SavedView:
    """A saved selection as the page lists it."""

    id: int
    name: str
    #: The page with it: using it.
    url: str
    #: The selection in words, and the template ("Parents · CP · Sans courriel · Cartes, 8 par page").
    description: str


def saved_views(scope: Scope) -> list[SavedView]:
    """The admin's saved selections in this perimeter, in French name order."""
    found = state().session.execute(mine(scope)).scalars().all()
    names = names_of(found)
    views = []
    for saved in sorted(found, key=lambda s: (fold_for_sort(s.name), s.name)):
        words = describe(saved.selection_args, names)
        if saved.template in PDF_TEMPLATES:
            words = f"{words} · {PDF_TEMPLATES[saved.template]}"
        views.append(SavedView(saved.id, saved.name, saved.url, words))
    return views


def saved_context() -> dict[str, Any]:
    """Lazy helpers for ``_saved.html``: nothing is queried unless it is used."""
    return {
        "saved_selections": lambda: saved_views(current_scope()),
        # Its CSRF token, for the forms of the list.
        "saved_form": PostForm,
        "saved_name_length": NAME_LENGTH,
    }


def register(bp: Blueprint) -> None:
    bp.context_processor(saved_context)
    bp.add_url_rule("/selections", view_func=save_selection, methods=["POST"])
    bp.add_url_rule("/selections/<saved_id>/rename", view_func=rename_selection, methods=["POST"])
    bp.add_url_rule("/selections/<saved_id>/delete", view_func=delete_selection, methods=["POST"])
