"""Login and logout of the console (Flask-Login, a CSRF-protected form), and the
password asked again before activation codes are shown, printed or sent.

The login form takes a password, or a renewal code printed by the extension
(``renouvellement.py``): it works once, then the user chooses a new password.

The time of the last password typed is kept in the session (``auth_at``): the
extension's ``step_up`` check (:func:`authentification_recente`) asks whether it
is more recent than ``ENT_CONSOLE_STEP_UP_MINUTES`` (15 by default); when it is
not, the extension sends the admin to ``/reauth`` (:func:`page_de_reauthentification`),
which brings them back to the page they were on, with the same selection.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import generate_password_hash
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length

from . import renouvellement
from .models import Utilisateur, db

login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Veuillez vous connecter pour accéder à cette page."
login_manager.login_message_category = "info"

bp = Blueprint("auth", __name__)

#: Printed on the login page and by ``serve``: (login, password, role).
DEMO_ACCOUNTS: tuple[tuple[str, str, str], ...] = (
    ("admin.ent", "demo", "Super administrateur de l'ENT (tous les établissements)"),
    ("adml.ecole", "demo", "Administratrice locale de l'École élémentaire Jules Ferry"),
    ("adml.college", "demo", "Administration locale du Collège Victor Hugo"),
    ("prof.ecole", "demo", "Enseignante de CE2 à l'école : imprime les fiches de sa classe"),
)


@login_manager.user_loader
def load_user(user_id: str) -> Utilisateur | None:
    try:
        return db.session.get(Utilisateur, int(user_id))
    except ValueError:
        return None


def now() -> float:
    """The clock of the step-up (a function, so that a test can move it on)."""
    return time.time()


def authentification_recente() -> bool:
    """The extension's ``step_up``: the password was typed less than
    ``ENT_CONSOLE_STEP_UP_MINUTES`` ago in this session."""
    minutes = float(current_app.config["ENT_CONSOLE_STEP_UP_MINUTES"])
    return now() - float(session.get("auth_at", 0)) < minutes * 60


def page_de_reauthentification(back: str) -> str:
    """The extension's ``step_up_url``: the password again, then back to ``back``."""
    return url_for("auth.reauthenticate", next=back)


class LoginForm(FlaskForm):
    identifiant = StringField("Identifiant", validators=[DataRequired()])
    mot_de_passe = PasswordField("Mot de passe ou code de renouvellement", validators=[DataRequired()])
    submit = SubmitField("Se connecter")


class NouveauMotDePasseForm(FlaskForm):
    mot_de_passe = PasswordField(
        "Nouveau mot de passe",
        validators=[DataRequired(), Length(min=8, message="Au moins 8 caractères.")],
    )
    confirmation = PasswordField(
        "Confirmez le mot de passe",
        validators=[DataRequired(), EqualTo("mot_de_passe", message="Les deux mots de passe diffèrent.")],
    )
    submit = SubmitField("Enregistrer le mot de passe")


#: Set in the session once a renewal code was accepted: the user must choose a password.
CHOISIR = "console_choisir_mot_de_passe"


def _safe_next(target: str | None) -> str:
    # Only a path of this site: never bounce to another host after login.
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("console.home")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for("console.home"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(
            sa.select(Utilisateur).where(Utilisateur.login == form.identifiant.data.strip())
        )
        if user is not None and user.verifier_mot_de_passe(form.mot_de_passe.data):
            login_user(user)
            session["auth_at"] = now()
            flash(f"Bienvenue, {user.nom_complet}.", "success")
            return redirect(_safe_next(request.args.get("next")))
        if user is not None and renouvellement.utiliser(user, form.mot_de_passe.data):
            login_user(user)
            session[CHOISIR] = True
            flash("Code de renouvellement accepté : choisissez votre nouveau mot de passe.", "success")
            return redirect(url_for("auth.nouveau_mot_de_passe"))
        flash("Identifiant ou mot de passe incorrect.", "error")
    return render_template("login.html", form=form, demo_accounts=DEMO_ACCOUNTS)


@bp.route("/mot-de-passe", methods=["GET", "POST"])
@login_required
def nouveau_mot_de_passe() -> ResponseReturnValue:
    """After a renewal code: the new password (it activates an account not yet activated)."""
    if not session.get(CHOISIR):
        return redirect(url_for("console.home"))
    form = NouveauMotDePasseForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()  # type: ignore[attr-defined]
        user.mot_de_passe_hash = generate_password_hash(form.mot_de_passe.data)
        user.code_activation = None
        db.session.commit()
        session.pop(CHOISIR, None)
        flash("Votre nouveau mot de passe est enregistré.", "success")
        return redirect(url_for("console.home"))
    return render_template("nouveau_mot_de_passe.html", form=form)
class ReauthForm(FlaskForm):
    mot_de_passe = PasswordField("Mot de passe", validators=[DataRequired()])
    submit = SubmitField("Confirmer")


@bp.route("/reauth", methods=["GET", "POST"])
@login_required
def reauthenticate() -> ResponseReturnValue:
    """The password again, for what hands out activation codes."""
    form = ReauthForm()
    if form.validate_on_submit():
        if current_user.verifier_mot_de_passe(form.mot_de_passe.data):
            session["auth_at"] = now()
            return redirect(_safe_next(request.args.get("next")))
        flash("Mot de passe incorrect.", "error")
    minutes = int(current_app.config["ENT_CONSOLE_STEP_UP_MINUTES"])
    return render_template("reauth.html", form=form, minutes=minutes)


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> ResponseReturnValue:
    logout_user()
    flash("Vous êtes déconnecté.", "info")
    return redirect(url_for("auth.login"))
