"""File names say what is inside: the school, the profiles, the classes (or all),
letters or cards, the date and time; ASCII, safe in a Content-Disposition header,
bounded. Read from the download headers: a PDF in the request, a background run,
the CSV export."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from flask_publipostage.csv_export import FILENAME_MAX

from .hosts import Division, add_person, db
from .test_pdf_support import URL, add_class_of, post_pdf

SAFE = re.compile(r'attachment; filename="([a-z0-9_-]+\.(?:pdf|csv|zip))"')
STAMP = re.compile(r"_(\d{4}-\d{2}-\d{2})_(\d{2})h(\d{2})\.(?:pdf|csv|zip)$")


def _name(response: Any) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    found = SAFE.fullmatch(response.headers["Content-Disposition"])
    assert found, response.headers["Content-Disposition"]
    name = found.group(1)
    assert len(name) <= FILENAME_MAX
    return name


def _check_time(name: str) -> str:
    """The name's date and time are now in Paris (not UTC); the name without them."""
    found = STAMP.search(name)
    assert found, name
    stamp = datetime.strptime(f"{found.group(1)} {found.group(2)}:{found.group(3)}", "%Y-%m-%d %H:%M")
    now = datetime.now(ZoneInfo("Europe/Paris")).replace(tzinfo=None)
    assert abs(now - stamp) < timedelta(minutes=2), (name, now)
    return name[: found.start()]


def test_pdf_in_the_request_names_its_content(app_ctx: Any, client: Any, school: Any) -> None:
    ref = f"class={school.cp.ref}&class={school.cm1.ref}"
    letters = _name(post_pdf(client, f"profile=Relative&{ref}"))
    assert _check_time(letters) == "publipostage_ecole-a_parents_cp-de-mme-emery_cm1-de-m-zola_lettres"
    cards = _name(post_pdf(client, "", template="cards"))
    assert _check_time(cards) == "publipostage_ecole-a_tous-profils_toutes-classes_cartes"
    grouped = _name(post_pdf(client, f"profile=Student&profile=Teacher&class={school.cp.ref}&sort=class", signoff="y"))
    assert _check_time(grouped) == "publipostage_ecole-a_enseignants-eleves_cp-de-mme-emery_lettres-avec-emargement"
    assert len({letters, cards, grouped}) == 3


def test_many_classes_are_counted_and_names_stay_bounded(app_ctx: Any, client: Any) -> None:
    classes = []
    for index in range(5):
        division, _people = add_class_of(f"Classe {index} " + "très longue " * 8, 1, prefix=f"c{index}x")
        classes.append(division)
    db.session.commit()
    query = "&".join(f"class={c.ref}" for c in classes)
    name = _name(post_pdf(client, query))
    assert _check_time(name) == "publipostage_ecole-a_tous-profils_5-classes_lettres"
    two = "&".join(f"class={c.ref}" for c in classes[:2])
    name = _name(post_pdf(client, two, template="cards"))
    assert _check_time(name) == "publipostage_ecole-a_tous-profils_classe-0-tres-longue_classe-1-tres-longue_cartes"


class TestHostileSchool:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"PUBLIPOSTAGE_SCHOOL_NAME": 'Lycée "Ünïcödé" \r\n; filename=x.exe 王 ' + "École " * 40}

    def test_super_admin_without_a_school_gets_the_configured_one_safely(self, app_ctx: Any, client: Any) -> None:
        cls = Division(libelle="王老师的班", ecole="A")  # a class name with no ASCII letter
        db.session.add(cls)
        add_person("wang", "Xiao", "Wang", "ELEVE", divisions=[cls])
        db.session.commit()
        name = _name(post_pdf(client, f"class={cls.ref}", "super"))
        head = _check_time(name)
        assert head.startswith("publipostage_lycee-unicode-filename-x-exe-ecole-ecole")
        assert head.endswith("_tous-profils_1-classe_lettres")


class TestBackground:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        return {"PUBLIPOSTAGE_PDF_SYNC_LIMIT": 3, "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 8}

    def test_background_run_names_its_file(self, app_ctx: Any, client: Any) -> None:
        division, _people = add_class_of("CE2 Bleu", 20, prefix="bg")
        db.session.commit()
        response = post_pdf(client, f"class={division.ref}&sort=class", template="cards", signoff="y")
        assert response.status_code == 303
        job = response.headers["Location"].rsplit("/", 1)[-1]
        page = client.get(f"{URL}/pdf/jobs/{job}", "adml_a").get_data(as_text=True)
        status = client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()
        assert status["state"] == "done", status
        name = _name(client.get(status["download_url"], "adml_a"))
        assert _check_time(name) == "publipostage_ecole-a_tous-profils_ce2-bleu_cartes-avec-emargement"
        assert name in page  # the job page shows it


def test_zip_of_one_pdf_per_class_names_its_content(app_ctx: Any, client: Any, school: Any) -> None:
    response = post_pdf(client, f"class={school.cp.ref}&class={school.cm1.ref}&sort=class", template="cards",
                        every_class="y", zip="y")
    assert response.status_code == 303
    job = response.headers["Location"].rsplit("/", 1)[-1]
    status = client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()
    name = _name(client.get(status["download_url"], "adml_a"))
    assert name.endswith(".zip")
    assert _check_time(name) == "publipostage_ecole-a_tous-profils_cp-de-mme-emery_cm1-de-m-zola_cartes-dans-chaque-classe"


def test_csv_export_names_its_content(app_ctx: Any, client: Any, school: Any) -> None:
    name = _name(client.get(f"{URL}/export.csv?profile=Student&class={school.cp.ref}", "adml_a"))
    assert _check_time(name) == "publipostage_ecole-a_eleves_cp-de-mme-emery_comptes"
