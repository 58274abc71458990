"""Bundles as schools hand them out, read back from the PDF: a bundle for every
class an account belongs to (a teacher of two classes, a parent of siblings in two
classes, in both), "N fiches pour M comptes" before printing, a new sheet for every
group at every sort level (profile then class, class then profile, cards too), one
PDF per class in a ZIP, the options refused where they cannot apply, and the
tables of an earlier version upgraded."""

from __future__ import annotations

import html
import io
import re
import time
import zipfile
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.audit import AuditEntry
from flask_publipostage.runs.models import Run, RunItem

from .hosts import add_person, db
from .test_pdf_support import URL, count_word, pages_text, post_pdf

CE2, CM1, CP = "CE2 de Mme Élise", "CM1 de M. Zola", "CP de Mme Émery"
#: School A's accounts (tests/school.py) in each class bundle, an account in
#: every class it belongs to: anne.prof teaches CP and CM1, marie.abel has a
#: child in each.
EVERY_CLASS = {
    CE2: {"lucas.etienne", "paul.etienne", "jean.prof"},
    CM1: {"elodie.zidane", "marie.abel", "anne.prof"},
    CP: {"zoe.abel", "marie.abel", "anne.prof"},
    "Sans classe": {"nina.sansclasse", "sam.pers", "ines.invite"},
}
LOGINS = set().union(*EVERY_CLASS.values())
#: The classes of each account (a parent's: their children's).
CLASSES = {login: {c for c, members in EVERY_CLASS.items() if login in members} for login in LOGINS}
PROFILES = {
    "jean.prof": "Enseignants", "anne.prof": "Enseignants", "lucas.etienne": "Élèves", "elodie.zidane": "Élèves",
    "zoe.abel": "Élèves", "nina.sansclasse": "Élèves", "paul.etienne": "Parents", "marie.abel": "Parents",
    "sam.pers": "Personnels", "ines.invite": "Invités",
}
HEADER = re.compile(r"^(?P<label>.+?) · (?P<count>\d+) comptes? · (?:feuille )?(?P<number>\d+)/(?P<total>\d+)")


def text(response: Any) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


def _disabled(body: str, name: str) -> bool:
    """The PDF form's checkbox ``name`` is greyed out."""
    (tag,) = re.findall(rf'<input[^>]*name="{name}"[^>]*>', body.split('id="pp-pdf"', 1)[1])
    return " disabled" in tag


def _pdf(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)[:800]
    return pages_text(response.data)


def _logins(page: str) -> set[str]:
    return {login for login in LOGINS | {"bob.b", "root.admin"} if count_word(page, login)}


def _sheets(texts: list[str]) -> list[tuple[str, int, int, set[str]]]:
    """Each page as (its header's label, the group's count, its number, the logins on it)."""
    found = []
    for page in texts:
        header = HEADER.match(page.split("\n", 1)[0])
        assert header, page[:200]
        found.append((header["label"], int(header["count"]), int(header["number"]), _logins(page)))
    return found


def _bundles(texts: list[str]) -> list[tuple[str, list[str]]]:
    """The letters' bundles in print order: (label, the logins in order); each
    letter numbered in its bundle, the bundle's count on every sheet."""
    bundles: list[tuple[str, list[str]]] = []
    counts: list[set[int]] = []
    for label, count, number, logins in _sheets(texts):
        if not bundles or bundles[-1][0] != label:
            assert number == 1, (label, number)
            bundles.append((label, []))
            counts.append(set())
        (login,) = logins
        bundles[-1][1].append(login)
        counts[-1].add(count)
        assert number == len(bundles[-1][1]), (label, number)
    assert counts == [{len(members)} for _label, members in bundles]
    return bundles


# -- a bundle for every class ------------------------------------------------------------------------


def test_a_bundle_for_every_class(app_ctx: Flask, client: Any, school: Any) -> None:
    default = _bundles(_pdf(post_pdf(client, "sort=class")))
    # By default an account prints once, in its first class.
    assert sorted(login for _label, members in default for login in members) == sorted(LOGINS)
    assert len(default) == 4

    every = _bundles(_pdf(post_pdf(client, "sort=class", every_class="y")))
    assert {label: set(members) for label, members in every} == EVERY_CLASS
    assert sum(len(members) for _label, members in every) == 12
    # Each bundle once, in the same order as without the option (the same class rule).
    assert [label for label, _m in every] == [label for label, _m in default]
    first_classes = {login: label for label, members in default for login in members}
    for login in ("anne.prof", "marie.abel"):
        assert [label for label, members in every if login in members][0] == first_classes[login]

    # The run counts its sheets and its accounts apart.
    run = db.session.execute(sa.select(Run).order_by(Run.id.desc()).limit(1)).scalar_one()
    items = db.session.execute(sa.select(RunItem).where(RunItem.run_id == run.id)).scalars().all()
    assert len(items) == 12 and len({i.user_id for i in items}) == 10
    assert {i.state for i in items} == {"printed"}
    entry = db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).scalar_one()
    assert entry.count == 10


def test_only_the_chosen_classes_and_those_of_the_scope(app_ctx: Flask, client: Any, school: Any) -> None:
    chosen = _bundles(_pdf(post_pdf(client, f"sort=class&class={school.cp.ref}&class={school.ce2.ref}", every_class="y")))
    assert {label: set(members) for label, members in chosen} == {CE2: EVERY_CLASS[CE2], CP: EVERY_CLASS[CP]}

    # A class of another school: not a bundle of school A's admin; one of the super admin's.
    school.logins["anne.prof"].divisions.append(school.other_school_class)
    db.session.commit()
    local = _bundles(_pdf(post_pdf(client, "sort=class", every_class="y")))
    assert {label: set(members) for label, members in local} == EVERY_CLASS
    territory = dict(_bundles(_pdf(post_pdf(client, "sort=class", "super", every_class="y"))))
    assert set(territory["CP de l'école B"]) == {"anne.prof", "bob.b"}
    assert [label for label, members in territory.items() if "anne.prof" in members] == [
        label for label in territory if label in (CM1, CP, "CP de l'école B")
    ]


def test_the_page_says_how_many_sheets_for_how_many_accounts(app_ctx: Flask, client: Any, school: Any) -> None:
    by_class = client.get(f"{URL}/?sort=class", "adml_a")
    assert "12 fiches pour 10 comptes" in text(by_class)
    body = by_class.get_data(as_text=True)
    assert 'data-class-sheets="12"' in body
    assert not _disabled(body, "every_class")
    assert re.search(r'<p id="pp-every-class-why"[^>]*hidden', body)
    # Then by class counts too; the chosen classes only.
    assert "12 fiches pour 10 comptes" in text(client.get(f"{URL}/?sort=profile&then=class", "adml_a"))
    one_class = text(client.get(f"{URL}/?sort=class&class={school.cp.ref}", "adml_a"))
    assert "3 fiches pour 3 comptes" in one_class
    # Not sorted by class: greyed, with the reason, and nothing counted.
    unsorted = client.get(f"{URL}/?sort=profile", "adml_a").get_data(as_text=True)
    assert _disabled(unsorted, "every_class") and _disabled(unsorted, "zip")
    assert re.search(r'<p id="pp-every-class-count"[^>]*hidden', unsorted)
    assert "data-class-sheets" not in unsorted
    assert "Triez par classe (« Par » ou « Puis par »)" in html.unescape(unsorted)
    # Who may not print is not counted for.
    assert "data-class-sheets" not in client.get(f"{URL}/?sort=class", "viewer_a").get_data(as_text=True)
    # The live list counts them while the option is ticked (the page's address says so), and keeps it ticked.
    fragment = client.get(f"{URL}/preview?sort=class", "adml_a").get_data(as_text=True)
    assert "data-class-sheets" not in fragment
    ticked = client.get(f"{URL}/preview?sort=class&every_class=y", "adml_a").get_data(as_text=True)
    assert 'data-class-sheets="12"' in ticked
    page = client.get(f"{URL}/?sort=class&every_class=y", "adml_a").get_data(as_text=True)
    (box,) = re.findall(r'<input[^>]*name="every_class"[^>]*>', page.split('id="pp-pdf"', 1)[1])
    assert " checked" in box


# -- a new sheet for every group, at every level -------------------------------------------------


def _own_group(login: str, levels: tuple[str, ...]) -> set[str]:
    """The labels an account's group may have (its first class depends on the class order)."""
    classes = CLASSES[login] - {"Sans classe"} or {"Sans classe"}
    labels = set()
    for name in classes:
        parts = {"profile": PROFILES[login], "class": name}
        labels.add(" · ".join(parts[level] for level in levels))
    return labels


@pytest.mark.parametrize("template", ["letter", "cards"])
def test_profile_then_class_each_class_starts_a_sheet(app_ctx: Flask, client: Any, school: Any, template: str) -> None:
    # Ten pupils in CP: their cards take two sheets, the next group a sheet of its own.
    for n in range(9):
        add_person(f"cp.eleve{n}", f"Élève{n}", "Nouveau", "ELEVE", divisions=[school.cp])
    db.session.commit()
    texts = _pdf(post_pdf(client, "sort=profile&then=class", template=template))
    sheets = _sheets(texts)
    labels = [label for label, _count, _number, _logins in sheets]
    # Each group on sheets of its own, one after the other, each headed by its two levels.
    groups = list(dict.fromkeys(labels))
    assert labels == sorted(labels, key=groups.index)
    assert all(label.count(" · ") == 1 for label in groups)
    for label, _count, number, logins in sheets:
        for login in logins:
            assert label in _own_group(login, ("profile", "class")), (label, login)
        if number == 1:
            first = texts[labels.index(label)]
            assert first.startswith(label + " · "), first[:80]
    pupils_cp = f"Élèves · {CP}"
    assert labels.count(pupils_cp) == (10 if template == "letter" else 2)
    assert f"{pupils_cp} · 10 comptes" in texts[labels.index(pupils_cp)]
    expected_groups = {"Enseignants · " + CE2, "Élèves · " + CE2, "Élèves · " + CM1, pupils_cp, "Élèves · Sans classe",
                       "Parents · " + CE2, "Personnels · Sans classe", "Invités · Sans classe"}
    assert expected_groups <= set(groups) and len(groups) == len(expected_groups) + 2  # anne's, marie's first class
    if template == "cards":
        # 1 + 1 sheets of teachers, 1 + 1 + 2 + 1 of pupils, 1 + 1 of parents, 1 + 1: one group never shares a sheet.
        assert len(texts) == 11


def test_class_then_profile_with_one_signoff_sheet_per_class(app_ctx: Flask, client: Any, school: Any) -> None:
    texts = _pdf(post_pdf(client, "sort=class&then=profile", signoff="y", every_class="y"))
    lists = [i for i, page in enumerate(texts) if page.startswith("Liste d'émargement")]
    assert len(lists) == 3  # CE2, CM1, CP; none for the accounts without a class
    for index in lists:
        name = texts[index].split("\n", 1)[0].removeprefix("Liste d'émargement — ").strip()
        # The class's whole bundle, every profile, on its one sheet, before its groups.
        assert _logins(texts[index]) == EVERY_CLASS[name]
        following = [HEADER.match(page)["label"] for page in texts[index + 1 : index + 4]]
        assert all(label.startswith(name + " · ") for label in following), following
    letters = [page for i, page in enumerate(texts) if i not in lists]
    sheets = _sheets(letters)
    assert len(sheets) == 12
    for label, _count, _number, logins in sheets:
        (login,) = logins
        assert label in _own_group(login, ("class", "profile")) | {
            f"{name} · {PROFILES[login]}" for name in CLASSES[login]
        }
    assert [label for label, *_rest in sheets if label.startswith(CE2)] == [
        f"{CE2} · Enseignants", f"{CE2} · Élèves", f"{CE2} · Parents"
    ]


# -- one PDF per class, in a ZIP -----------------------------------------------------------------------


def _job(response: Any) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    return response.headers["Location"].rsplit("/", 1)[-1]


def _zip(client: Any, job: str) -> tuple[zipfile.ZipFile, dict[str, Any], Any]:
    status = client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()
    assert status["state"] == "done", status
    response = client.get(status["download_url"], "adml_a")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    return zipfile.ZipFile(io.BytesIO(response.data)), status, response


def test_one_pdf_per_class_in_a_zip(app_ctx: Flask, client: Any, school: Any) -> None:
    order = [label for label, _m in _bundles(_pdf(post_pdf(client, "sort=class", every_class="y")))]
    # Always prepared in the background, however small.
    job = _job(post_pdf(client, "sort=class", every_class="y", zip="y"))
    page = text(client.get(f"{URL}/pdf/jobs/{job}", "adml_a"))
    archive, status, response = _zip(client, job)
    assert archive.namelist() == [f"{label}.pdf" for label in order]
    assert "Votre fichier ZIP est prêt : 4 fichiers PDF, 12 pages en tout." in page
    assert "12 fiches pour 10 comptes" in page and "CP de Mme Émery.pdf" in page
    assert (status["sheets"], status["accounts"], status["pages_total"]) == (12, 10, 12)
    assert response.headers["Content-Disposition"].endswith('.zip"')
    for name in archive.namelist():
        label = name.removesuffix(".pdf")
        texts = pages_text(archive.read(name))
        assert len(texts) == 3
        assert {label: set(members) for label, members in _bundles(texts)} == {label: EVERY_CLASS[label]}
    assert client.get(status["download_url"], "adml_a").status_code == 410


def test_a_zip_of_cards_with_signoff_sheets(app_ctx: Flask, client: Any, school: Any) -> None:
    archive, _status, _response = _zip(client, _job(post_pdf(client, "sort=class&then=profile", template="cards",
                                                             signoff="y", zip="y")))
    pages = {name: pages_text(archive.read(name)) for name in archive.namelist()}
    # CE2: its sign-off sheet, then a sheet of cards for each profile of the class.
    ce2 = pages[f"{CE2}.pdf"]
    assert ce2[0].startswith(f"Liste d'émargement — {CE2}")
    assert [HEADER.match(p)["label"] for p in ce2[1:]] == [f"{CE2} · Enseignants", f"{CE2} · Élèves", f"{CE2} · Parents"]
    assert all("Liste d'émargement" not in t for t in pages["Sans classe.pdf"])
    printed = [login for texts in pages.values() for page in texts if not page.startswith("Liste") for login in _logins(page)]
    assert sorted(printed) == sorted(LOGINS)  # each once without a bundle for every class


class TestZipInTheBackground:
    @pytest.fixture
    def app_config(self) -> dict[str, Any]:
        # Chunks of two letters: a class of three takes two, never shared with the next class.
        return {"PUBLIPOSTAGE_JOB_BACKEND": "thread", "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 2, "PUBLIPOSTAGE_PDF_WORKERS": 1}

    def test_progress_then_the_download(self, app_ctx: Flask, client: Any, school: Any) -> None:
        job = _job(post_pdf(client, "sort=class", every_class="y", zip="y"))
        deadline = time.monotonic() + 90
        seen = []
        while time.monotonic() < deadline:
            status = client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()
            seen.append(status)
            if status["state"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert seen[-1]["state"] == "done", seen[-1]
        assert all(s["pages_total"] == 12 and s["sheets"] == 12 and s["accounts"] == 10 for s in seen)
        listing = text(client.get(f"{URL}/pdf/jobs", "adml_a"))
        assert "12 fiches pour 10 comptes" in listing and "un PDF par classe (ZIP)" in listing
        archive, _status, _response = _zip(client, job)
        assert len(archive.namelist()) == 4
        for name in archive.namelist():
            texts = pages_text(archive.read(name))
            assert len(texts) == 3 and {label for label, *_r in _sheets(texts)} == {name.removesuffix(".pdf")}


# -- refused where they cannot apply ------------------------------------------------------------------


def test_options_refused_where_they_cannot_apply(app_ctx: Flask, client: Any, school: Any) -> None:
    for query in ("", "sort=profile"):
        refused = post_pdf(client, query, every_class="y")
        assert refused.status_code == 400
        assert "Une liasse par classe demande un tri par classe" in text(refused)
    for query in ("", "sort=profile&then=class"):
        refused = post_pdf(client, query, zip="y")
        assert refused.status_code == 400
        assert "Un fichier PDF par classe demande un tri d'abord par classe" in text(refused)
    assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar() == 0
    assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar() == 0
    # Sorted by class after the profile: a bundle for every class applies.
    assert len(_pdf(post_pdf(client, "sort=profile&then=class", every_class="y"))) == 12


# -- the tables of an earlier version ------------------------------------------------------------------


def _items_before_bundles() -> sa.Table:
    """The items table as it was: one item per account and run."""
    old = sa.MetaData()
    sa.Table("publipostage_run", old, autoload_with=db.engine)
    items = RunItem.__table__
    return sa.Table(
        items.name, old, *(column._copy() for column in items.columns),
        sa.UniqueConstraint("run_id", "user_id", name="uq_publipostage_run_item_user"),
        sa.Index("ix_publipostage_run_item_state", "run_id", "state", "position"),
        sa.Index("ix_publipostage_run_item_position", "run_id", "position"),
        sa.Index("ix_publipostage_run_item_user", "user_id"),
    )


def test_upgrade_db_lets_an_account_be_in_several_bundles(app: Flask, client: Any) -> None:
    from .school import build_school

    with app.app_context():
        build_school()
    assert len(_pdf(post_pdf(client, "sort=class"))) == 10
    with app.app_context():
        rows = [{k: v for k, v in r._mapping.items() if k != "id"}
                for r in db.session.execute(sa.select(RunItem.__table__).order_by(RunItem.id)).all()]
        db.session.remove()
        RunItem.__table__.drop(db.engine)
        old = _items_before_bundles()
        old.create(db.engine)
        with db.engine.begin() as conn:
            conn.execute(old.insert(), rows)
        journal = db.session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar()
        db.session.remove()
    # Before the upgrade: a clear French answer, nothing recorded.
    before = post_pdf(client, "sort=class", every_class="y")
    assert before.status_code == 503 and "flask publipostage upgrade-db" in text(before)
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar() == 1
        assert db.session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar() == journal
    result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert result.exit_code == 0, result.output
    assert "plusieurs liasses" in result.output
    with app.app_context():
        inspector = sa.inspect(db.engine)
        assert not inspector.get_unique_constraints(RunItem.__tablename__)
        indexes = {i["name"]: i for i in inspector.get_indexes(RunItem.__tablename__)}
        assert indexes["uq_publipostage_run_item_position"]["unique"]
        assert "ix_publipostage_run_item_position" not in indexes
        kept = [{k: v for k, v in r._mapping.items() if k != "id"}
                for r in db.session.execute(sa.select(RunItem.__table__).order_by(RunItem.id)).all()]
        assert kept == rows
        db.session.remove()
    assert len(_pdf(post_pdf(client, "sort=class", every_class="y"))) == 12
    with app.app_context():
        item = db.session.execute(sa.select(RunItem).order_by(RunItem.id).limit(1)).scalar_one()
        values = {c.name: getattr(item, c.key) for c in RunItem.__table__.columns if c.name != "id"}
        # A second sheet of an account in a PDF; never a second message in a campaign.
        with db.engine.begin() as conn:
            conn.execute(sa.insert(RunItem.__table__).values({**values, "position": 99}))
        for position in (100, 101):
            email = {**values, "kind": "email", "position": position}
            if position == 100:
                with db.engine.begin() as conn:
                    conn.execute(sa.insert(RunItem.__table__).values({**email, "user_id": "email-only"}))
            else:
                with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
                    conn.execute(sa.insert(RunItem.__table__).values({**email, "user_id": "email-only"}))
    again = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
    assert again.exit_code == 0 and "plusieurs liasses" not in again.output
