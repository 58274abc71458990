"""ENT Lumière: a small French school ENT admin console mounting flask-publipostage.

It owns its directory (schools, accounts, classes), its login and its layout; the
extension adds the page "Publipostage des comptes" under "Imports/Exports" through
its public API only.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_babel import Babel
from flask_mail import Mail
from flask_wtf import CSRFProtect

from flask_publipostage import Publipostage
from flask_publipostage.state import state as publipostage_state

from .access import cli_scope, current_admin_can, current_admin_scope
from .models import Classe, Etablissement, Utilisateur, db
from .renouvellement import emettre_codes

__all__ = [
    "create_app",
    "current_admin_can",
    "current_admin_scope",
    "default_instance_path",
    "env_port",
    "publipostage",
]

publipostage = Publipostage()
babel = Babel()
csrf = CSRFProtect()
mail = Mail()

#: How the console's columns map onto the extension's logical fields.
PUBLIPOSTAGE_FIELDS: dict[str, Any] = {
    "login": "login",
    "first_name": "prenom",
    "last_name": "nom",
    "profile": "profil",
    "email": "courriel",
    "activation_code": "code_activation",
    "created_at": "date_creation",
    "local_admin": "is_adml",
    "classes": "classes",
    "children": "enfants",
    "class_name": "nom",
    "postal_address": ["adresse_ligne1", "adresse_cp_ville"],
    # The school dimension: a territory's super admin tells the schools apart.
    "school": "etablissement",
    "class_school": "etablissement",
    "school_name": "nom",
    # The account states: ÉduConnect accounts, blocked accounts, codes that expire.
    "federated": "federe",
    "blocked": "bloque",
    "code_valid_until": "code_activation_expire_le",
}


def default_instance_path() -> str:
    """``$ENT_CONSOLE_INSTANCE_PATH``, else ``instance/`` at the root of the checkout."""
    configured = os.environ.get("ENT_CONSOLE_INSTANCE_PATH")
    if configured:
        return os.path.abspath(configured)
    return str(Path(__file__).resolve().parents[2] / "instance")


def env_number(name: str, default: int, high: int, what: str = "un nombre") -> int:
    """The whole number from 1 to ``high`` in ``$name``, else ``default``.

    Raises ValueError, in French, for anything else (``what``: what it is).
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if value.isascii() and value.isdigit() and 1 <= int(value) <= high:
        return int(value)
    raise ValueError(f"{name} doit être {what} entre 1 et {high}, pas « {value} ».")


def env_port(name: str, default: int) -> int:
    """The TCP port in ``$name`` (``ENT_CONSOLE_PORT``, ``ENT_CONSOLE_SMTP_PORT``), else ``default``."""
    return env_number(name, default, 65535, "un numéro de port")


def _secret_key(instance_path: str) -> str:
    # Kept in the instance folder so that sessions survive a restart of the demo.
    configured = os.environ.get("ENT_CONSOLE_SECRET_KEY")
    if configured:
        return configured
    path = Path(instance_path) / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32), encoding="ascii")
        path.chmod(0o600)
    return path.read_text(encoding="ascii").strip()


def _sqlite_wal(connection: Any, _record: Any) -> None:
    """Readers never wait for a writer, nor a writer for readers (the file is shared
    by the server's processes); a commit is synced at checkpoints, not each time."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _WalKeeper:
    """Keeps the SQLite write-ahead log small under load. SQLite's own
    checkpoints copy the log into the database but start it over only when no
    reader uses it, which never happens while the server's threads read one
    after another: 20 admins exporting CSV files grew it to 1 GB in 40 s, and
    every read got slower with it. At most every :data:`EVERY` seconds, after a
    commit, the connection given back to the pool checkpoints and empties the
    log (``TRUNCATE`` waits for the readers of the moment, not for new ones)."""

    EVERY = 1.0

    def __init__(self) -> None:
        self.written = False
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def commit(self, _connection: Any) -> None:
        self.written = True

    def checkin(self, dbapi_connection: Any, _record: Any) -> None:
        with self.lock:
            if not self.written or time.monotonic() - self.last < self.EVERY:
                return
            self.written, self.last = False, time.monotonic()
        dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _locale() -> str:
    return "fr"


def create_app(
    config: Mapping[str, Any] | None = None, *, instance_path: str | os.PathLike[str] | None = None
) -> Flask:
    """Build the console. ``config`` overrides every default (tests pass an in-memory DB)."""
    app = Flask(__name__, instance_path=os.path.abspath(instance_path or default_instance_path()))
    os.makedirs(app.instance_path, exist_ok=True)
    database = os.path.join(app.instance_path, "ent_console.sqlite3")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("ENT_CONSOLE_DATABASE_URL") or f"sqlite:///{database}",
        BABEL_DEFAULT_LOCALE="fr",
        BABEL_DEFAULT_TIMEZONE="Europe/Paris",
        PUBLIPOSTAGE_ENT_NAME="ENT Lumière",
        PUBLIPOSTAGE_ENT_URL="https://ent.lumiere.example.fr",
        # The console's login page takes the renewal codes.
        PUBLIPOSTAGE_RENEWAL_URL="https://ent.lumiere.example.fr/login",
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=env_port("ENT_CONSOLE_SMTP_PORT", 8025),
        MAIL_DEFAULT_SENDER="ENT Lumière <ne-pas-repondre@ent.lumiere.example.fr>",
        ENT_CONSOLE_OUTBOX_DIR=os.environ.get("ENT_CONSOLE_OUTBOX_DIR")
        or os.path.join(app.instance_path, "outbox"),
        # The password is asked again before codes when it was typed longer ago.
        ENT_CONSOLE_STEP_UP_MINUTES=15,
    )
    if config:
        app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(app.instance_path)

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:"):
        # Several server processes share the file: a writer waits for another's lock
        # (up to 30 s) instead of failing at once.
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("timeout", 30)
    db.init_app(app)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///"):
        with app.app_context():
            sa.event.listen(db.engine, "connect", _sqlite_wal)
            keeper = _WalKeeper()
            sa.event.listen(db.engine, "commit", keeper.commit)
            sa.event.listen(db.engine.pool, "checkin", keeper.checkin)
    csrf.init_app(app)
    mail.init_app(app)
    babel.init_app(app, locale_selector=_locale)

    from . import auth, views

    auth.login_manager.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)

    with app.app_context():
        db.create_all()

    publipostage.init_app(
        app,
        db=db,
        user_model=Utilisateur,
        class_model=Classe,
        fields=PUBLIPOSTAGE_FIELDS,
        school_model=Etablissement,
        scope=current_admin_scope,
        permission=current_admin_can,
        renew=emettre_codes,
        step_up=auth.authentification_recente,
        step_up_url=auth.page_de_reauthentification,
    )
    # `flask publipostage pdf --as-actor adml.ecole --scope-key etab:1`: an admin's perimeter.
    publipostage_state(app).extras["cli_scope"] = cli_scope
    return app
