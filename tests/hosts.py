"""A test host whose model and column names differ from the example console's.

French table names, a boolean activation column, host profile codes ("ELEVE",
"PARENT"...) mapped to the canonical profiles: nothing the extension may assume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, redirect, render_template_string, request, session, url_for
from flask_babel import Babel
from flask_sqlalchemy import SQLAlchemy

from flask_publipostage import Publipostage, Scope

db = SQLAlchemy()

inscription = db.Table(
    "inscription",
    sa.Column("personne_uid", sa.ForeignKey("personne.uid"), primary_key=True),
    sa.Column("division_ref", sa.ForeignKey("division.ref"), primary_key=True),
)
filiation = db.Table(
    "filiation",
    sa.Column("responsable_uid", sa.ForeignKey("personne.uid"), primary_key=True),
    sa.Column("enfant_uid", sa.ForeignKey("personne.uid"), primary_key=True),
)


class Ecole(db.Model):  # type: ignore[name-defined]
    """The schools, mapped only by the tests of the school dimension (``schools=True``)."""

    __tablename__ = "ecole"
    code = sa.Column(sa.String(20), primary_key=True)
    appellation = sa.Column(sa.String(200), nullable=False)


class Division(db.Model):  # type: ignore[name-defined]
    __tablename__ = "division"
    ref = sa.Column(sa.Integer, primary_key=True)
    libelle = sa.Column(sa.String(120), nullable=False)
    ecole = sa.Column(sa.String(20), nullable=False)
    #: The host's own order of its classes, when it keeps one (``class_order``).
    rang = sa.Column(sa.Integer)


class Personne(db.Model):  # type: ignore[name-defined]
    __tablename__ = "personne"
    uid = sa.Column(sa.Integer, primary_key=True)
    identifiant = sa.Column(sa.String(80), unique=True, nullable=False)
    prenom_usuel = sa.Column(sa.String(200), nullable=False)
    nom_famille = sa.Column(sa.String(200), nullable=False)
    categorie = sa.Column(sa.String(10), nullable=False)
    adresse_mel = sa.Column(sa.String(200))
    jeton = sa.Column(sa.String(20))
    compte_ouvert = sa.Column(sa.Boolean, nullable=False, default=False)
    cree_le = sa.Column(sa.DateTime, nullable=False)
    referent = sa.Column(sa.Boolean, nullable=False, default=False)
    super_admin = sa.Column(sa.Boolean, nullable=False, default=False)
    ecole = sa.Column(sa.String(20))
    # The account states, mapped only by the tests of states (``states=True``).
    federe = sa.Column(sa.Boolean, nullable=False, default=False)
    bloque = sa.Column(sa.Boolean, nullable=False, default=False)
    jeton_expire_le = sa.Column(sa.DateTime)
    rue = sa.Column(sa.String(200))
    ville = sa.Column(sa.String(200))
    divisions = db.relationship(Division, secondary=inscription, lazy="select")
    enfants = db.relationship(
        "Personne",
        secondary=filiation,
        primaryjoin=uid == filiation.c.responsable_uid,
        secondaryjoin=uid == filiation.c.enfant_uid,
        lazy="select",
    )


class Renouvellement(db.Model):  # type: ignore[name-defined]
    """The host's own renewal codes (one per account): what ``renew_codes`` writes."""

    __tablename__ = "renouvellement"
    uid = sa.Column(sa.ForeignKey("personne.uid"), primary_key=True)
    code = sa.Column(sa.String(40), nullable=False)
    valable_jusqu_au = sa.Column(sa.DateTime, nullable=False)


#: Every call of ``renew_codes``: the ids it was given (tests read them).
RENEW_CALLS: list[list[Any]] = []
#: The validity the test host gives its renewal codes (naive UTC: 30/11/2026 in Paris).
RENEWAL_UNTIL = datetime(2026, 11, 30, 18, 0)


def renew_codes(ids: list[Any]) -> dict[Any, tuple[str, datetime]]:
    """The test host's ``renew`` callable: a new code for each account, written in
    its own table (an earlier one is replaced), and returned."""
    RENEW_CALLS.append(list(ids))
    issued = {}
    for uid in ids:
        found = db.session.get(Renouvellement, uid)
        serial = len(RENEW_CALLS)
        code = f"RENEW{uid}X{serial}"
        if found is None:
            db.session.add(Renouvellement(uid=uid, code=code, valable_jusqu_au=RENEWAL_UNTIL))
        else:
            found.code, found.valable_jusqu_au = code, RENEWAL_UNTIL
        issued[uid] = (code, RENEWAL_UNTIL)
    db.session.commit()
    return issued


PROFILE_CODES = {
    "PROF": "Teacher",
    "ELEVE": "Student",
    "PARENT": "Relative",
    "PERS": "Personnel",
    "INVITE": "Guest",
}

FIELDS = {
    "login": "identifiant",
    "first_name": "prenom_usuel",
    "last_name": "nom_famille",
    "profile": "categorie",
    "email": "adresse_mel",
    "activation_code": "jeton",
    "activated": Personne.compte_ouvert.is_(True),
    "created_at": "cree_le",
    "local_admin": "referent",
    "classes": "divisions",
    "children": "enfants",
    "class_name": "libelle",
    "postal_address": ["rue", "ville"],
}
#: The account states: see ``make_app(states=True)``.
STATE_FIELDS = {"federated": "federe", "blocked": "bloque", "code_valid_until": "jeton_expire_le"}
#: The school dimension, as plain key columns (no relationship): see ``make_app(schools=True)``.
SCHOOL_FIELDS = {"school": "ecole", "school_name": "appellation", "class_school": "ecole"}

LAYOUT = """<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>{% block title %}{% endblock %}</title></head>
<body><main>{% block content %}{% endblock %}</main></body></html>"""


def current_actor() -> dict[str, Any] | None:
    """The test host's "login": the header X-Test-User names a role."""
    from flask import request

    return ROLES.get(request.headers.get("X-Test-User", ""))


ROLES: dict[str, dict[str, Any]] = {
    "super": {"actor": "super", "school": None, "caps": {"view", "print", "send", "renew"}},
    "adml_a": {"actor": "adml_a", "school": "A", "caps": {"view", "print", "send", "renew"}},
    "adml_b": {"actor": "adml_b", "school": "B", "caps": {"view", "print", "send", "renew"}},
    "viewer_a": {"actor": "viewer_a", "school": "A", "caps": {"view"}},
    "printer_a": {"actor": "printer_a", "school": "A", "caps": {"view", "print", "send"}},
    "teacher": {"actor": "teacher", "school": "A", "caps": set()},
    # A class teacher (``audience="teacher"``): the pupils of one class and their parents.
    "prof_a": {"actor": "prof_a", "school": "A", "caps": {"view", "print"}, "class": "CE2 de Mme Élise"},
}


def scope() -> Scope | None:
    actor = current_actor()
    if actor is None:
        return None
    if actor["school"] is None:
        return Scope(actor=actor["actor"], key="*", actor_email="super@example.org", actor_name=actor.get("name", ""))
    school = actor["school"]
    if actor.get("class"):
        return _class_teacher_scope(actor, school)
    return Scope(
        actor=actor["actor"],
        actor_name=actor.get("name", ""),
        users=sa.and_(Personne.ecole == school, Personne.super_admin.is_(False)),
        classes=Division.ecole == school,
        key=f"ecole:{school}",
        school_name=f"École {school}",
        actor_email=f"{actor['actor']}@example.org",
    )


def _class_teacher_scope(actor: dict[str, Any], school: str) -> Scope:
    taught = sa.select(Division.ref).where(Division.libelle == actor["class"], Division.ecole == school)
    pupils = sa.select(inscription.c.personne_uid).where(inscription.c.division_ref.in_(taught))
    parents = sa.select(filiation.c.responsable_uid).where(filiation.c.enfant_uid.in_(pupils))
    return Scope(
        actor=actor["actor"],
        users=sa.and_(
            Personne.super_admin.is_(False),
            sa.or_(sa.and_(Personne.categorie == "ELEVE", Personne.uid.in_(pupils)),
                   sa.and_(Personne.categorie == "PARENT", Personne.uid.in_(parents))),
        ),
        classes=Division.ref.in_(taught),
        key=f"enseignant:{actor['actor']}",
        school_name=f"École {school}",
        audience="teacher",
    )


def permission(capability: str) -> bool:
    actor = current_actor()
    return actor is not None and capability in actor["caps"]


def recently_authenticated() -> bool:
    """The test host's step-up: the session passed ``/reauth`` less than
    ``TEST_STEP_UP_SECONDS`` ago."""
    from flask import current_app

    return time.time() - float(session.get("auth_at", 0)) < float(current_app.config["TEST_STEP_UP_SECONDS"])


def reauth_url(back: str) -> str:
    return url_for("reauth", next=back)


#: The policy a careful host serves its console under (``make_app(csp=True)``).
STRICT_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:"


def make_app(
    database_url: str,
    instance_path: str,
    *,
    reset: bool = True,
    schools: bool = False,
    states: bool = False,
    renew: Callable[[list[Any]], Any] | None = None,
    step_up: bool = False,
    csp: bool = False,
    fields: dict[str, Any] | None = None,
    **config: Any,
) -> Flask:
    """The test host on ``database_url``: tables emptied (``reset``) or kept
    (benchmarks); ``schools``: with the school dimension mapped; ``states``: with
    the account states (federated, blocked, code expiry) mapped; ``renew``: the
    renewal callable given to ``init_app``; ``step_up``: a recent authentication
    asked before codes (``/reauth`` gives one); ``csp``: every page under
    :data:`STRICT_CSP`; ``fields``: another field mapping than :data:`FIELDS`."""
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(
        TESTING=True,
        SECRET_KEY="test",
        SQLALCHEMY_DATABASE_URI=database_url,
        BABEL_DEFAULT_LOCALE="fr",
        WTF_CSRF_ENABLED=False,
        PUBLIPOSTAGE_JOB_BACKEND="eager",
        PUBLIPOSTAGE_ENT_NAME="ENT Test",
        PUBLIPOSTAGE_ENT_URL="https://ent.test.example",
        MAIL_DEFAULT_SENDER="ENT Test <noreply@ent.test.example>",
        TEST_STEP_UP_SECONDS=600,
    )
    app.config.update(config)
    app.jinja_loader = _layout_loader(app)
    db.init_app(app)
    Babel(app, locale_selector=lambda: "fr")
    with app.app_context():
        from flask_publipostage import audit, runs  # noqa: F401  (their tables)
        from flask_publipostage.models import metadata

        if reset:
            metadata.drop_all(db.engine)
            db.drop_all()
        db.create_all()
    Publipostage(
        app,
        db=db,
        user_model=Personne,
        class_model=Division,
        fields={**(FIELDS if fields is None else fields), **(SCHOOL_FIELDS if schools else {}), **(STATE_FIELDS if states else {})},
        scope=scope,
        permission=permission,
        profiles=PROFILE_CODES,
        school_model=Ecole if schools else None,
        renew=renew,
        step_up=recently_authenticated if step_up else None,
        step_up_url=reauth_url if step_up else None,
    )

    @app.route("/reauth")
    def reauth() -> Any:
        """The host's re-authentication, passed at once (the tests' password)."""
        session["auth_at"] = time.time()
        return redirect(request.args["next"])

    if csp:
        @app.after_request
        def policy(response: Any) -> Any:
            # A response with a policy of its own (the message preview) keeps it.
            response.headers.setdefault("Content-Security-Policy", STRICT_CSP)
            return response

    @app.route("/")
    def home() -> str:
        return render_template_string(
            "{% extends 'base.html' %}{% block content %}<h2>Imports/Exports</h2>"
            "{% for e in publipostage_menu('Imports/Exports') %}<a href='{{ e.url }}'>{{ e.label }}</a>"
            "{% endfor %}{% endblock %}"
        )

    return app


def _layout_loader(app: Flask) -> Any:
    from jinja2 import ChoiceLoader, DictLoader

    return ChoiceLoader([DictLoader({"base.html": LAYOUT}), app.jinja_loader])


def add_person(
    login: str,
    first: str,
    last: str,
    code: str,
    *,
    school: str = "A",
    email: str | None = None,
    activated: bool = False,
    created: datetime = datetime(2025, 9, 1, 8, 0),
    adml: bool = False,
    super_admin: bool = False,
    divisions: list[Division] | None = None,
    enfants: list[Personne] | None = None,
    token: str | None = None,
    rue: str | None = None,
    ville: str | None = None,
    federated: bool = False,
    blocked: bool = False,
    code_until: datetime | None = None,
) -> Personne:
    person = Personne(
        identifiant=login,
        prenom_usuel=first,
        nom_famille=last,
        categorie=code,
        adresse_mel=email,
        jeton=None if activated else (token or f"CODE-{login}"),
        compte_ouvert=activated,
        cree_le=created,
        referent=adml,
        super_admin=super_admin,
        ecole=school,
        rue=rue,
        ville=ville,
        federe=federated,
        bloque=blocked,
        jeton_expire_le=code_until,
    )
    person.divisions = divisions or []
    person.enfants = enfants or []
    db.session.add(person)
    return person
