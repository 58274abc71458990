"""The host contract: init_app, fail-closed permissions, menu entry, French page."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_publipostage import MappingError, Publipostage, Scope

from .hosts import FIELDS, Division, Personne, db, make_app, permission, scope

PAGE = "/imports-exports/publipostage/"


def test_page_in_french_for_local_admin(client: Any, school: Any) -> None:
    response = client.get(PAGE, "adml_a")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<h1>Publipostage des comptes</h1>" in html
    for heading in ("Sélection", "Vérification", "Publipostage"):
        assert heading in html
    for label in ("Profils (par défaut tous)", "Classes", "Non activés", "Avec courriel",
                  "Uniquement les administrateurs locaux", "Créés depuis le", "Puis par"):
        assert label in html
    assert "Élève" in html and "Parent" in html and "Enseignant" in html


@pytest.mark.parametrize(
    ("role", "status"),
    [(None, 401), ("teacher", 403), ("viewer_a", 200), ("adml_a", 200), ("super", 200)],
)
def test_who_may_open_the_page(client: Any, school: Any, role: str | None, status: int) -> None:
    assert client.get(PAGE, role).status_code == status


def test_menu_entry_only_for_those_allowed(client: Any, school: Any) -> None:
    assert "Publipostage des comptes" in client.get("/", "adml_a").get_data(as_text=True)
    assert "Publipostage des comptes" not in client.get("/", "teacher").get_data(as_text=True)
    assert "Publipostage des comptes" not in client.get("/", None).get_data(as_text=True)


def test_menu_entry_points_to_the_page(client: Any, school: Any) -> None:
    html = client.get("/", "super").get_data(as_text=True)
    assert f"href='{PAGE}'" in html


def _bare_app(tmp_path: Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    app.config["SECRET_KEY"] = "test"
    db.init_app(app)
    return app


def _options(**overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        db=db, user_model=Personne, class_model=Division, fields=FIELDS,
        scope=scope, permission=permission,
        profiles={"ELEVE": "Student", "PARENT": "Relative", "PROF": "Teacher"},
    )
    options.update(overrides)
    return options


def test_without_permission_callable_init_app_refuses(tmp_path: Any) -> None:
    with pytest.raises(TypeError):
        Publipostage().init_app(_bare_app(tmp_path), **_options(permission=None))
    with pytest.raises(TypeError):
        Publipostage().init_app(_bare_app(tmp_path), **_options(scope=None))


def test_registering_twice_raises(tmp_path: Any) -> None:
    app = _bare_app(tmp_path)
    Publipostage(app, **_options())
    with pytest.raises(RuntimeError):
        Publipostage(app, **_options())


def test_state_lives_in_app_extensions(tmp_path: Any) -> None:
    app = _bare_app(tmp_path)
    extension = Publipostage(app, **_options())
    assert app.extensions["publipostage"].extension is extension
    assert app.config["PUBLIPOSTAGE_PAGE_SIZE"] == 50


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**FIELDS, "login": "no_such_column"}, "no attribute"),
        ({k: v for k, v in FIELDS.items() if k != "email"}, "lacks"),
        ({**FIELDS, "favourite_colour": "x"}, "unknown logical fields"),
    ],
)
def test_bad_mapping_fails_at_init(tmp_path: Any, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        Publipostage(_bare_app(tmp_path), **_options(fields=fields))


def test_profile_mapping_to_unknown_profile_fails(tmp_path: Any) -> None:
    with pytest.raises(MappingError):
        Publipostage(_bare_app(tmp_path), **_options(profiles={"ELEVE": "Pupil"}))


def test_page_uses_host_data_through_mapping(client: Any, school: Any) -> None:
    """The test host names nothing like the example console: its data shows."""
    html = client.get(PAGE + "?profile=Relative", "adml_a").get_data(as_text=True)
    assert "marie.abel" in html
    assert "Parent de Zoé Abel" in html
    assert "CP de Mme Émery" in html


def test_url_prefix_and_layout_are_configurable(tmp_path: Any, database_url: str) -> None:
    app = make_app(
        database_url, str(tmp_path),
        PUBLIPOSTAGE_URL_PREFIX="/console/envois",
    )
    response = app.test_client().get("/console/envois/", headers={"X-Test-User": "super"})
    assert response.status_code == 200
    assert "<main>" in response.get_data(as_text=True)  # the host layout wraps the page


def test_template_override_by_path(tmp_path: Any, database_url: str) -> None:
    from jinja2 import ChoiceLoader, DictLoader

    app = make_app(database_url, str(tmp_path))
    app.jinja_loader = ChoiceLoader(
        [DictLoader({"publipostage/_error.html": "<p class='mine'>{{ message }}</p>"}), app.jinja_loader]
    )
    response = app.test_client().get(
        "/imports-exports/publipostage/?activation=maybe", headers={"X-Test-User": "super"}
    )
    assert response.status_code == 400
    assert "<p class='mine'>" in response.get_data(as_text=True)


def test_scope_object_defaults() -> None:
    assert Scope(actor="x").is_global
    assert not Scope(actor="x", key="ecole:A").is_global
    # The page speaks to an admin unless the host says the user is a class teacher.
    assert Scope(actor="x").audience == "admin"
    assert Scope(actor="x", audience="teacher").audience == "teacher"
    with pytest.raises(ValueError, match="unknown audience 'pupil'"):
        Scope(actor="x", audience="pupil")
