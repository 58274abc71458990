"""The demo data generator and the BE1D import of the example console."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from examples.ent_console import create_app
from examples.ent_console.models import (
    Classe,
    Etablissement,
    Utilisateur,
    db,
    lien_parent_enfant,
    utilisateur_classe,
)
from examples.ent_console.seed import (
    BE1D_SCHOOL_NAME,
    CODE_ALPHABET,
    ascii_fold,
    import_be1d,
    login_base,
    main,
    seed_database,
)

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "entcore-samples"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / "be1d_emile_zola_eleves.csv").is_file(), reason="BE1D fixtures absent"
)


def _make_app(tmp_path: Path) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": "sqlite://",
            "WTF_CSRF_ENABLED": False,
            "SECRET_KEY": "test",
        },
        instance_path=tmp_path / "instance",
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = _make_app(tmp_path)
    with app.app_context():
        yield app


@pytest.fixture
def seeded(app: Flask) -> Flask:
    seed_database(db.session, seed=7)
    db.session.commit()
    return app


def _school(nom: str) -> Etablissement:
    school = db.session.scalar(sa.select(Etablissement).where(Etablissement.nom == nom))
    assert school is not None, nom
    return school


def _count(*conditions: sa.ColumnElement[bool]) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Utilisateur).where(*conditions)) or 0


def _profiles(school: Etablissement) -> Counter[str]:
    rows = db.session.execute(
        sa.select(Utilisateur.profil, sa.func.count())
        .where(Utilisateur.etablissement_id == school.id)
        .group_by(Utilisateur.profil)
    )
    return Counter({profil: number for profil, number in rows})


# -- helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Żółć", "Zolc"),
        ("Œillet", "OEillet"),
        ("Nguyễn Thị Ánh", "Nguyen Thi Anh"),
        ("Şükrü İnce", "Sukru Ince"),
        ("Dvořák", "Dvorak"),
        ("Ștefan", "Stefan"),
        ("Größmann", "Grossmann"),
        ("Ødegård", "Odegard"),
    ],
)
def test_ascii_fold(text: str, folded: str) -> None:
    assert ascii_fold(text) == folded


def test_login_base() -> None:
    assert login_base("Jean-Rémi", "D'Alembert") == "jean-remi.dalembert"
    assert login_base("Aminata", "N’Diaye") == "aminata.ndiaye"
    assert login_base("Thị Ánh", "Nguyễn") == "thi-anh.nguyen"
    assert login_base("José", "Muñoz García") == "jose.munoz-garcia"
    assert login_base("Бо", "Ли") == "x.x"  # never an empty half


# -- generated schools ---------------------------------------------------------------


def test_two_schools_with_expected_shape(seeded: Flask) -> None:
    ecole = _school("École élémentaire Jules Ferry")
    college = _school("Collège Victor Hugo")
    assert (ecole.type, college.type) == ("école", "collège")

    ecole_counts, college_counts = _profiles(ecole), _profiles(college)
    assert ecole_counts["Student"] == 250
    assert 440 <= ecole_counts["Relative"] <= 500
    assert ecole_counts["Teacher"] == 15
    assert college_counts["Student"] == 600
    assert 930 <= college_counts["Relative"] <= 1070
    assert college_counts["Teacher"] == 60
    assert college_counts["Personnel"] >= 15 and college_counts["Guest"] >= 2

    ecole_classes = [c.nom for c in ecole.classes]
    for level in ("TPS", "PS", "MS", "GS", "CP", "CE1", "CE2", "CM1", "CM2"):
        assert any(re.fullmatch(rf"{level} de (Mme|M\.) .+", nom) for nom in ecole_classes), level
    assert sorted(c.nom for c in college.classes) == sorted(
        f"{level}{section}" for level in ("6e", "5e", "4e", "3e") for section in "ABCD"
    )


def test_every_pupil_in_one_class_with_parents(seeded: Flask) -> None:
    pupils = sa.select(Utilisateur.id).where(Utilisateur.profil == "Student")
    per_pupil = Counter(
        db.session.scalars(
            sa.select(utilisateur_classe.c.utilisateur_id).where(
                utilisateur_classe.c.utilisateur_id.in_(pupils)
            )
        )
    )
    assert len(per_pupil) == _count(Utilisateur.profil == "Student")
    assert set(per_pupil.values()) == {1}
    orphans = _count(Utilisateur.profil == "Student", ~Utilisateur.parents.any())
    assert orphans == 0


def test_parents_have_one_to_three_children_sometimes_in_several_classes(seeded: Flask) -> None:
    children = Counter(db.session.scalars(sa.select(lien_parent_enfant.c.parent_id)))
    assert len(children) == _count(Utilisateur.profil == "Relative")
    assert set(children.values()) == {1, 2, 3}

    classes_per_parent = db.session.execute(
        sa.select(lien_parent_enfant.c.parent_id, sa.func.count(sa.distinct(utilisateur_classe.c.classe_id)))
        .join(utilisateur_classe, utilisateur_classe.c.utilisateur_id == lien_parent_enfant.c.enfant_id)
        .group_by(lien_parent_enfant.c.parent_id)
    ).all()
    assert sum(1 for _, n in classes_per_parent if n >= 2) >= 20
    assert any(n == 3 for _, n in classes_per_parent)

    # A parent belongs to the school of the children.
    mismatched = db.session.execute(
        sa.text(
            "SELECT COUNT(*) FROM lien_parent_enfant l JOIN utilisateur p ON p.id = l.parent_id "
            "JOIN utilisateur e ON e.id = l.enfant_id WHERE p.etablissement_id != e.etablissement_id"
        )
    ).scalar()
    assert mismatched == 0


def test_activation_codes_and_emails(seeded: Flask) -> None:
    total = _count()
    activated = _count(Utilisateur.code_activation.is_(None))
    assert 0.25 <= activated / total <= 0.35

    codes: list[str] = list(
        db.session.scalars(
            sa.select(Utilisateur.code_activation).where(Utilisateur.code_activation.is_not(None))
        )
    )
    assert all(len(code) == 8 and set(code) <= set(CODE_ALPHABET) for code in codes)
    assert not set("".join(codes)) & set("0O1lI")

    assert _count(Utilisateur.profil == "Teacher", Utilisateur.courriel.is_(None)) == 0
    parents = _count(Utilisateur.profil == "Relative")
    with_email = _count(Utilisateur.profil == "Relative", Utilisateur.courriel.is_not(None))
    assert 0.5 <= with_email / parents <= 0.7
    emails: list[str] = list(
        db.session.scalars(sa.select(Utilisateur.courriel).where(Utilisateur.courriel.is_not(None)))
    )
    assert len(emails) == len(set(emails))
    assert all(re.fullmatch(r"[a-z0-9.-]+@[a-z0-9.-]+\.[a-z]+", e) for e in emails)

    assert _count(Utilisateur.profil == "Relative", Utilisateur.adresse_cp_ville.is_(None)) == 0


def test_logins_ascii_unique(seeded: Flask) -> None:
    logins = list(db.session.scalars(sa.select(Utilisateur.login)))
    assert len(logins) == len(set(logins))
    assert all(re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", login) for login in logins)
    assert any(re.search(r"[0-9]$", login) for login in logins)  # homonyms got a number


def test_names_with_special_letters(seeded: Flask) -> None:
    names = " ".join(
        f"{p} {n}" for p, n in db.session.execute(sa.select(Utilisateur.prenom, Utilisateur.nom))
    )
    for text in (
        "Nguyễn",
        "Thị Ánh",
        "Łukasz",
        "Żółć",
        "Şükrü",
        "İnce",
        "Dvořák",
        "Ștefan",
        "Œillet",
        "Cœur",
        "D'Alembert",
        "N’Diaye",
        "-",
    ):
        assert text in names, text
    class_names = " ".join(db.session.scalars(sa.select(Classe.nom)))
    assert "CE2 de Mme Rousseau" in class_names


def test_creation_dates_span_two_school_years(seeded: Flask) -> None:
    first = db.session.scalar(sa.select(sa.func.min(Utilisateur.date_creation)))
    last = db.session.scalar(sa.select(sa.func.max(Utilisateur.date_creation)))
    assert first is not None and last is not None and first.tzinfo is None
    assert first < datetime(2025, 9, 15) and last > datetime(2026, 9, 1)
    second_year = _count(Utilisateur.date_creation >= datetime(2026, 8, 1))
    assert 0.15 < second_year / _count() < 0.6


def test_demo_accounts_and_local_admins(seeded: Flask) -> None:
    accounts = {
        u.login: u
        for u in db.session.scalars(
            sa.select(Utilisateur).where(
                Utilisateur.login.in_(["admin.ent", "adml.ecole", "adml.college", "prof.ecole"])
            )
        )
    }
    assert set(accounts) == {"admin.ent", "adml.ecole", "adml.college", "prof.ecole"}
    assert all(u.verifier_mot_de_passe("demo") and u.code_activation is None for u in accounts.values())
    assert accounts["admin.ent"].is_super_admin and accounts["admin.ent"].etablissement_id is None
    ecole, college = accounts["adml.ecole"].etablissement, accounts["adml.college"].etablissement
    assert (
        ecole is not None and ecole.nom == "École élémentaire Jules Ferry" and accounts["adml.ecole"].is_adml
    )
    assert college is not None and college.nom == "Collège Victor Hugo" and accounts["adml.college"].is_adml
    assert not accounts["prof.ecole"].is_adml and accounts["prof.ecole"].profil == "Teacher"
    assert [c.nom for c in accounts["prof.ecole"].classes] == ["CE2 de Mme Rousseau"]
    assert 4 <= _count(Utilisateur.is_adml.is_(True)) <= 8
    assert _count(Utilisateur.is_super_admin.is_(True)) == 1


def _snapshot() -> list[tuple[str, str | None, str | None]]:
    return list(
        db.session.execute(
            sa.select(Utilisateur.login, Utilisateur.code_activation, Utilisateur.courriel).order_by(
                Utilisateur.id
            )
        ).tuples()
    )


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    snapshots = []
    for index, seed in enumerate((11, 11, 12)):
        app = _make_app(tmp_path / str(index))
        with app.app_context():
            seed_database(db.session, seed=seed)
            db.session.commit()
            snapshots.append(_snapshot())
    assert snapshots[0] == snapshots[1]
    assert snapshots[0] != snapshots[2]


def test_seed_is_fast(app: Flask) -> None:
    started = time.perf_counter()
    seed_database(db.session)
    db.session.commit()
    assert time.perf_counter() - started < 10


# -- BE1D import ---------------------------------------------------------------------


@needs_fixtures
def test_import_be1d(app: Flask) -> None:
    school = import_be1d(db.session, FIXTURES)
    db.session.commit()
    assert school.nom == BE1D_SCHOOL_NAME and school.type == "école"
    counts = _profiles(school)
    assert counts == Counter({"Student": 247, "Teacher": 14, "Relative": 469})

    assert sorted(c.nom for c in school.classes) == sorted(
        ["TPS", "PS", "MS", "GS", "CP", "CE1", "CE2", "CM1", "CM2", "CLIS"]
    )
    mathilde = db.session.scalar(
        sa.select(Utilisateur).where(Utilisateur.nom == "BELMAHDI", Utilisateur.prenom == "Mathilde")
    )
    assert mathilde is not None and [c.nom for c in mathilde.classes] == ["CE1"]

    # Every parent row names 1 to 3 children, all found: 450 + 16 × 2 + 3 × 3 links.
    links = Counter(db.session.scalars(sa.select(lien_parent_enfant.c.parent_id)))
    assert len(links) == 469 and sum(links.values()) == 491
    assert Counter(links.values()) == Counter({1: 450, 2: 16, 3: 3})
    corinne = db.session.scalar(
        sa.select(Utilisateur).where(Utilisateur.nom == "ADJIBEL", Utilisateur.prenom == "Corinne")
    )
    assert corinne is not None and corinne.adresse_cp_ville == "61000 Alençon"
    assert sorted((e.prenom, e.nom, e.classes[0].nom) for e in corinne.enfants) == [
        ("Alexandre", "MARTINEZ", "CE2"),
        ("Cassandra", "DRAHONNET", "CP"),
        ("Marjolaine", "MARTINEZ", "CM1"),
    ]
    assert (
        _count(
            Utilisateur.etablissement_id == school.id,
            Utilisateur.profil == "Student",
            ~Utilisateur.parents.any(),
        )
        == 0
    )

    # Teachers in their class; the head teacher administers the school.
    teachers = list(
        db.session.scalars(
            sa.select(Utilisateur).where(
                Utilisateur.etablissement_id == school.id, Utilisateur.profil == "Teacher"
            )
        )
    )
    assert all(len(t.classes) == 1 for t in teachers)
    assert [t.nom for t in teachers if t.is_adml] == ["PALLISE"]

    # Fresh accounts: logins and activation codes for everybody.
    accounts = list(
        db.session.scalars(sa.select(Utilisateur).where(Utilisateur.etablissement_id == school.id))
    )
    assert all(a.code_activation and len(a.code_activation) == 8 for a in accounts)
    assert all(re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", a.login) for a in accounts)
    assert len({a.login for a in accounts}) == len(accounts)


@needs_fixtures
def test_import_be1d_next_to_the_generated_schools(seeded: Flask) -> None:
    before = _count()
    import_be1d(db.session, FIXTURES)
    db.session.commit()
    assert _count() == before + 247 + 14 + 469
    logins = list(db.session.scalars(sa.select(Utilisateur.login)))
    assert len(logins) == len(set(logins))
    # The new accounts are usable by the ORM afterwards (ids did not collide).
    db.session.add(Classe(nom="CM2 bis", niveau="CM2", etablissement_id=_school(BE1D_SCHOOL_NAME).id))
    db.session.commit()


@needs_fixtures
def test_activation_codes_unique_across_schools(app: Flask) -> None:
    # The generated schools and the import use the same seed, as `make demo` does.
    seed_database(db.session)
    import_be1d(db.session, FIXTURES)
    db.session.commit()
    codes = list(
        db.session.scalars(
            sa.select(Utilisateur.code_activation).where(Utilisateur.code_activation.is_not(None))
        )
    )
    assert len(codes) > 2000
    assert [code for code, n in Counter(codes).items() if n > 1] == []


def test_the_database_refuses_a_shared_activation_code(seeded: Flask) -> None:
    code = db.session.scalar(sa.select(Utilisateur.code_activation).where(Utilisateur.login == "adml.ecole"))
    other = db.session.scalar(
        sa.select(Utilisateur).where(Utilisateur.code_activation.is_not(None)).limit(1)
    )
    assert other is not None
    other.code_activation = "ABCD2345"
    db.session.commit()
    another = db.session.scalar(
        sa.select(Utilisateur).where(Utilisateur.code_activation.is_not(None), Utilisateur.id != other.id).limit(1)
    )
    assert code is None and another is not None  # activated accounts all share NULL
    another.code_activation = "ABCD2345"
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_import_be1d_missing_files(app: Flask, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        import_be1d(db.session, tmp_path)


# -- command line ----------------------------------------------------------------------


def test_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENT_CONSOLE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.delenv("ENT_CONSOLE_DATABASE_URL", raising=False)
    monkeypatch.delenv("ENT_CONSOLE_OUTBOX_DIR", raising=False)  # --reset empties the outbox
    arguments = ["--reset", "--seed", "3"]
    if (FIXTURES / "be1d_emile_zola_eleves.csv").is_file():
        arguments += ["--import-be1d", str(FIXTURES)]
    assert main(arguments) == 0
    assert (tmp_path / "ent_console.sqlite3").is_file()
    first = capsys.readouterr().out
    assert "Collège Victor Hugo" in first and "adml.ecole" in first
    # The rentrée under way: the école's admin printed two classes' letters.
    assert "Historique : lettres des classes" in first and "imprimées par adml.ecole" in first

    assert main([]) == 0  # a second run adds nothing
    assert "déjà" in capsys.readouterr().out
    assert main(["--reset", "--seed", "3"]) == 0
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ent_console.sqlite3'}")
    with engine.connect() as connection:
        schools = connection.scalar(sa.text("SELECT COUNT(*) FROM etablissement"))
        runs = connection.execute(sa.text("SELECT kind, actor_name, scope_key, state FROM publipostage_run")).all()
        items, distributed = connection.execute(
            sa.text("SELECT COUNT(*), COUNT(distributed_at) FROM publipostage_run_item")
        ).one()
    engine.dispose()
    assert schools == 2
    # In the admin's perimeter and journal, as from the page; the sheets handed out.
    assert [(kind, scope, state) for kind, _name, scope, state in runs] == [("pdf", "etab:1", "done")]
    assert "(adml.ecole)" in runs[0][1]
    assert items > 50 and distributed > items * 0.9


# -- `make demo` ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _make_demo_seed(tmp_path: Path, *variables: str) -> None:
    """Run the seed command of `make demo` (with this Python), on a database in tmp_path."""
    if shutil.which("make") is None:
        pytest.skip("make absent")
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo", f"PY={sys.executable}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    [command] = [line for line in dry_run.stdout.splitlines() if "examples.ent_console.seed" in line]
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("ENT_CONSOLE_")
    }
    environment["ENT_CONSOLE_INSTANCE_PATH"] = str(tmp_path)
    subprocess.run(shlex.split(command), cwd=ROOT, env=environment, check=True, capture_output=True)


def _query(tmp_path: Path, sql: str) -> list[Any]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'ent_console.sqlite3'}")
    try:
        with engine.begin() as connection:
            result = connection.execute(sa.text(sql))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


@needs_fixtures
def test_make_demo_gives_unique_activation_codes(tmp_path: Path) -> None:
    _make_demo_seed(tmp_path)
    assert _query(tmp_path, "SELECT COUNT(*) FROM etablissement") == [(3,)]
    assert (
        _query(
            tmp_path,
            "SELECT code_activation FROM utilisateur WHERE code_activation IS NOT NULL "
            "GROUP BY code_activation HAVING COUNT(*) > 1",
        )
        == []
    )


def test_make_demo_reseeds_unless_asked_to_keep_the_data(tmp_path: Path) -> None:
    _make_demo_seed(tmp_path)
    _query(tmp_path, "UPDATE utilisateur SET prenom = 'Témoin' WHERE login = 'adml.ecole'")
    outbox = tmp_path / "outbox"
    outbox.mkdir(exist_ok=True)
    message = outbox / "20260903T122100-000000-1.eml"
    message.write_bytes(b"Subject: test\r\n\r\nbody\r\n")

    _make_demo_seed(tmp_path, "DEMO_KEEP=1")
    assert _query(tmp_path, "SELECT prenom FROM utilisateur WHERE login = 'adml.ecole'") == [("Témoin",)]
    assert message.is_file()

    _make_demo_seed(tmp_path)  # reseeds: the database and the outbox start again
    assert _query(tmp_path, "SELECT prenom FROM utilisateur WHERE login = 'adml.ecole'") == [("Hélène",)]
    assert not message.exists()
