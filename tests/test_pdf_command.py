"""``flask publipostage pdf``, through Click's runner, the files read back: the
page's PDF from the shell (letters, cards 8 to a page, a PDF per class in a
folder or a ZIP), journalled as the actor given and recorded in the history as
a download is; bad options, a class outside the perimeter, an empty selection
and an output that cannot be written refused in French, with nothing started
and no file left."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage import Scope
from flask_publipostage.audit import AuditEntry
from flask_publipostage.runs import files
from flask_publipostage.runs.models import DONE, Run, RunItem
from flask_publipostage.state import state

from .hosts import Division, Personne, add_person, db
from .test_pdf_bundles import CE2, CM1, CP, EVERY_CLASS
from .test_pdf_support import count_word, pages_text

#: The students of tests/school.py, by the class their file is named after.
STUDENTS = {
    CP: {"zoe.abel"}, CM1: {"elodie.zidane"}, CE2: {"lucas.etienne"}, "Sans classe": {"nina.sansclasse"},
    "CP de l'école B": {"bob.b"},
}


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["publipostage", "pdf", *args])


def logins_in(text: str, logins: set[str]) -> set[str]:
    return {login for login in logins if count_word(text, login)}


def runs() -> list[Run]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(Run).order_by(Run.id)).scalars())


def journal() -> list[tuple[str, str, str, int]]:
    rows = db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.id)).scalars()
    return [(row.action, row.actor, row.scope_key, row.count) for row in rows]


def stored_files(app: Flask) -> list[str]:
    return sorted(p.name for p in files.storage_dir(app).iterdir())


def restrict_to_school_a(app: Flask) -> None:
    """The host's perimeters for the command line: ``ecole:A``, its accounts and classes."""

    def cli_scope(actor: str, key: str) -> Scope | None:
        if key == "*":
            return Scope(actor=actor)
        if key != "ecole:A":
            return None
        return Scope(actor=actor, key=key, users=sa.and_(Personne.ecole == "A", Personne.super_admin.is_(False)),
                     classes=Division.ecole == "A", school_name="École A")

    state(app).extras["cli_scope"] = cli_scope


def test_letters_of_a_class_as_the_actor_given(app_ctx: Flask, school: Any, tmp_path: Path) -> None:
    restrict_to_school_a(app_ctx)
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "cp.pdf"
    result = invoke(app_ctx, "--class", str(school.cp.ref), "--as-actor", "rentree", "--scope-key", "ecole:A",
                    "--output", str(target))
    assert result.exit_code == 0, result.output
    assert f"Fichier écrit : {target} (3 pages, 3 comptes)." in result.output
    texts = pages_text(target.read_bytes())
    # A letter each: the class's pupil, its teacher, the pupil's parent.
    assert sorted(len(logins_in(page, EVERY_CLASS[CP])) for page in texts) == [1, 1, 1]
    assert logins_in(" ".join(texts), EVERY_CLASS[CP]) == EVERY_CLASS[CP]
    assert "CODE-zoe.abel" in " ".join(texts) and "Zoé Abel" in " ".join(texts)
    assert "lucas.etienne" not in " ".join(texts)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # it holds codes
    assert [p.name for p in target.parent.iterdir()] == ["cp.pdf"]

    (run,) = runs()
    assert (run.kind, run.actor, run.scope_key, run.state) == ("pdf", "rentree", "ecole:A", DONE)
    assert run.file_name.startswith("publipostage_ecole-a_tous-profils_cp-de-mme-emery_lettres_")
    # Downloaded once, as from the page: journalled, the stored file gone, the sheets distributed.
    assert journal() == [("pdf", "rentree", "ecole:A", 3), ("download", "rentree", "ecole:A", 3)]
    assert run.downloaded_at is not None and run.file_path is None and stored_files(app_ctx) == []
    items = db.session.execute(sa.select(RunItem).where(RunItem.run_id == run.id)).scalars().all()
    assert len(items) == 3 and all(i.state == "printed" and i.distributed_at is not None for i in items)


def test_cards_eight_to_a_page(app_ctx: Flask, school: Any, tmp_path: Path) -> None:
    extra = {f"eleve.{n:02d}" for n in range(7)}
    for login in sorted(extra):
        add_person(login, "Élève", login.split(".")[1], "ELEVE", divisions=[school.cp])
    db.session.commit()
    target = tmp_path / "cartes.pdf"
    result = invoke(app_ctx, "--profile", "Student", "--template", "cards", "--output", str(target))
    assert result.exit_code == 0, result.output
    students = extra | set().union(*STUDENTS.values())
    texts = pages_text(target.read_bytes())
    assert len(texts) == 2 and "12 comptes" in result.output
    assert [len(logins_in(page, students)) for page in texts] == [8, 4]
    assert logins_in(" ".join(texts), students) == students
    assert journal()[0][:2] == ("pdf", "cli") and db.session.execute(sa.select(AuditEntry.template)).scalars().first() == "cards"


def test_a_folder_gets_a_pdf_per_class(app_ctx: Flask, school: Any, tmp_path: Path) -> None:
    folder = tmp_path / "par-classe"
    # Not there yet: made, since the path ends with '/'; sorted by class without --sort.
    result = invoke(app_ctx, "--profile", "Student", "--output", f"{folder}/")
    assert result.exit_code == 0, result.output
    assert f"5 fichiers PDF écrits dans {folder}" in result.output
    written = {p.name: pages_text(p.read_bytes()) for p in folder.iterdir()}
    assert set(written) == {f"{label}.pdf" for label in STUDENTS}
    for label, logins in STUDENTS.items():
        assert logins_in(" ".join(written[f"{label}.pdf"]), set().union(*STUDENTS.values())) == logins
        assert f"  {label}.pdf" in result.output
    (run,) = runs()
    assert run.file_name.endswith(".zip") and run.downloaded_at is not None and stored_files(app_ctx) == []

    # A .zip: the same files, together.
    archive = tmp_path / "classes.zip"
    result = invoke(app_ctx, "--profile", "Student", "--sort", "class", "--every-class", "--output", str(archive))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(archive) as opened:
        assert set(opened.namelist()) == set(written)


def test_every_filter_is_an_option(app_ctx: Flask, school: Any, tmp_path: Path) -> None:
    target = tmp_path / "parents.pdf"
    result = invoke(app_ctx, "--profile", "Relative", "--activation", "inactive", "--email", "with",
                    "--local-admin", "exclude", "--created-since", "2025-01-01", "--sort", "class",
                    "--signoff", "--output", str(target))
    assert result.exit_code == 0, result.output
    texts = pages_text(target.read_bytes())
    # marie.abel only (paul.etienne is activated), opened by her class's sign-off sheet.
    assert logins_in(" ".join(texts), EVERY_CLASS[CP] | EVERY_CLASS[CE2]) == {"marie.abel"}
    assert texts[0].startswith("Liste d'émargement") and len(texts) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--activation", "maybe"], "Valeur invalide « maybe » pour le champ « Activation »."),
        (["--template", "poster"], "Modèle « poster » invalide : choisissez letter (1 par page) ou cards (8 par page)."),
        (["--created-since", "01/09/2025"], "Date invalide « 01/09/2025 »"),
        (["--postal", "--template", "cards"], "Le courrier postal demande le modèle « 1 par page »."),
        (["--every-class"], "Une liasse par classe demande un tri par classe"),
        (["--renew", "activated"], "Cette console n'émet pas de codes de renouvellement."),
        (["--profile", "Guest", "--email", "with"], "Aucun compte ne correspond à ces filtres : il n'y a rien à imprimer."),
        (["--scope-key", "ecole:B"], "Périmètre inconnu « ecole:B »."),
        (["--scope-key", "ecole:A", "--class", "{b_class}"], "Une des classes choisies est hors de votre périmètre."),
        (["--scope-key", "ecole:A", "--class", "{cp}", "--output", "{missing}/cp.pdf"], "son dossier n'existe pas"),
        (["--output", "{file}/"], "est un fichier, pas un dossier"),
    ],
)
def test_refused_in_french_with_nothing_started(
    app_ctx: Flask, school: Any, tmp_path: Path, args: list[str], message: str
) -> None:
    restrict_to_school_a(app_ctx)
    (tmp_path / "out").mkdir()
    (tmp_path / "a-file").write_text("")
    places = {"b_class": str(school.other_school_class.ref), "cp": str(school.cp.ref),
              "missing": str(tmp_path / "missing"), "file": str(tmp_path / "a-file")}
    args = [a.format(**places) for a in args]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "out" / "x.pdf")]
    result = invoke(app_ctx, *args)
    assert result.exit_code not in (0, None), result.output
    assert message in result.output, result.output
    assert runs() == [] and journal() == []
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "missing").exists()


def test_an_output_that_cannot_be_written_gives_the_file_back(app_ctx: Flask, school: Any, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes in a read-only folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = invoke(app_ctx, "--output", str(locked / "x.pdf"))
    finally:
        locked.chmod(0o700)
    assert result.exit_code == 1 and "permission refusée" in result.output, result.output
    assert runs() == [] and list(locked.iterdir()) == []


class TestInTheBackground:
    """A PDF larger than ``PDF_SYNC_LIMIT`` is prepared by the runner (a thread
    here, as in a console), the command following its pages until it is ready."""

    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"PUBLIPOSTAGE_JOB_BACKEND": "thread", "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 2,
                "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 2, "PUBLIPOSTAGE_PDF_WORKERS": 1}

    def test_followed_then_written(self, app_ctx: Flask, school: Any, tmp_path: Path) -> None:
        target = tmp_path / "tous.pdf"
        result = invoke(app_ctx, "--sort", "class", "--as-actor", "secretariat", "--output", str(target))
        assert result.exit_code == 0, result.output
        assert "Préparation du PDF" in result.output and "12 pages sur 12" in result.output
        texts = pages_text(target.read_bytes())
        every = set().union(*EVERY_CLASS.values()) | {"bob.b", "root.admin"}
        assert len(texts) == 12 and logins_in(" ".join(texts), every) == every
        (run,) = runs()
        assert (run.actor, run.state, run.file_path) == ("secretariat", DONE, None)
        assert [row[:2] for row in journal()] == [("pdf", "secretariat"), ("download", "secretariat")]


def test_a_copy_that_fails_leaves_no_file_and_gives_the_download_back(
    app_ctx: Flask, school: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    def disk_full(*_args: Any) -> None:
        raise OSError(28, "Plus d'espace disponible sur le périphérique")

    (tmp_path / "out").mkdir()
    with monkeypatch.context() as patched:
        patched.setattr(shutil, "copyfileobj", disk_full)
        result = invoke(app_ctx, "--profile", "Teacher", "--output", str(tmp_path / "out" / "profs.pdf"))
    assert result.exit_code == 1 and "Plus d'espace disponible" in result.output, result.output
    (run,) = runs()
    assert run.state == DONE and run.downloaded_at is None and run.file_path is not None
    assert list((tmp_path / "out").iterdir()) == []
    assert [row[0] for row in journal()] == ["pdf", "download"]  # the attempt, as an interrupted download is


@pytest.mark.parametrize("app_config", [{"PUBLIPOSTAGE_PDF_SYNC_LIMIT": 2}])
def test_interrupted_while_it_is_prepared_the_run_is_cancelled(
    app_ctx: Flask, school: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_publipostage.pdf import commands
    from flask_publipostage.runs import backends

    def interrupted(*_args: Any, **_kwargs: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(backends, "submit", lambda *_args, **_kwargs: None)  # queued, never driven
        patched.setattr(commands, "follow", interrupted)  # Ctrl+C while it is followed
        result = invoke(app_ctx, "--as-actor", "rentree", "--output", str(tmp_path / "x.pdf"))
    assert result.exit_code == 1 and "Aborted" in result.output, result.output
    (run,) = runs()
    assert run.state == "cancelled"
    assert [row[:2] for row in journal()] == [("pdf", "rentree"), ("cancel", "rentree")]
    assert not (tmp_path / "x.pdf").exists()


class TestOnCelery:
    """On Celery the workers prepare it (eager here); the command still waits for the file."""

    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        from .test_pdf_more import _eager_celery

        return {"PUBLIPOSTAGE_JOB_BACKEND": "celery", "PUBLIPOSTAGE_CELERY_APP": _eager_celery(),
                "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 2, "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 4}

    def test_written_from_the_workers_file(self, app_ctx: Flask, school: Any, tmp_path: Path) -> None:
        folder = tmp_path / "classes"
        folder.mkdir()
        result = invoke(app_ctx, "--profile", "Student", "--sort", "class", "--output", str(folder))
        assert result.exit_code == 0, result.output
        assert {p.name for p in folder.iterdir()} == {f"{label}.pdf" for label in STUDENTS}
        assert logins_in(pages_text((folder / f"{CE2}.pdf").read_bytes())[0], {"lucas.etienne"}) == {"lucas.etienne"}
