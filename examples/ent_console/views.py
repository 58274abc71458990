"""The console's pages: the home page with its sections, and the demo outbox."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from werkzeug.exceptions import HTTPException

from . import outbox
from .access import current_admin_scope, est_admin, est_enseignant_de_classe, outbox_schools
from .models import Classe, Etablissement, Utilisateur, db

bp = Blueprint("console", __name__)

F = TypeVar("F", bound=Callable[..., Any])

PROFILS_AFFICHES = (
    ("Teacher", "Enseignants"),
    ("Student", "Élèves"),
    ("Relative", "Parents"),
    ("Personnel", "Personnels"),
    ("Guest", "Invités"),
)


def admin_required(view: F) -> F:
    @functools.wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not est_admin():
            abort(403)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def outbox_dir() -> str:
    return str(current_app.config["ENT_CONSOLE_OUTBOX_DIR"])


@bp.route("/")
@login_required
def home() -> ResponseReturnValue:
    scope = current_admin_scope()
    comptes: dict[str, int] = {}
    classes: list[Classe] = []
    nb_classes = 0
    etablissements: list[Etablissement] = []
    if scope is not None and est_admin():
        users = sa.select(Utilisateur.profil, sa.func.count()).group_by(Utilisateur.profil)
        classes_query = sa.select(Classe).order_by(Classe.etablissement_id, Classe.nom)
        if scope.users is not None:
            users = users.where(scope.users)
        if scope.classes is not None:
            classes_query = classes_query.where(scope.classes)
        comptes = {profil: nombre for profil, nombre in db.session.execute(users)}
        nb_classes = db.session.scalar(sa.select(sa.func.count()).select_from(classes_query.subquery())) or 0
        classes = list(db.session.scalars(classes_query.limit(12)))
        if scope.is_global:
            etablissements = list(db.session.scalars(sa.select(Etablissement).order_by(Etablissement.nom)))
    return render_template(
        "home.html",
        scope=scope,
        admin=est_admin(),
        comptes=comptes,
        profils=PROFILS_AFFICHES,
        classes=classes,
        nb_classes=nb_classes,
        etablissements=etablissements,
        nb_messages=outbox.count_messages(outbox_dir(), outbox_schools()) if est_admin() else 0,
        # A class teacher prints for the classes they teach (see access.py).
        classes_enseignees=[c.nom for c in current_user.classes] if est_enseignant_de_classe(current_user) else [],
    )


# The outbox holds activation codes: a local admin reads, and empties, only the messages
# stored for their school (see outbox.py); a message of another school is "not found".


def _school_names() -> dict[str, str]:
    return dict(db.session.execute(sa.select(Etablissement.uai, Etablissement.nom)).tuples().all())


@bp.route("/outbox")
@admin_required
def outbox_index() -> ResponseReturnValue:
    limite = 200
    schools = outbox_schools()
    return render_template(
        "outbox.html",
        messages=outbox.list_messages(outbox_dir(), limit=limite, schools=schools),
        total=outbox.count_messages(outbox_dir(), schools),
        limite=limite,
        tous=schools is None,
        etablissements=_school_names() if schools is None else {},
        smtp=f"{current_app.config['MAIL_SERVER']}:{current_app.config['MAIL_PORT']}",
    )


@bp.route("/outbox/<name>")
@admin_required
def outbox_message(name: str) -> ResponseReturnValue:
    message = outbox.read_message(outbox_dir(), name, outbox_schools())
    if message is None:
        abort(404)
    return render_template("outbox_message.html", message=message, etablissements=_school_names())


@bp.route("/outbox/vider", methods=["POST"])
@admin_required
def outbox_clear() -> ResponseReturnValue:
    removed = outbox.clear_messages(outbox_dir(), outbox_schools())
    flash(f"{removed} message(s) supprimé(s) de la boîte d'envoi.", "info")
    return redirect(url_for("console.outbox_index"))


_ERRORS = {
    403: ("Accès refusé", "Cette page est réservée aux administrateurs."),
    404: ("Page introuvable", "Cette page n'existe pas, ou plus, ou ne vous est pas accessible."),
}


@bp.errorhandler(403)
@bp.errorhandler(404)
def console_error(error: HTTPException) -> ResponseReturnValue:
    code = error.code or 500
    titre, texte = _ERRORS[code]
    return render_template("error.html", titre=titre, texte=texte), code


@bp.app_context_processor
def console_context() -> dict[str, Any]:
    return {"est_admin": est_admin()}
