"""A test host whose model and column names differ from the example console's.

French table names, a boolean activation column, host profile codes ("ELEVE",
"PARENT"...) mapped to the canonical profiles: nothing the extension may assume.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, render_template_string
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

LAYOUT = """<!doctype html><html lang="fr"><head><meta charset="utf-8">
<title>{% block title %}{% endblock %}</title></head>
<body><main>{% block content %}{% endblock %}</main></body></html>"""


def current_actor() -> dict[str, Any] | None:
    """The test host's "login": the header X-Test-User names a role."""
    from flask import request

    return ROLES.get(request.headers.get("X-Test-User", ""))


ROLES: dict[str, dict[str, Any]] = {
    "super": {"actor": "super", "school": None, "caps": {"view", "print", "send"}},
    "adml_a": {"actor": "adml_a", "school": "A", "caps": {"view", "print", "send"}},
    "adml_b": {"actor": "adml_b", "school": "B", "caps": {"view", "print", "send"}},
    "viewer_a": {"actor": "viewer_a", "school": "A", "caps": {"view"}},
    "teacher": {"actor": "teacher", "school": "A", "caps": set()},
}


def scope() -> Scope | None:
    actor = current_actor()
    if actor is None:
        return None
    if actor["school"] is None:
        return Scope(actor=actor["actor"], key="*", actor_email="super@example.org", actor_name=actor.get("name", ""))
    school = actor["school"]
    return Scope(
        actor=actor["actor"],
        actor_name=actor.get("name", ""),
        users=sa.and_(Personne.ecole == school, Personne.super_admin.is_(False)),
        classes=Division.ecole == school,
        key=f"ecole:{school}",
        school_name=f"École {school}",
        actor_email=f"{actor['actor']}@example.org",
    )


def permission(capability: str) -> bool:
    actor = current_actor()
    return actor is not None and capability in actor["caps"]


def make_app(
    database_url: str, instance_path: str, *, reset: bool = True, fields: dict[str, Any] | None = None, **config: Any
) -> Flask:
    """The test host on ``database_url``: tables emptied (``reset``) or kept
    (benchmarks); ``fields``: another field mapping than :data:`FIELDS`."""
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
        fields=FIELDS if fields is None else fields,
        scope=scope,
        permission=permission,
        profiles=PROFILE_CODES,
    )

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
    )
    person.divisions = divisions or []
    person.enfants = enfants or []
    db.session.add(person)
    return person
