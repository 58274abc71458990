"""The extension object: ``Publipostage(app=None)``, ``init_app``, and the
blueprint and command group it mounts."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, url_for
from flask.sessions import SecureCookieSessionInterface
from jinja2 import TemplateNotFound

from . import errors, followup, saved, views
from .access import VIEW, Scope, has_capability
from .class_order import rank_text, school_order_text
from .commands import make_group
from .config import DEFAULTS, check_renamed, check_time_zones, config_value
from .host import HostModels
from .i18n import gettext, make_domain, ngettext, resource_dir
from .i18n import lazy_gettext as _l
from .mail import commands as mail_commands
from .mail import tls as mail_tls
from .mail import views as mail_views
from .models import metadata, when
from .pdf import commands as pdf_commands
from .pdf import views as pdf_views
from .runs import backends, core
from .sql import fold_for_sort
from .state import KEY, PublipostageState, state

logger = logging.getLogger(__name__)

#: The layout of the pages when the host's ``BASE_TEMPLATE`` does not exist.
FALLBACK_LAYOUT = "publipostage/standalone.html"


@dataclass(frozen=True)
class MenuEntry:
    """What the extension contributes to the host's menu."""

    category: Any
    label: Any
    endpoint: str
    capability: str

    @property
    def url(self) -> str:
        return url_for(self.endpoint)


MENU = (
    MenuEntry(
        category=_l("Imports/Exports"),
        label=_l("Account mail merge"),
        endpoint="publipostage.index",
        capability=VIEW,
    ),
)


def create_blueprint(name: str = "publipostage") -> Blueprint:
    """The extension's routes, templates and assets: the page, then each output."""
    bp = Blueprint(
        name,
        __name__,
        template_folder=resource_dir("templates"),
        static_folder=resource_dir("assets"),
        static_url_path="/assets",
    )
    for module in (errors, views, followup, saved, pdf_views, mail_views):
        module.register(bp)
    return bp


class Publipostage:
    """Adds the page "Publipostage des comptes" to a host console.

    ::

        publipostage = Publipostage()
        publipostage.init_app(
            app, db=db, user_model=User, class_model=SchoolClass,
            fields={...}, scope=admin_scope, permission=admin_can,
        )
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        if app is not None:
            self.init_app(app, **options)

    def init_app(
        self,
        app: Flask,
        *,
        db: Any,
        user_model: Any,
        class_model: Any,
        fields: Mapping[str, Any],
        scope: Callable[[], Scope | None],
        permission: Callable[[str], bool],
        profiles: Mapping[Any, str] | None = None,
        school_model: Any = None,
        renew: Callable[[list[Any]], Mapping[Any, Any]] | None = None,
        step_up: Callable[[], bool] | None = None,
        step_up_url: Callable[[str], str] | None = None,
    ) -> None:
        """Mount the page on ``app``.

        :param db: the host's Flask-SQLAlchemy object.
        :param user_model: the host's user model.
        :param class_model: the host's class model.
        :param fields: logical field -> attribute name or SQL expression (see
            :class:`~flask_publipostage.host.HostModels`).
        :param scope: ``() -> Scope | None``, the current admin's perimeter.
        :param permission: ``(capability) -> bool`` for ``view``, ``print``, ``send``.
        :param profiles: host profile value -> canonical profile, if they differ.
        :param school_model: the host's school model, with the fields ``school``,
            ``school_name`` and ``class_school``: the optional school dimension.
        :param renew: ``(ids) -> {id: (code, valid_until)}``, optional: creates a
            renewal code for each account (in the host's tables) and returns them;
            called while a PDF is rendered, without a request
            (:mod:`~flask_publipostage.renewal`). Admins need the capability ``renew``.
        :param step_up: ``() -> bool``, whether the admin's authentication is
            recent or strong enough to show, print or send codes (optional).
        :param step_up_url: ``(back) -> str``, the host's re-authentication page,
            returning to the path ``back``; given with ``step_up``.

        Reads every ``PUBLIPOSTAGE_*`` key of :data:`flask_publipostage.config.DEFAULTS`.
        """
        if KEY in app.extensions:
            raise RuntimeError("flask-publipostage is already registered on this app")
        if not callable(scope) or not callable(permission):
            raise TypeError("init_app needs a scope and a permission callable (fail closed)")
        if renew is not None and not callable(renew):
            raise TypeError("renew must be a callable (ids) -> {id: (code, valid_until)}")
        if (step_up is None) != (step_up_url is None) or not all(callable(f) for f in (step_up, step_up_url) if f):
            raise TypeError("init_app takes step_up and step_up_url together: two callables, or neither")
        check_renamed(app.config)
        for key, value in DEFAULTS.items():
            app.config.setdefault(f"PUBLIPOSTAGE_{key}", value)
        check_time_zones(app)
        check_secret_key(app)
        mail_tls.check_settings(app)

        found = PublipostageState(
            extension=self,
            db=db,
            host=HostModels(user_model, class_model, fields, profiles, school_model),
            scope_callback=scope,
            permission_callback=permission,
            step_up_callback=step_up,
            step_up_url_callback=step_up_url,
            domain=make_domain(tuple(config_value("TRANSLATION_DIRECTORIES", app))),
            runner=backends.make_runner(app, watch=core.resume_stale),
            renew_callback=renew,
        )
        app.extensions[KEY] = found
        app.register_blueprint(create_blueprint(), url_prefix=config_value("URL_PREFIX", app))
        app.cli.add_command(make_group((*mail_commands.COMMANDS, *pdf_commands.COMMANDS)))
        app.jinja_env.globals.update(
            _pp=gettext,
            _pp_n=ngettext,
            publipostage_menu=menu_entries,
            publipostage_base_template=base_template,
        )
        app.jinja_env.filters["pp_when"] = when
        with app.app_context():
            engine = db.engine
            if engine.dialect.name == "sqlite":
                _register_sqlite_functions(engine)
            if config_value("CREATE_TABLES", app):
                self.create_tables(app)
        found.runner.start(app)

    @staticmethod
    def create_tables(app: Flask) -> None:
        """Create the extension's tables on the host database (idempotent)."""
        with app.app_context():
            metadata.create_all(state(app).db.engine)


def check_secret_key(app: Flask) -> None:
    """Every button of the page is a form with a CSRF token (Flask-WTF), signed with
    the app's key and kept in its session: without ``SECRET_KEY`` the page would
    answer 500 to every admin. Said here, while the host is starting, rather than at
    the first request. A host that turned CSRF off (``WTF_CSRF_ENABLED = False``,
    tests) needs no key."""
    if not app.config.get("WTF_CSRF_ENABLED", True):
        return
    signing_key = app.config.get("WTF_CSRF_SECRET_KEY") or app.secret_key
    # A server-side session (Flask-Session...) keeps the token without the key.
    cookie_session = isinstance(app.session_interface, SecureCookieSessionInterface)
    if not signing_key or (cookie_session and not app.secret_key):
        raise RuntimeError(
            "flask-publipostage needs app.config['SECRET_KEY'] (its forms carry a CSRF token "
            "kept in the session): set it before calling init_app"
        )


def base_template() -> str:
    """The host layout named by ``BASE_TEMPLATE``; when the host has no such
    template, the extension's minimal layout (and a warning, once per app): a
    misnamed layout shows the page without the console around it, not a 500."""
    name = str(config_value("BASE_TEMPLATE"))
    try:
        current_app.jinja_env.get_template(name)
        return name
    except TemplateNotFound:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if app not in _warned_layout:
            _warned_layout.add(app)
            logger.warning(
                "PUBLIPOSTAGE_BASE_TEMPLATE %r does not exist: the pages use the minimal layout %s",
                name,
                FALLBACK_LAYOUT,
            )
        return FALLBACK_LAYOUT


#: Apps already warned that their ``BASE_TEMPLATE`` is missing.
_warned_layout: weakref.WeakSet[Flask] = weakref.WeakSet()


def menu_entries(category: Any = None) -> list[MenuEntry]:
    """Menu entries the current user may open, for the host's navigation template."""
    visible = []
    for entry in MENU:
        if category is not None and str(entry.category) != str(category):
            continue
        if state().scope_callback() is None:
            continue  # nobody logged in: the host shows its menu without us
        if has_capability(entry.capability):
            visible.append(entry)
    return visible


def _register_sqlite_functions(engine: sa.Engine) -> None:
    """SQLite lacks accent folding and regular expressions: give it the same
    sort keys Python uses (names, classes in school order, the host's ranks)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("publipostage_fold", 1, fold_for_sort, deterministic=True)
        dbapi_connection.create_function("publipostage_school_order", 1, school_order_text, deterministic=True)
        dbapi_connection.create_function("publipostage_rank", 1, rank_text, deterministic=True)

    sa.event.listen(engine, "connect", on_connect)
    # Connections opened before init_app (a StaticPool in-memory database) get it too.
    with engine.connect() as connection:
        on_connect(connection.connection.dbapi_connection, None)

