"""The example host console: login, home page, scopes handed to the extension, outbox."""

from __future__ import annotations

import io
import json
import re
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_login import login_user
from pypdf import PdfReader
from werkzeug.security import generate_password_hash

from examples.ent_console import create_app, current_admin_can, current_admin_scope, serve
from examples.ent_console.access import school_of_recipients
from examples.ent_console.models import Classe, Etablissement, Utilisateur, db
from examples.ent_console.outbox import list_messages, start_console_outbox, start_outbox
from examples.ent_console.seed import seed_database
from flask_publipostage import Publipostage

from .browser import launched_browser, live_server, require_chromium
from .live_console import PUBLIPOSTAGE, ConsoleSession, free_port, production_console

ROOT = Path(__file__).resolve().parents[1]

MENU_LABEL = "Publipostage des comptes"


def _config(**extra: Any) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": "sqlite://",
        "WTF_CSRF_ENABLED": False,
        "SECRET_KEY": "test",
        **extra,
    }


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(
        _config(ENT_CONSOLE_OUTBOX_DIR=str(tmp_path / "outbox")), instance_path=tmp_path / "instance"
    )
    with app.app_context():
        seed_database(db.session, seed=5)
        db.session.commit()
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _login(client: FlaskClient, login: str, password: str = "demo") -> Any:
    return client.post("/login", data={"identifiant": login, "mot_de_passe": password}, follow_redirects=True)


def _imports_exports_section(html: str) -> str:
    match = re.search(r'<section[^>]*id="imports-exports".*?</section>', html, re.S)
    assert match, "no Imports/Exports section"
    return match.group(0)


# -- application factory -----------------------------------------------------------------


def test_factory_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENT_CONSOLE_DATABASE_URL", raising=False)
    monkeypatch.delenv("ENT_CONSOLE_SMTP_PORT", raising=False)
    app = create_app({"TESTING": True}, instance_path=tmp_path)
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'ent_console.sqlite3'}"
    assert (tmp_path / "ent_console.sqlite3").is_file()
    assert app.config["SECRET_KEY"] and (tmp_path / "secret_key").is_file()
    assert app.config["BABEL_DEFAULT_LOCALE"] == "fr"
    assert app.config["PUBLIPOSTAGE_ENT_NAME"] == "ENT Lumière"
    assert app.config["PUBLIPOSTAGE_ENT_URL"] == "https://ent.lumiere.example.fr"
    assert (app.config["MAIL_SERVER"], app.config["MAIL_PORT"]) == ("127.0.0.1", 8025)
    assert app.config["MAIL_DEFAULT_SENDER"] == "ENT Lumière <ne-pas-repondre@ent.lumiere.example.fr>"
    assert app.config["ENT_CONSOLE_OUTBOX_DIR"] == str(tmp_path / "outbox")
    assert "publipostage" in app.extensions


def test_the_sqlite_log_is_emptied_while_readers_come_and_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load the server's threads always have a reader on the log, so SQLite
    never starts it over by itself: the console checkpoints and empties it."""
    monkeypatch.delenv("ENT_CONSOLE_DATABASE_URL", raising=False)
    app = create_app({"TESTING": True, "SECRET_KEY": "x"}, instance_path=tmp_path)
    log = tmp_path / "ent_console.sqlite3-wal"
    with app.app_context():
        reader = db.engine.connect()
        reader.exec_driver_sql("BEGIN")
        reader.exec_driver_sql("SELECT count(*) FROM etablissement").all()  # a snapshot held on the log
        for number in range(50):
            db.session.add(Etablissement(nom=f"École {number}", uai=f"{number:07d}X", type="école"))
            db.session.commit()
        db.session.remove()
        reader.rollback()
        reader.close()
        assert log.stat().st_size > 0
        monkeypatch.setattr(time, "monotonic", lambda: 10.0**9)  # a second and more later
        db.session.add(Etablissement(nom="École de plus", uai="9999999X", type="école"))
        db.session.commit()
        db.session.remove()
    assert log.stat().st_size == 0


def test_commands_run_in_an_admins_perimeter(app: Flask) -> None:
    """``flask publipostage pdf --as-actor LOGIN --scope-key KEY``: that admin's
    perimeter, and only theirs."""
    runner = app.test_cli_runner()
    with app.app_context():
        ecole = db.session.scalar(sa.select(Utilisateur.etablissement_id).where(Utilisateur.login == "adml.ecole"))
        college = db.session.scalar(sa.select(Utilisateur.etablissement_id).where(Utilisateur.login == "adml.college"))
        db.session.remove()
    refused = runner.invoke(args=["publipostage", "pdf", "--as-actor", "adml.ecole", "--scope-key", f"etab:{college}"])
    assert refused.exit_code == 1 and f"etab:{college}" in refused.output
    unknown = runner.invoke(args=["publipostage", "pdf", "--as-actor", "personne", "--scope-key", f"etab:{ecole}"])
    assert unknown.exit_code == 1


def test_factory_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    monkeypatch.setenv("ENT_CONSOLE_DATABASE_URL", url)
    monkeypatch.setenv("ENT_CONSOLE_SMTP_PORT", "2525")
    app = create_app({"TESTING": True, "SECRET_KEY": "x"}, instance_path=tmp_path / "instance")
    assert app.config["SQLALCHEMY_DATABASE_URI"] == url
    assert app.config["MAIL_PORT"] == 2525
    assert (tmp_path / "other.sqlite3").is_file()


def test_schema_indexes(app: Flask) -> None:
    with app.app_context():
        inspector = sa.inspect(db.engine)
        indexed = {
            table: {tuple(index["column_names"]) for index in inspector.get_indexes(table)}
            for table in ("utilisateur", "utilisateur_classe", "lien_parent_enfant")
        }
    assert ("etablissement_id", "profil") in indexed["utilisateur"]
    assert ("nom", "prenom") in indexed["utilisateur"]
    assert ("classe_id", "utilisateur_id") in indexed["utilisateur_classe"]
    assert ("enfant_id", "parent_id") in indexed["lien_parent_enfant"]


# -- login ---------------------------------------------------------------------------------


def test_login_page_in_french_with_demo_accounts(client: FlaskClient) -> None:
    html = client.get("/login").get_data(as_text=True)
    assert '<html lang="fr">' in html
    assert "Connexion" in html and "Identifiant" in html and "Mot de passe" in html
    for login in ("admin.ent", "adml.ecole", "adml.college", "prof.ecole"):
        assert login in html


def test_login_and_logout(client: FlaskClient) -> None:
    response = _login(client, "adml.ecole")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.request.path == "/"
    assert "Bienvenue, Hélène Marchand." in html
    assert "École élémentaire Jules Ferry" in html

    response = client.post("/logout", follow_redirects=True)
    assert response.request.path == "/login"
    assert client.get("/").status_code == 302


def test_wrong_password(client: FlaskClient) -> None:
    response = _login(client, "adml.ecole", "pas-le-bon")
    assert response.request.path == "/login"
    assert "Identifiant ou mot de passe incorrect." in response.get_data(as_text=True)
    # Imported accounts have no console password: they cannot log in at all.
    assert "incorrect" in _login(client, "minh-chau.nguyen", "demo").get_data(as_text=True)
    # Empty fields: WTForms' own message, in French.
    assert "Ce champ est requis." in _login(client, "adml.ecole", "").get_data(as_text=True)


# -- renewal codes: printed by the extension, accepted by the login page ----------------------


def _activated_pupil_without_email(school: str = "École élémentaire Jules Ferry") -> Utilisateur:
    found = db.session.scalar(
        sa.select(Utilisateur)
        .join(Etablissement, Utilisateur.etablissement_id == Etablissement.id)
        .where(
            Etablissement.nom == school,
            Utilisateur.profil == "Student",
            Utilisateur.code_activation.is_(None),
            Utilisateur.courriel.is_(None),
            Utilisateur.federe.is_(False),
            Utilisateur.bloque.is_(False),
        )
        .order_by(Utilisateur.id)
    )
    assert found is not None
    return found


def test_login_with_a_renewal_code_printed_on_the_letter(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        pupil = _activated_pupil_without_email()
        login, classe_id = pupil.login, pupil.classes[0].id
    _login(client, "adml.ecole")
    response = client.post(
        f"{PAGE}/pdf?class={classe_id}&profile=Student&activation=active&email=without",
        data={"template": "letter", "renew": "without_email"},
    )
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    letters = [page.extract_text() or "" for page in PdfReader(io.BytesIO(response.data)).pages]
    (letter,) = [text for text in letters if re.search(rf"^{re.escape(login)}$", text, re.M)]
    assert "Code de renouvellement" in letter and "https://ent.lumiere.example.fr/login" in letter
    code = re.search(r"Code de renouvellement · valable jusqu'au \d\d/\d\d/\d{4}\n(\S+)", letter)
    assert code is not None, letter
    renewal_code = code.group(1)
    with app.app_context():
        # The console keeps a digest only; the extension keeps nothing.
        stored = db.session.execute(sa.text("SELECT empreinte FROM code_renouvellement")).scalars().all()
        assert stored and renewal_code not in " ".join(stored)
        kept = db.session.execute(sa.text("SELECT * FROM publipostage_run_item")).all()
        assert renewal_code not in repr(kept)
    client.post("/logout")

    # The wrong code, then the right one (in lower case, as typed): a new password to choose.
    assert "incorrect" in _login(client, login, "ABCDEFGHJK").get_data(as_text=True)
    response = _login(client, login, renewal_code.lower())
    assert response.request.path == "/mot-de-passe"
    assert "Code de renouvellement accepté" in response.get_data(as_text=True)
    response = client.post("/mot-de-passe", data={"mot_de_passe": "court", "confirmation": "court"})
    assert "Au moins 8 caractères." in response.get_data(as_text=True)
    response = client.post(
        "/mot-de-passe", data={"mot_de_passe": "Nouveau-mot-2026", "confirmation": "Nouveau-mot-2026"},
        follow_redirects=True,
    )
    assert response.request.path == "/" and "Votre nouveau mot de passe est enregistré." in response.get_data(as_text=True)
    client.post("/logout")
    # The code worked once; the new password works from now on.
    assert "incorrect" in _login(client, login, renewal_code).get_data(as_text=True)
    assert _login(client, login, "Nouveau-mot-2026").request.path == "/"


def test_an_expired_renewal_code_is_refused(client: FlaskClient, app: Flask) -> None:
    from examples.ent_console import renouvellement

    with app.app_context():
        pupil = _activated_pupil_without_email()
        login = pupil.login
        ((code, until),) = renouvellement.emettre_codes([pupil.id]).values()
        db.session.execute(sa.text("UPDATE code_renouvellement SET valable_jusqu_au = :past"),
                           {"past": datetime(2020, 1, 1)})
        db.session.commit()
    assert "incorrect" in _login(client, login, code).get_data(as_text=True)


def test_the_demo_has_accounts_in_every_state(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        now = datetime.now(UTC).replace(tzinfo=None)
        for school in ("École élémentaire Jules Ferry", "Collège Victor Hugo"):
            etab = db.session.scalar(sa.select(Etablissement.id).where(Etablissement.nom == school))

            def count(*conditions: Any, etab: Any = etab) -> int:
                return db.session.scalar(
                    sa.select(sa.func.count()).select_from(Utilisateur).where(Utilisateur.etablissement_id == etab, *conditions)
                ) or 0

            assert count(Utilisateur.federe.is_(True)) > 10, school
            assert count(Utilisateur.bloque.is_(True)) > 0, school
            assert count(Utilisateur.code_activation_expire_le < now) > 0, school
            assert count(Utilisateur.code_activation_expire_le >= now) > 100, school
            assert count(Utilisateur.code_activation.is_(None), Utilisateur.courriel.is_(None)) > 10, school
        # The demo logins keep none of these states.
        for login in ("admin.ent", "adml.ecole", "adml.college", "prof.ecole"):
            user = db.session.scalar(sa.select(Utilisateur).where(Utilisateur.login == login))
            assert not user.federe and not user.bloque
    _login(client, "adml.ecole")
    counters = client.get(f"{PAGE}/preview.json").get_json()["counters"]
    assert counters["federated"] > 0 and counters["expired"] > 0 and counters["blocked_left_out"] > 0


def test_login_redirects_only_inside_the_site(client: FlaskClient) -> None:
    response = client.post(
        "/login?next=https://evil.example.com/", data={"identifiant": "adml.ecole", "mot_de_passe": "demo"}
    )
    assert response.headers["Location"] == "/"
    client.post("/logout")
    response = client.post("/login?next=/outbox", data={"identifiant": "adml.ecole", "mot_de_passe": "demo"})
    assert response.headers["Location"] == "/outbox"


def test_csrf_is_enforced(tmp_path: Path) -> None:
    app = create_app(_config(WTF_CSRF_ENABLED=True), instance_path=tmp_path)
    with app.app_context():
        seed_database(db.session, seed=1)
        db.session.commit()
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert token
    refused = client.post("/login", data={"identifiant": "adml.ecole", "mot_de_passe": "demo"})
    assert refused.status_code in (200, 400) and "Bienvenue" not in refused.get_data(as_text=True)
    accepted = client.post(
        "/login", data={"identifiant": "adml.ecole", "mot_de_passe": "demo", "csrf_token": token.group(1)}
    )
    assert accepted.status_code == 302 and accepted.headers["Location"] == "/"


# -- home page and the extension's menu entry ----------------------------------------------


def test_home_requires_login(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("login", ["adml.ecole", "adml.college", "admin.ent"])
def test_admins_see_the_mail_merge_entry(client: FlaskClient, login: str) -> None:
    html = _login(client, login).get_data(as_text=True)
    for section in ("Utilisateurs", "Groupes", "Imports/Exports"):
        assert f">{section}</h2>" in html
    section = _imports_exports_section(html)
    assert MENU_LABEL in section
    url = re.search(r'<a href="([^"]+)">' + MENU_LABEL, section)
    assert url
    page = client.get(url.group(1))
    assert page.status_code == 200
    assert MENU_LABEL in page.get_data(as_text=True)


def test_the_class_teacher_sees_the_entry(client: FlaskClient) -> None:
    html = _login(client, "prof.ecole").get_data(as_text=True)
    assert "Camille Rousseau" in html and "pas de droit d'administration" not in html
    assert "Vous enseignez en CE2 de Mme Rousseau" in html
    section = _imports_exports_section(html)
    url = re.search(r'<a href="([^"]+)">' + MENU_LABEL, section)
    assert url and client.get(url.group(1)).status_code == 200
    # The console's own admin tools stay closed.
    refused = client.get("/outbox")
    assert refused.status_code == 403 and "Accès refusé" in refused.get_data(as_text=True)


def test_staff_without_admin_rights_nor_class_do_not_see_the_entry(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        atsem = db.session.scalar(
            sa.select(Utilisateur)
            .where(Utilisateur.profil == "Personnel", Utilisateur.is_adml.is_(False))
            .where(Utilisateur.etablissement_id.is_not(None))
            .order_by(Utilisateur.id)
            .limit(1)
        )
        atsem.mot_de_passe_hash = generate_password_hash("demo")
        login = atsem.login
        db.session.commit()
    html = _login(client, login).get_data(as_text=True)
    assert MENU_LABEL not in html and "pas de droit d'administration" in html
    with app.test_request_context():
        url = app.url_for("publipostage.index")
    assert client.get(url).status_code == 403


def test_anonymous_is_sent_to_login_by_the_extension(client: FlaskClient, app: Flask) -> None:
    with app.test_request_context():
        url = app.url_for("publipostage.index")
    response = client.get(url)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_home_counts_only_the_admins_school(client: FlaskClient, app: Flask) -> None:
    html = _login(client, "adml.ecole").get_data(as_text=True)
    with app.app_context():
        college_classes = list(db.session.scalars(sa.select(Classe.nom).where(Classe.nom.like("6e%"))))
    assert college_classes and not any(f"<li>{nom}</li>" in html for nom in college_classes)
    assert "<li><span>Élèves</span> <strong>250</strong></li>" in html


# -- scope and permission callables ----------------------------------------------------------


def _as(app: Flask, login: str | None) -> Any:
    context = app.test_request_context()
    context.push()
    if login is not None:
        user = db.session.scalar(sa.select(Utilisateur).where(Utilisateur.login == login))
        login_user(user)
    return context


def _visible(scope: Any) -> set[str]:
    query = sa.select(Utilisateur.login)
    if scope.users is not None:
        query = query.where(scope.users)
    return set(db.session.scalars(query))


def test_scope_of_a_local_admin(app: Flask) -> None:
    context = _as(app, "adml.ecole")
    try:
        scope = current_admin_scope()
        ecole = db.session.scalar(sa.select(Etablissement).where(Etablissement.type == "école"))
        assert scope is not None and ecole is not None
        assert scope.key == f"etab:{ecole.id}" and scope.school_name == ecole.nom
        assert (
            scope.actor.startswith("user:") and scope.actor_email == "helene.marchand@ac-lumiere.example.fr"
        )
        visible = _visible(scope)
        assert "adml.ecole" in visible and "prof.ecole" in visible
        assert "admin.ent" not in visible and "adml.college" not in visible
        expected = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Utilisateur)
            .where(Utilisateur.etablissement_id == ecole.id)
        )
        assert len(visible) == expected
        classes = set(db.session.scalars(sa.select(Classe.etablissement_id).where(scope.classes)))
        assert classes == {ecole.id}
        assert all(current_admin_can(c) for c in ("view", "print", "send"))
        assert not current_admin_can("delete")
    finally:
        context.pop()


def test_a_super_admin_attached_to_a_school_stays_hidden(app: Flask) -> None:
    with app.app_context():
        admin = db.session.scalar(sa.select(Utilisateur).where(Utilisateur.login == "admin.ent"))
        ecole = db.session.scalar(sa.select(Etablissement).where(Etablissement.type == "école"))
        assert admin is not None and ecole is not None
        admin.etablissement_id = ecole.id
        db.session.commit()
    context = _as(app, "adml.ecole")
    try:
        assert "admin.ent" not in _visible(current_admin_scope())
    finally:
        context.pop()


def test_scope_of_the_super_admin(app: Flask) -> None:
    context = _as(app, "admin.ent")
    try:
        scope = current_admin_scope()
        assert scope is not None
        assert scope.users is None and scope.classes is None and scope.key == "*" and scope.is_global
        assert scope.actor_email == "admin.ent@ent.lumiere.example.fr"
        assert current_admin_can("send")
    finally:
        context.pop()


def test_scope_of_nobody(app: Flask) -> None:
    context = _as(app, None)
    try:
        assert current_admin_scope() is None
        assert not current_admin_can("view")
    finally:
        context.pop()
    with app.app_context():  # no request at all: a background job, the CLI
        assert current_admin_scope() is None


# -- a class teacher prints for their class ------------------------------------------------------

PAGE = "/imports-exports/publipostage"
CLASS_OF_PROF = "CE2 de Mme Rousseau"


@dataclass(frozen=True)
class _Classroom:
    class_id: int
    pupils: frozenset[str]
    parents: frozenset[str]
    #: Blocked accounts: left out of the list unless asked for.
    blocked: frozenset[str] = frozenset()
    #: Accounts whose activation code expired: no card, no letter.
    expired: frozenset[str] = frozenset()

    @property
    def listed(self) -> frozenset[str]:
        """Who the list shows by default: every account but the blocked ones."""
        return (self.pupils | self.parents) - self.blocked

    @property
    def listed_pupils(self) -> frozenset[str]:
        return self.pupils - self.blocked


def _classroom(name: str = CLASS_OF_PROF) -> _Classroom:
    """The pupils of a class and their parents, read from the console's own models."""
    classe = db.session.scalar(sa.select(Classe).where(Classe.nom == name))
    assert classe is not None
    pupils = [u for u in classe.membres if u.profil == "Student"]
    everyone = pupils + [p for u in pupils for p in u.parents]
    now = datetime.now(UTC).replace(tzinfo=None)
    return _Classroom(
        classe.id,
        frozenset(u.login for u in pupils),
        frozenset(p.login for u in pupils for p in u.parents),
        frozenset(u.login for u in everyone if u.bloque),
        frozenset(
            u.login for u in everyone
            if u.code_activation and not u.federe and u.code_activation_expire_le and u.code_activation_expire_le < now
        ),
    )


def _card_logins(data: bytes) -> list[str]:
    """The login printed on every card of a PDF (a long one wraps: lines joined)."""
    found = []
    for page in PdfReader(io.BytesIO(data)).pages:
        text = page.extract_text() or ""
        for login in re.findall(
            r"Identifiant :\n(.*?)\n(?:Code d'activation :|Code de renouvellement :|Compte déjà activé|Connexion avec)", text, re.S
        ):
            found.append(re.sub(r"\s+", "", login))
    return found


def _preview_logins(client: FlaskClient, query: str = "") -> list[str]:
    logins: list[str] = []
    url: str | None = f"{PAGE}/preview.json?{query}"
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.get_json()
        logins += [account["login"] for account in body["accounts"]]
        url = body["links"].get("next")
    return logins


def test_scope_of_a_class_teacher(app: Flask) -> None:
    context = _as(app, "prof.ecole")
    try:
        classroom = _classroom()
        assert len(classroom.pupils) == 30 and len(classroom.parents) > 30
        scope = current_admin_scope()
        assert scope is not None and scope.audience == "teacher"
        assert scope.school_name == "École élémentaire Jules Ferry"
        # Their own journal, not the school's.
        assert scope.key.startswith("enseignant:") and scope.actor_name == "Camille Rousseau (prof.ecole)"
        # The pupils of the class and their parents: not the class's other teachers,
        # nor herself, nor the other classes.
        assert _visible(scope) == classroom.pupils | classroom.parents
        assert list(db.session.scalars(sa.select(Classe.nom).where(scope.classes))) == [CLASS_OF_PROF]
        assert current_admin_can("view") and current_admin_can("print")
        assert not current_admin_can("send")
    finally:
        context.pop()


def test_a_class_teacher_sees_only_their_class(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        classroom = _classroom()
    _login(client, "prof.ecole")
    html = client.get(PAGE + "/").get_data(as_text=True)
    offered = re.findall(r'<label class="pp-check" data-name="([^"]+)"><input type="checkbox" name="class"', html)
    assert offered == [CLASS_OF_PROF]
    assert re.findall(r'name="profile" value="(\w+)"', html) == ["Student", "Relative"]
    # The page speaks to a teacher: advice, ready-made selections, no admin filter.
    assert "Imprimez les fiches de votre classe et remettez-les en main propre" in html
    assert "Les remettre à votre classe" in html and "Conseils de distribution" not in html
    assert "Mes élèves : cartes par classe, 8 par page" in html
    assert "Parents non activés : lettres pour la réunion de rentrée" in html
    assert "Référents ENT" not in html and "Enseignants : envoi par courriel" not in html
    assert 'name="local_admin"' not in html
    assert "aux élèves de vos classes et à leurs parents" in html

    everyone = _preview_logins(client)
    assert len(everyone) == len(set(everyone)) == len(classroom.listed)
    assert set(everyone) == classroom.listed
    assert set(_preview_logins(client, f"class={classroom.class_id}&profile=Student")) == classroom.listed_pupils
    assert set(_preview_logins(client, "blocked=all")) == classroom.pupils | classroom.parents


def test_an_admin_page_is_unchanged(client: FlaskClient) -> None:
    _login(client, "adml.ecole")
    html = client.get(PAGE + "/").get_data(as_text=True)
    assert "Conseils de distribution" in html and "Référents ENT" in html and 'name="local_admin"' in html
    assert "Les remettre à votre classe" not in html and "Mes élèves" not in html


def test_a_class_teacher_cannot_send(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        classroom = _classroom()
    _login(client, "prof.ecole")
    html = client.get(PAGE + "/").get_data(as_text=True)
    assert "Générer en PDF" in html
    assert "Envoyer par courriel" not in html and f'action="{PAGE}/mail"' not in html
    query = f"class={classroom.class_id}&profile=Relative"
    for url in (f"{PAGE}/mail?{query}", f"{PAGE}/mail/campaigns", f"{PAGE}/mail/campaigns/1",
                f"{PAGE}/mail/campaigns/1/status", f"{PAGE}/mail/campaigns/1/report.csv"):
        assert client.get(url).status_code == 403, url
    for url in (f"{PAGE}/mail/send?{query}", f"{PAGE}/mail/sample?{query}",
                f"{PAGE}/mail/campaigns/1/cancel", f"{PAGE}/mail/campaigns/1/resume"):
        assert client.post(url).status_code == 403, url


def test_a_class_teacher_prints_their_class_cards(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        classroom = _classroom()
    _login(client, "prof.ecole")
    response = client.post(f"{PAGE}/pdf?profile=Student&sort=class", data={"template": "cards"})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    printed = _card_logins(response.data)
    carded = classroom.listed_pupils - classroom.expired
    assert len(printed) == len(carded) and set(printed) == carded
    assert CLASS_OF_PROF in PdfReader(io.BytesIO(response.data)).pages[0].extract_text()

    # Without a filter: the whole class, pupils and parents, and nobody else (no
    # card for a blocked account, nor for an expired code).
    response = client.post(f"{PAGE}/pdf", data={"template": "cards"})
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert sorted(_card_logins(response.data)) == sorted(classroom.listed - classroom.expired)


def test_a_class_of_another_teacher_is_refused(client: FlaskClient, app: Flask) -> None:
    with app.app_context():
        other = _classroom("CM2 de Mme Marchand")
        college = db.session.scalar(sa.select(Classe.id).where(Classe.nom == "6eA"))
    _login(client, "prof.ecole")
    for class_id in (other.class_id, college):
        query = f"class={class_id}"
        for url in (f"{PAGE}/?{query}", f"{PAGE}/preview?{query}", f"{PAGE}/preview.json?{query}",
                    f"{PAGE}/export.csv?{query}"):
            assert client.get(url).status_code == 403, url
        refused = client.post(f"{PAGE}/pdf?{query}", data={"template": "cards"})
        assert refused.status_code == 403
        assert "Une des classes choisies est hors de votre périmètre." in refused.get_data(as_text=True)
    # Nor does a pupil of that class come in through a preview of everything.
    assert not set(_preview_logins(client)) & other.pupils


def test_the_class_teachers_page_in_chromium(app: Flask) -> None:
    sync_api = require_chromium()
    with app.app_context():
        classroom = _classroom()
    rows = "#pp-advice-title ~ div tr[data-profile]"
    shown = "rows => rows.filter(r => !r.hidden).map(r => r.dataset.profile)"
    with live_server(app) as base, launched_browser(sync_api) as browser:
        context = browser.new_context(base_url=base, locale="fr-FR")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/login")
        page.get_by_label("Identifiant").fill("prof.ecole")
        page.get_by_label("Mot de passe").fill("demo")
        page.get_by_role("button", name="Se connecter").click()
        page.get_by_role("link", name=MENU_LABEL).click()
        page.wait_for_selector("#pp-results .pp-counters")

        advice = page.inner_text(".pp-advice")
        assert "Les remettre à votre classe" in advice
        assert "Imprimez les fiches de votre classe et remettez-les en main propre" in advice
        assert "Conseils de distribution" not in advice
        classes = page.eval_on_selector_all("#pp-class-list label", "ls => ls.map(l => l.textContent.trim())")
        assert classes == [CLASS_OF_PROF]
        assert page.locator("form.pp-mail").count() == 0
        assert page.get_by_role("button", name="Générer en PDF").is_visible()
        assert page.eval_on_selector_all(rows, shown) == ["Student", "Relative", "Relative"]

        page.get_by_label("Élève", exact=True).check()
        page.wait_for_function(
            "n => document.querySelector('#pp-results .pp-counters').dataset.selected === String(n)",
            arg=len(classroom.listed_pupils),
        )
        assert page.eval_on_selector_all(rows, shown) == ["Student"]

        page.get_by_role("link", name="Mes élèves : cartes par classe, 8 par page").click()
        page.wait_for_selector("#pp-results .pp-counters")
        assert page.is_checked("#pp-pdf input[name=template][value=cards]")
        assert page.get_attribute("#pp-results .pp-counters", "data-selected") == str(len(classroom.listed_pupils))
        context.close()
    assert not errors, errors


# -- the password again before codes (step-up) ---------------------------------------------------


def _sixteen_minutes_later(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's step-up clock moves on past its 15 minutes."""
    from examples.ent_console import auth

    later = time.time() + 16 * 60
    monkeypatch.setattr(auth, "now", lambda: later)


def test_the_password_is_asked_again_after_15_minutes(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        classroom = _classroom()
    _login(client, "adml.ecole")
    selection = f"class={classroom.class_id}&profile=Student"
    assert "Confirmer mon identité" not in client.get(f"{PAGE}/?{selection}").get_data(as_text=True)
    _sixteen_minutes_later(monkeypatch)
    page = client.get(f"{PAGE}/?{selection}").get_data(as_text=True)
    assert "Confirmer mon identité" in page and "Non activé (code masqué)" in page
    refused = client.post(f"{PAGE}/pdf?{selection}", data={"template": "cards"})
    assert refused.status_code == 303 and refused.headers["Location"].startswith("/reauth?next=")
    asked = client.get(refused.headers["Location"])
    assert "Confirmez votre identité" in asked.get_data(as_text=True)
    wrong = client.post(refused.headers["Location"], data={"mot_de_passe": "nope"})
    assert wrong.status_code == 200 and "Mot de passe incorrect." in wrong.get_data(as_text=True)
    back = client.post(refused.headers["Location"], data={"mot_de_passe": "demo"})
    assert back.status_code == 302
    assert back.headers["Location"] == f"{PAGE}/?profile=Student&class={classroom.class_id}&template=cards#pp-pdf"
    printed = client.post(f"{PAGE}/pdf?{selection}", data={"template": "cards"})
    assert printed.status_code == 200 and set(_card_logins(printed.data)) == classroom.listed_pupils - classroom.expired


def test_the_step_up_round_trip_in_chromium(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters chosen, then 16 minutes later "Générer en PDF": the password, then
    the same selection, and the PDF."""
    sync_api = require_chromium()
    with app.app_context():
        classroom = _classroom()
    with live_server(app) as base, launched_browser(sync_api) as browser:
        context = browser.new_context(base_url=base, locale="fr-FR", accept_downloads=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/login")
        page.get_by_label("Identifiant").fill("adml.ecole")
        page.get_by_label("Mot de passe").fill("demo")
        page.get_by_role("button", name="Se connecter").click()
        page.goto(PAGE + "/")
        page.get_by_label("Élève", exact=True).check()
        page.get_by_label(CLASS_OF_PROF, exact=True).check()
        page.get_by_role("radio", name="8 par page").check()
        page.wait_for_function(
            "n => document.querySelector('#pp-results .pp-counters').dataset.selected === String(n)",
            arg=len(classroom.listed_pupils),
        )
        _sixteen_minutes_later(monkeypatch)
        page.get_by_role("button", name="Générer en PDF").click()
        page.wait_for_url(lambda url: "/reauth?next=" in url)
        page.get_by_label("Mot de passe").fill("demo")
        page.get_by_role("button", name="Confirmer").click()
        page.wait_for_url(lambda url: f"{PAGE}/?" in url)
        assert page.is_checked(f"input[name=class][value='{classroom.class_id}']")
        assert page.is_checked("input[name=profile][value=Student]")
        assert page.is_checked("#pp-pdf input[name=template][value=cards]")
        assert page.get_attribute("#pp-results .pp-counters", "data-selected") == str(len(classroom.listed_pupils))
        assert page.locator("#pp-results code.pp-code").count() > 0  # the codes show again
        with page.expect_download() as download:
            page.get_by_role("button", name="Générer en PDF").click()
        with open(download.value.path(), "rb") as handle:
            assert set(_card_logins(handle.read())) == classroom.listed_pupils - classroom.expired
        context.close()
    assert not errors, errors


# -- demo outbox -------------------------------------------------------------------------------


def test_outbox_stores_messages_sent_over_smtp(tmp_path: Path) -> None:
    port = free_port()
    controller = start_outbox(tmp_path / "outbox", port=port)
    try:
        message = EmailMessage()
        message["From"] = "ENT Lumière <ne-pas-repondre@ent.lumiere.example.fr>"
        message["To"] = "Łukasz Żółć <lukasz.zolc@example.fr>"
        message["Subject"] = "Votre compte ENT Lumière : identifiant et code d'activation"
        message.set_content(
            "Bonjour Łukasz,\nvotre identifiant : lukasz.zolc\ncode d'activation : ABCD2345\n"
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message, to_addrs=["lukasz.zolc@example.fr", "copie@example.fr"])
    finally:
        controller.stop()
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 1
    [stored] = list_messages(tmp_path / "outbox")
    assert stored.subject == "Votre compte ENT Lumière : identifiant et code d'activation"
    assert "Żółć" in stored.to
    assert "code d'activation : ABCD2345" in stored.text
    assert stored.message["X-Envelope-To"] == "lukasz.zolc@example.fr, copie@example.fr"


def test_outbox_pages(app: Flask, client: FlaskClient) -> None:
    port = free_port()
    controller = start_outbox(app.config["ENT_CONSOLE_OUTBOX_DIR"], port=port)
    try:
        message = EmailMessage()
        message["From"] = "ne-pas-repondre@ent.lumiere.example.fr"
        message["To"] = "parent@example.fr"
        message["Subject"] = "Rappel : choisir un nouveau mot de passe"
        message.set_content("Rendez-vous sur « Mot de passe oublié ».")
        message.add_alternative(
            "<p>Rendez-vous sur <b>Mot de passe oublié</b>.</p><script>alert(1)</script>", subtype="html"
        )
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message)
    finally:
        controller.stop()

    assert client.get("/outbox").status_code == 302  # login first
    _login(client, "admin.ent")  # an address of no account: super admins only
    html = client.get("/outbox").get_data(as_text=True)
    assert "parent@example.fr" in html and "Rappel : choisir un nouveau mot de passe" in html
    link = re.search(r'href="(/outbox/[^"]+\.eml)"', html)
    assert link
    page = client.get(link.group(1)).get_data(as_text=True)
    assert "Rendez-vous sur « Mot de passe oublié »." in page
    assert "<script>alert(1)</script>" not in page  # the HTML part is escaped into a sandbox
    assert 'sandbox srcdoc="' in page

    assert client.get("/outbox/..%2Finstance%2Fsecret_key").status_code == 404
    missing = client.get("/outbox/20260101T000000-000000-1.eml")
    assert missing.status_code == 404 and "Page introuvable" in missing.get_data(as_text=True)

    response = client.post("/outbox/vider", follow_redirects=True)
    assert "1 message(s) supprimé(s)" in response.get_data(as_text=True)
    assert list_messages(app.config["ENT_CONSOLE_OUTBOX_DIR"]) == []


# -- the outbox holds activation codes: each admin reads their school's messages -------------------


@dataclass(frozen=True)
class _Parent:
    courriel: str
    code: str


def _parent(school_type: str) -> _Parent:
    """A parent of the school with an email address and an activation code."""
    row = db.session.execute(
        sa.select(Utilisateur.courriel, Utilisateur.code_activation)
        .join(Etablissement, Utilisateur.etablissement_id == Etablissement.id)
        .where(
            Etablissement.type == school_type,
            Utilisateur.profil == "Relative",
            Utilisateur.courriel.is_not(None),
            Utilisateur.code_activation.is_not(None),
        )
        .order_by(Utilisateur.id)
        .limit(1)
    ).one()
    return _Parent(*row)


def _send(port: int, to_addrs: list[str], subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "ENT Lumière <ne-pas-repondre@ent.lumiere.example.fr>"
    message["To"] = ", ".join(to_addrs)
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.send_message(message, to_addrs=to_addrs)


def _subjects(html: str) -> set[str]:
    return set(re.findall(r'<a href="/outbox/[^"]+\.eml">([^<]+)</a>', html))


EVERY_SUBJECT = {
    "Code école",
    "Code école, adresse en capitales",
    "Code collège",
    "Deux établissements",
    "Adresse inconnue",
    "Exemple du super administrateur",
}


def test_outbox_shows_a_local_admin_only_the_messages_of_their_school(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        ecole, college = _parent("école"), _parent("collège")
    port = free_port()
    controller = start_console_outbox(app, port=port)  # as `serve` starts it
    try:
        _send(port, [ecole.courriel], "Code école", f"code d'activation : {ecole.code}")
        _send(port, [ecole.courriel.upper()], "Code école, adresse en capitales", "rappel")
        _send(port, [college.courriel], "Code collège", f"code d'activation : {college.code}")
        _send(port, [ecole.courriel, college.courriel], "Deux établissements", f"{ecole.code} {college.code}")
        _send(port, ["inconnu@example.org"], "Adresse inconnue", "code d'activation : ZZZZ2345")
        _send(port, ["admin.ent@ent.lumiere.example.fr"], "Exemple du super administrateur", college.code)
    finally:
        controller.stop()
    outbox_dir = app.config["ENT_CONSOLE_OUTBOX_DIR"]
    names = {message.subject: message.name for message in list_messages(outbox_dir)}
    assert set(names) == EVERY_SUBJECT

    _login(client, "adml.ecole")
    html = client.get("/outbox").get_data(as_text=True)
    assert _subjects(html) == {"Code école", "Code école, adresse en capitales"}
    assert "2 message(s)" in html and college.code not in html and college.courriel not in html
    assert "2 message(s) reçu(s)" in client.get("/").get_data(as_text=True)
    page = client.get(f"/outbox/{names['Code école']}").get_data(as_text=True)
    assert ecole.code in page and "École élémentaire Jules Ferry" in page
    for subject in EVERY_SUBJECT - {"Code école", "Code école, adresse en capitales"}:
        response = client.get(f"/outbox/{names[subject]}")  # its name does not open it
        text = response.get_data(as_text=True)
        assert response.status_code == 404 and "Page introuvable" in text and college.code not in text
    client.post("/logout")

    _login(client, "adml.college")
    html = client.get("/outbox").get_data(as_text=True)
    assert _subjects(html) == {"Code collège"} and "1 message(s)" in html and ecole.code not in html
    client.post("/logout")

    _login(client, "admin.ent")
    html = client.get("/outbox").get_data(as_text=True)
    assert _subjects(html) == EVERY_SUBJECT and "6 message(s)" in html
    assert "<td>Collège Victor Hugo</td>" in html and "<td>aucun</td>" in html
    client.post("/logout")

    # Emptying the outbox, a local admin removes the messages of their school only.
    _login(client, "adml.ecole")
    response = client.post("/outbox/vider", follow_redirects=True)
    assert "2 message(s) supprimé(s)" in response.get_data(as_text=True)
    assert {m.subject for m in list_messages(outbox_dir)} == EVERY_SUBJECT - {
        "Code école",
        "Code école, adresse en capitales",
    }


def test_mail_from_the_publipostage_page_reaches_only_its_schools_outbox(tmp_path: Path) -> None:
    port = free_port()
    app = create_app(
        _config(
            MAIL_PORT=port,
            MAIL_SUPPRESS_SEND=False,
            PUBLIPOSTAGE_JOB_BACKEND="eager",
            ENT_CONSOLE_OUTBOX_DIR=str(tmp_path / "outbox"),
        ),
        instance_path=tmp_path / "instance",
    )
    with app.app_context():
        seed_database(db.session, seed=5)
        db.session.commit()
        Publipostage.create_tables(app)
        classe = db.session.scalar(sa.select(Classe.id).where(Classe.nom == "6eA"))
    with app.test_request_context():
        send_url = app.url_for("publipostage.mail_send", profile="Relative", email="with", **{"class": classe})
        sample_url = app.url_for("publipostage.mail_sample", profile="Relative", email="with")
    client = app.test_client()
    controller = start_console_outbox(app)
    try:
        _login(client, "adml.college")  # a campaign to the parents of 6eA
        assert client.post(send_url).status_code == 303
        client.post("/logout")
        _login(client, "adml.ecole")  # a sample to herself, with a parent's letter
        assert client.post(sample_url).status_code == 303
    finally:
        controller.stop()
    messages = list_messages(tmp_path / "outbox")
    sent = sum(1 for m in messages if "helene.marchand" not in m.to)
    assert sent > 20 and len(messages) == sent + 1

    html = client.get("/outbox").get_data(as_text=True)
    assert "1 message(s)" in html and "helene.marchand@ac-lumiere.example.fr" in html
    client.post("/logout")
    _login(client, "adml.college")
    html = client.get("/outbox").get_data(as_text=True)
    assert f"{sent} message(s)" in html and "helene.marchand" not in html


def test_a_message_belongs_to_a_school_only_if_all_its_recipients_do(app: Flask) -> None:
    school_of = school_of_recipients(app)
    with app.app_context():
        ecole, college = _parent("école"), _parent("collège")
        uai = db.session.scalar(sa.select(Etablissement.uai).where(Etablissement.type == "école"))
        helene = "helene.marchand@ac-lumiere.example.fr"  # adml.ecole: her own sample is hers
        assert school_of([ecole.courriel]) == school_of([f" {ecole.courriel.upper()} "]) == uai
        assert school_of([ecole.courriel, helene]) == uai
        assert school_of([ecole.courriel, college.courriel]) is None
        assert school_of([ecole.courriel, "inconnu@example.org"]) is None
        assert school_of(["admin.ent@ent.lumiere.example.fr"]) is None
        assert school_of([]) is None
        # A super admin attached to the school stays hidden from its local admin.
        admin = db.session.scalar(sa.select(Utilisateur).where(Utilisateur.login == "admin.ent"))
        admin.etablissement_id = db.session.scalar(sa.select(Etablissement.id).where(Etablissement.uai == uai))
        # One address on accounts of two schools: the message cannot say whose it is.
        other = db.session.scalar(
            sa.select(Utilisateur).where(Utilisateur.courriel == college.courriel)
        )
        other.courriel = ecole.courriel.upper()
        db.session.commit()
        assert school_of(["admin.ent@ent.lumiere.example.fr"]) is None
        assert school_of([ecole.courriel]) is None


def test_a_message_stored_while_the_directory_fails_is_for_super_admins_only(tmp_path: Path) -> None:
    def broken(addresses: Any) -> str:
        raise RuntimeError("base injoignable")

    port = free_port()
    controller = start_outbox(tmp_path / "outbox", port=port, school_of=broken)
    try:
        _send(port, ["parent@example.fr"], "Code", "code d'activation : ABCD2345")
    finally:
        controller.stop()
    [stored] = list_messages(tmp_path / "outbox")
    assert stored.school is None and stored.subject == "Code"
    assert list_messages(tmp_path / "outbox", schools={"0370001A"}) == []


# -- the demo's ports ------------------------------------------------------------------------


def test_demo_ports_come_from_the_environment(tmp_path: Path) -> None:
    with production_console(tmp_path) as console:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'ent_console.sqlite3'}")
        with engine.connect() as connection:
            address = connection.scalar(sa.text("SELECT courriel FROM utilisateur WHERE login = 'adml.ecole'"))
        engine.dispose()
        assert "Connexion" in ConsoleSession(console.port).get("/login").text
        _send(console.smtp_port, [address], "Exemple", "code d'activation : ABCD2345")
    assert f"Console : http://127.0.0.1:{console.port}/" in console.banner
    assert f"SMTP    : 127.0.0.1:{console.smtp_port}," in console.banner
    # Received by the demo's outbox, tied to the école of adml.ecole.
    [stored] = (tmp_path / "outbox").glob("*.eml")
    assert stored.name.endswith(".0370001A.eml")


def test_the_production_server_serves_previews_pdf_runs_and_mail(tmp_path: Path) -> None:
    """``make demo``'s gunicorn: several processes, each request on a new connection
    (any of them answers); a PDF run started by one is followed and downloaded
    through the others, a campaign reaches the one outbox."""
    with production_console(tmp_path, workers=3) as console:
        assert "gunicorn, 3 processus" in console.banner
        admin = ConsoleSession(console.port, keep_alive=False)
        admin.login("adml.ecole")
        preview = admin.get(f"{PUBLIPOSTAGE}/preview?profile=Teacher")
        assert preview.status == 200 and "Identifiant" in preview.text

        # 474 parents: above PDF_SYNC_LIMIT, a background run.
        started = admin.post(f"{PUBLIPOSTAGE}/pdf?profile=Relative", {"template": "cards"}, token_from=f"{PUBLIPOSTAGE}/?profile=Relative")
        assert started.status == 303, started.text[:500]
        job = started.headers["location"].rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + 120
        while (status := json.loads(admin.get(f"{PUBLIPOSTAGE}/pdf/jobs/{job}/status").body))["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        assert status["state"] == "done", status
        download = admin.get(status["download_url"])
        assert download.status == 200 and download.headers["content-type"] == "application/pdf"
        assert len(PdfReader(io.BytesIO(download.body)).pages) == status["pages_total"] >= 50

        # The école's teachers with an email: the campaign goes through the outbox process.
        sent = admin.post(f"{PUBLIPOSTAGE}/mail/send?profile=Teacher&email=with", {},
                          token_from=f"{PUBLIPOSTAGE}/mail?profile=Teacher&email=with")
        assert sent.status == 303, sent.text[:500]
        campaign = sent.headers["location"].rstrip("/").rsplit("/", 1)[-1]
        deadline = time.monotonic() + 60
        while (status := json.loads(admin.get(f"{PUBLIPOSTAGE}/mail/campaigns/{campaign}/status").body))["remaining"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        assert status["sent"] > 0 and status["failed"] == 0, status
    stored = list_messages(console.outbox)
    assert len(stored) == status["sent"] and all(message.school == "0370001A" for message in stored)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ENT_CONSOLE_PORT", "abc"), ("ENT_CONSOLE_SMTP_PORT", "99999"), ("ENT_CONSOLE_PORT", "0")],
)
def test_a_wrong_port_is_refused_in_french(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv("ENT_CONSOLE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv(variable, value)
    assert serve.main() == 2
    error = capsys.readouterr().err
    assert f"{variable} doit être un numéro de port entre 1 et 65535, pas « {value} »." in error


def test_admins_are_named_as_people_know_them(client: FlaskClient) -> None:
    """Hélène is not "Administrateur local"; the journal names her, not "user:10"."""
    html = _login(client, "adml.ecole").get_data(as_text=True)
    assert "Administration locale · École élémentaire Jules Ferry" in html
    assert "Administrateur local" not in html
    assert client.get("/imports-exports/publipostage/export.csv").status_code == 200
    journal = client.get("/imports-exports/publipostage/journal").get_data(as_text=True)
    assert "Hélène Marchand (adml.ecole)" in journal and "user:" not in journal
