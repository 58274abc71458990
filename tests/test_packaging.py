"""The built wheel ships templates, catalogs and fonts; a non-editable install renders the page."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

HOST = textwrap.dedent(
    """
    import sqlalchemy as sa
    from flask import Flask
    from flask_babel import Babel
    from flask_sqlalchemy import SQLAlchemy
    import flask_publipostage
    from flask_publipostage import Publipostage, Scope

    assert flask_publipostage.__file__.startswith(TARGET), flask_publipostage.__file__
    db = SQLAlchemy()
    link = db.Table("link", sa.Column("u", sa.ForeignKey("u.id")), sa.Column("c", sa.ForeignKey("c.id")))

    class C(db.Model):
        __tablename__ = "c"
        id = sa.Column(sa.Integer, primary_key=True)
        label = sa.Column(sa.String)

    class U(db.Model):
        __tablename__ = "u"
        id = sa.Column(sa.Integer, primary_key=True)
        handle = sa.Column(sa.String)
        given = sa.Column(sa.String)
        family = sa.Column(sa.String)
        kind = sa.Column(sa.String)
        mail = sa.Column(sa.String)
        token = sa.Column(sa.String)
        joined = sa.Column(sa.DateTime)
        admin = sa.Column(sa.Boolean)
        groups = db.relationship(C, secondary=link)

    app = Flask(__name__, instance_path=TARGET + "/instance")
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", SECRET_KEY="x")
    from jinja2 import ChoiceLoader, DictLoader
    app.jinja_loader = ChoiceLoader([DictLoader({"base.html": "{% block content %}{% endblock %}"}), app.jinja_loader])
    db.init_app(app)
    Babel(app, locale_selector=lambda: "fr")
    with app.app_context():
        db.create_all()
    Publipostage(app, db=db, user_model=U, class_model=C, fields=dict(
        login="handle", first_name="given", last_name="family", profile="kind", email="mail",
        activation_code="token", created_at="joined", local_admin="admin", classes="groups",
        class_name="label"), scope=lambda: Scope(actor="me"), permission=lambda cap: True)
    html = app.test_client().get("/imports-exports/publipostage/").get_data(as_text=True)
    assert "Publipostage des comptes" in html and "Vérification" in html, html[:500]
    print("rendered from", flask_publipostage.__file__)
    """
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True,
        cwd=out,
    )
    (path,) = out.glob("flask_publipostage-*.whl")
    return path


def test_wheel_contains_templates_catalog_and_fonts(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "flask_publipostage/templates/publipostage/page.html",
        "flask_publipostage/templates/publipostage/layout.html",
        "flask_publipostage/translations/fr/LC_MESSAGES/flask_publipostage.mo",
        "flask_publipostage/translations/fr/LC_MESSAGES/flask_publipostage.po",
        "flask_publipostage/assets/fonts/DejaVuSans.ttf",
        "flask_publipostage/assets/publipostage.js",
    ):
        assert expected in names, expected


def test_non_editable_install_renders_the_page_in_french(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
    )
    script = f"TARGET = {str(target)!r}\n" + HOST
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rendered from " + str(target) in result.stdout
