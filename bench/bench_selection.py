"""Selection speed on a territory of 100,000 accounts, SQLite and PostgreSQL.

``make bench-selection`` (``BENCH_ARGS="--accounts 20000 --reps 5"`` to change it).
PostgreSQL runs when ``PUBLIPOSTAGE_BENCH_DATABASE_URL`` is set, for instance
``postgresql://postgres@127.0.0.1:5432/test``; the bench works in its own schema
``publipostage_bench`` there (``PUBLIPOSTAGE_BENCH_SCHEMA`` names another) and
leaves the rest of the database alone.

Measured, as the page does it (count + one page of 50 recipients built with their
classes and children): a local admin of one school (~2,000 accounts) with six
selections, a super admin over the whole territory, a deep page of each; the
distribution filters and the search over a history of two or three items per
account (a PDF, a campaign, for half of them a CSV export or a reprint), and the
page "Suivi des activations" of a school and of the territory; the full
CSV of the territory (time and peak RSS, in a fresh process); the same selections
done the naive way (load the scope's users and their classes through the ORM,
filter and sort in Python) for comparison; the query plans; and, when Chromium is
there, the time a filter change takes to show in the page.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import MultiDict

from flask_publipostage.access import current_scope
from flask_publipostage.class_order import school_order_text
from flask_publipostage.history import code_digest
from flask_publipostage.recipients import last_page, page_next_to
from flask_publipostage.recipients import page as recipients_page
from flask_publipostage.runs.models import Run, RunItem
from flask_publipostage.selection import Selection, count
from flask_publipostage.sql import fold_for_sort, name_sort_key
from tests import hosts
from tests.hosts import Division, Ecole, Personne, db, filiation, inscription

#: Its own schema on PostgreSQL (``PUBLIPOSTAGE_BENCH_SCHEMA`` to choose another).
SCHEMA = os.environ.get("PUBLIPOSTAGE_BENCH_SCHEMA", "publipostage_bench")
PAGE_SIZE = 50
SCHOOL_TARGET_MS = 50
TERRITORY_TARGET_MS = 250
#: The distribution filters, the search and the follow-up page.
FOLLOW_UP_SCHOOL_TARGET_MS = 250
FOLLOW_UP_TERRITORY_TARGET_MS = 1000
#: The reminder's day in the bench's history (runs between September and October 2025).
REMINDER_DAY = "2025-09-20"
CSV_TARGET_S = 5.0
BROWSER_TARGET_MS = 300
CHROMIUM = "/usr/bin/chromium"

#: The secondary indexes a host should have (the primary keys serve the other way).
INDEXES = [
    ("ix_inscription_division", inscription, ("division_ref", "personne_uid"), "class -> members"),
    ("ix_filiation_enfant", filiation, ("enfant_uid", "responsable_uid"), "child -> parents"),
    ("ix_personne_ecole", Personne.__table__, ("ecole",), "the scope's condition on users"),
    ("ix_division_ecole", Division.__table__, ("ecole",), "the scope's condition on classes"),
]

LAST_NAMES = ["Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent", "Muller", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier", "Chevalier", "François", "Legrand", "Gauthier", "Garcia", "Perrin", "Robin", "Clément", "Morin", "Nicolas", "Henry", "Roussel", "Mathieu", "Gautier", "Masson", "Marchand", "Duval", "Denis", "Dumont", "Marie", "Lemaire", "Noël", "Meyer", "Dufour", "Meunier", "Brun", "Blanchard", "Giraud", "Joly", "Rivière", "Lucas", "Brunet", "Gaillard", "Barbier", "Arnaud", "Martínez", "Gérard", "Roche", "Renard", "Schmitt", "Roy", "Leroux", "Colin", "Vidal", "Caron", "Picard", "Roger", "Fabre", "Aubert", "Lemoine", "Renaud", "Dumas", "Lacroix", "Olivier", "Philippe", "Bourgeois", "Pierre", "Benoît", "Rey", "Leclerc", "Payet", "Rolland", "Guillaume", "Lecomte", "Lopez", "Jean", "Dupuy", "Guillot", "Hubert", "Berger", "Carpentier", "Sánchez", "Dupré", "Moulin", "Louis", "Deschamps", "Huet", "Vasseur", "Perez", "Boucher", "Fleury", "Royer", "Klein", "Jacquet", "Adam", "Paris", "Poirier", "Marty", "Aubry", "Guyot", "Carré", "Charles", "Renault", "Charpentier", "Ménard", "Maillard", "Baron", "Bertin", "Bailly", "Hervé", "Schneider", "Fernandez", "Collet", "Léger", "Bouvier", "Julien", "Prévost", "Millet", "Perrot", "Daniel", "Cousin", "Germain", "Breton", "Besson", "Langlois", "Rémy", "Pelletier", "Lévêque", "Perrier", "Leblanc", "Barré", "Lebrun", "Marchal", "Weber", "Mallet", "Hamon", "Boulanger", "Jacob", "Monnier", "Michaud", "Rodriguez", "Guichard", "Gillet", "Étienne", "Grondin", "Poulain", "Tessier", "Chevallier", "Collin", "Chauvin", "Bouchet", "Gay", "Lemaître", "Bénard", "Maréchal", "Humbert", "Reynaud", "Antoine", "Hoarau", "Perret", "Barthélemy", "Cordier", "Pichon", "Lejeune", "Gilbert", "Lamy", "Delaunay", "Pasquier", "Carlier", "Laporte", "Œillet", "Ávila", "Nguyen", "Traoré", "Diallo", "Kowalski", "Łukasiewicz", "Øster", "Çelik", "Şahin", "Dvořák"]
FIRST_NAMES = ["Emma", "Louise", "Jade", "Alice", "Chloé", "Lina", "Léa", "Rose", "Anna", "Mila", "Inès", "Ambre", "Julia", "Mia", "Léna", "Manon", "Juliette", "Lou", "Zoé", "Camille", "Agathe", "Jeanne", "Lucie", "Éva", "Nina", "Sarah", "Romane", "Inaya", "Charlotte", "Léonie", "Gabriel", "Léo", "Raphaël", "Arthur", "Louis", "Jules", "Adam", "Maël", "Lucas", "Hugo", "Noah", "Liam", "Gabin", "Sacha", "Paul", "Nathan", "Aaron", "Mohamed", "Ethan", "Tom", "Éden", "Léon", "Noé", "Tiago", "Théo", "Isaac", "Marius", "Victor", "Martin", "Timéo", "Naël", "Axel", "Valentin", "Samuel", "Élodie", "Émile", "Anaïs", "Gaëlle", "Zoë", "Noël", "Maëlys", "Joël", "Françoise", "Hélène", "Cécile", "Béatrice", "Jérôme", "Stéphane"]
LEVELS = ("CP", "CE1", "CE2", "CM1", "CM2", "6e", "5e", "4e", "3e", "2de")
SECTIONS = ("A", "B", "C")
PROFILE_CODES = {v: k for k, v in hosts.PROFILE_CODES.items()}


# -- the territory ----------------------------------------------------------------


def make_bench_app(url: str, instance: str, *, fresh: bool) -> Flask:
    """The test host (tests/hosts.py) on the bench database, tables kept unless fresh."""
    options: dict[str, Any] = {}
    if url.startswith("postgresql"):
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        engine.dispose()
        options = {"connect_args": {"options": f"-csearch_path={SCHEMA}"}}
    return hosts.make_app(
        url,
        instance,
        reset=fresh,
        schools=True,
        SQLALCHEMY_ENGINE_OPTIONS=options,
        PUBLIPOSTAGE_PAGE_SIZE=PAGE_SIZE,
        PUBLIPOSTAGE_MAX_SELECTION=1_000_000,
    )


def generate(accounts: int, schools: int, seed: int = 42) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    per_school = accounts // schools
    people: list[dict[str, Any]] = []
    divisions: list[dict[str, Any]] = []
    enrolments: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    start = datetime(2023, 1, 1)
    span = int((datetime(2026, 1, 31) - start).total_seconds())
    uid = 0
    ref = 0

    def person(code: str, school: str, email_rate: float, **extra: Any) -> int:
        nonlocal uid
        uid += 1
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        activated = rng.random() < 0.4
        people.append({
            "uid": uid,
            "identifiant": f"{fold_for_sort(first)}.{fold_for_sort(last)}.{uid}".replace(" ", ""),
            "prenom_usuel": first,
            "nom_famille": last,
            "categorie": code,
            "adresse_mel": f"u{uid}@example.org" if rng.random() < email_rate else None,
            "jeton": None if activated else "".join(rng.choices(string.ascii_uppercase + string.digits, k=8)),
            "compte_ouvert": activated,
            "cree_le": start + timedelta(seconds=rng.randrange(span)),
            "referent": False,
            "super_admin": False,
            "ecole": school,
            "rue": None,
            "ville": None,
            **extra,
        })
        return uid

    ecoles: list[dict[str, Any]] = []
    for s in range(schools):
        school = "A" if s == 0 else f"E{s + 1:02d}"
        # Names that sort apart from their codes, some sharing a name.
        ecoles.append({"code": school, "appellation": f"École {LAST_NAMES[(s * 7) % len(LAST_NAMES)]}"})
        class_refs = []
        for level in LEVELS:
            for section in SECTIONS:
                ref += 1
                divisions.append({"ref": ref, "libelle": f"{level} {section}", "ecole": school})
                class_refs.append(ref)
        n_pupils = int(per_school * 0.41)
        n_parents = int(per_school * 0.49)
        n_teachers = int(per_school * 0.05)
        n_staff = int(per_school * 0.03)
        n_guests = per_school - n_pupils - n_parents - n_teachers - n_staff
        pupils = []
        for _ in range(n_pupils):
            pupil = person("ELEVE", school, 0.3)
            pupils.append(pupil)
            if rng.random() < 0.99:  # a few pupils are in no class yet
                enrolments.append({"personne_uid": pupil, "division_ref": rng.choice(class_refs)})
        for _ in range(n_parents):
            parent = person("PARENT", school, 0.7)
            for child in rng.sample(pupils, rng.choices((1, 2, 3), weights=(70, 25, 5))[0]):
                links.append({"responsable_uid": parent, "enfant_uid": child})
        for index in range(n_teachers):
            teacher = person("PROF", school, 0.95, referent=index == 0)
            for class_ref in rng.sample(class_refs, rng.randint(2, 6)):
                enrolments.append({"personne_uid": teacher, "division_ref": class_ref})
        for index in range(n_staff):
            person("PERS", school, 1.0, referent=index == 0)
        for _ in range(n_guests):
            person("INVITE", school, 0.5)
    person("PERS", "A", 1.0, super_admin=True)
    return {"ecole": ecoles, "personne": people, "division": divisions, "inscription": enrolments, "filiation": links}


def load(app: Flask, accounts: int, schools: int) -> float:
    data = generate(accounts, schools)
    started = time.perf_counter()
    with app.app_context(), db.engine.begin() as connection:
        for table, rows in (
            (Ecole.__table__, data["ecole"]),
            (Division.__table__, data["division"]),
            (Personne.__table__, data["personne"]),
            (inscription, data["inscription"]),
            (filiation, data["filiation"]),
        ):
            for offset in range(0, len(rows), 10_000):
                connection.execute(sa.insert(table), rows[offset : offset + 10_000])
    return time.perf_counter() - started


def load_history(app: Flask, seed: int = 7) -> tuple[int, float]:
    """Two or three items per account, as a rentrée leaves them: per school a PDF of
    letters in September (downloaded for 60 % of its accounts: the other files were
    never fetched), a campaign in September (sent to those with an address,
    skipped for the others), and for half the accounts a CSV export or a letter
    reprinted in October; 2 % of the codes changed since. Replaces any earlier
    history. Returns (items, seconds)."""
    rng = random.Random(seed)
    runs_t, items_t = Run.__table__, RunItem.__table__
    started = time.perf_counter()
    with app.app_context():
        people = db.session.execute(
            sa.select(Personne.uid, Personne.ecole, Personne.adresse_mel, Personne.jeton).order_by(Personne.uid)
        ).all()
        by_school: dict[str, list[Any]] = {}
        for person in people:
            by_school.setdefault(person.ecole or "", []).append(person)
        run_rows: list[dict[str, Any]] = []
        item_rows: list[dict[str, Any]] = []
        run_id = 0

        def new_run(kind: str, school: str, at: datetime) -> tuple[int, datetime]:
            nonlocal run_id
            run_id += 1
            run_rows.append({"id": run_id, "token": f"bench-{run_id}", "kind": kind, "actor": f"adml_{school}",
                             "scope_key": f"ecole:{school}", "selection": "{}", "options": "{}", "state": "done",
                             "created_at": at, "finished_at": at, "takeovers": 0, "scope_users": False,
                             "school_name": "", "file_name": ""})
            return run_id, at

        def digest(person: Any) -> str | None:
            if not person.jeton:
                return None
            code = person.jeton if rng.random() >= 0.02 else person.jeton + "-old"
            return code_digest(str(person.uid), code)

        for school, members in by_school.items():
            printed, printed_at = new_run("pdf", school, datetime(2025, 9, 2, 8) + timedelta(hours=rng.randrange(72)))
            mailed, mailed_at = new_run("mail", school, datetime(2025, 9, 5, 8) + timedelta(hours=rng.randrange(72)))
            later, later_at = new_run("csv", school, datetime(2025, 10, 1, 8) + timedelta(hours=rng.randrange(400)))
            for position, person in enumerate(members, 1):
                base = {"user_id": str(person.uid), "position": position, "name": "", "weight": 1, "attempts": 0,
                        "possibly_duplicate": False, "group_key": None}
                item_rows.append({**base, "run_id": printed, "kind": "letter", "state": "printed", "done_at": printed_at,
                                  "distributed_at": printed_at if rng.random() < 0.6 else None,
                                  "code_hmac": digest(person)})
                at = mailed_at + timedelta(minutes=position % 600)
                sent = bool(person.adresse_mel)
                item_rows.append({**base, "run_id": mailed, "kind": "email", "state": "sent" if sent else "skipped",
                                  "done_at": at if sent else None, "distributed_at": at if sent else None,
                                  "code_hmac": digest(person) if sent else None})
                if rng.random() < 0.5:
                    item_rows.append({**base, "run_id": later, "kind": "export", "state": "exported",
                                      "done_at": later_at, "distributed_at": later_at, "code_hmac": None})
    with app.app_context(), db.engine.begin() as connection:
        connection.execute(sa.delete(items_t))
        connection.execute(sa.delete(runs_t))
        connection.execute(sa.insert(runs_t), run_rows)
        for offset in range(0, len(item_rows), 10_000):
            connection.execute(sa.insert(items_t), item_rows[offset : offset + 10_000])
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('publipostage_run', 'id'), "
                                       "(SELECT max(id) FROM publipostage_run))"))
    return len(item_rows), time.perf_counter() - started


def create_indexes(app: Flask, wanted: bool) -> None:
    with app.app_context(), db.engine.begin() as connection:
        for name, table, columns, _why in INDEXES:
            index = sa.Index(name, *(table.c[c] for c in columns))
            if wanted:
                index.create(connection, checkfirst=True)
            else:
                index.drop(connection, checkfirst=True)
            table.indexes.discard(index)
        connection.execute(sa.text("ANALYZE"))


def account_count(app: Flask) -> int:
    """The accounts of an earlier run's territory (0 without its schools)."""
    with app.app_context():
        try:
            if not db.session.execute(sa.select(sa.func.count()).select_from(Ecole)).scalar_one():
                return 0
            return int(db.session.execute(sa.select(sa.func.count()).select_from(Personne)).scalar_one())
        except sa.exc.DBAPIError:
            db.session.rollback()
            return 0


# -- the selections -----------------------------------------------------------------


def school_classes(app: Flask) -> list[int]:
    with app.app_context():
        return list(db.session.execute(
            sa.select(Division.ref).where(Division.ecole == "A").order_by(Division.ref)
        ).scalars())


def cases(app: Flask) -> list[tuple[str, str, str, int]]:
    """(label, role, query string, target ms)."""
    refs = school_classes(app)
    three = "&".join(f"class={r}" for r in refs[3:6])
    other_three = "&".join(f"class={r}" for r in refs[9:12])
    return [
        ("school: no filter", "adml_a", "", SCHOOL_TARGET_MS),
        ("school: pupils of 3 classes, not activated", "adml_a",
         f"profile=Student&{three}&activation=inactive", SCHOOL_TARGET_MS),
        ("school: parents of 3 classes, with email", "adml_a",
         f"profile=Relative&{other_three}&email=with", SCHOOL_TARGET_MS),
        ("school: created since 2025-09-01", "adml_a", "created_since=2025-09-01", SCHOOL_TARGET_MS),
        ("school: all filters, by class then profile", "adml_a",
         (f"profile=Student&profile=Relative&profile=Teacher&{three}&activation=inactive&email=with"
         "&local_admin=exclude&created_since=2023-06-01&created_before=2026-01-31&sort=class&then=profile"),
         SCHOOL_TARGET_MS),
        ("school: by class (school order)", "adml_a", "sort=class", SCHOOL_TARGET_MS),
        ("territory: no filter", "super", "", TERRITORY_TARGET_MS),
        ("territory: sorted by class", "super", "sort=class", TERRITORY_TARGET_MS),
        ("territory: by school then class", "super", "sort=school&then=class", TERRITORY_TARGET_MS),
        ("school: never distributed", "adml_a", "distributed=never", FOLLOW_UP_SCHOOL_TARGET_MS),
        ("school: reminder, by class", "adml_a",
         f"activation=inactive&distributed_before={REMINDER_DAY}&sort=class", FOLLOW_UP_SCHOOL_TARGET_MS),
        ("school: search \"mar\"", "adml_a", "q=mar", FOLLOW_UP_SCHOOL_TARGET_MS),
        ("territory: never distributed", "super", "distributed=never", FOLLOW_UP_TERRITORY_TARGET_MS),
        ("territory: distributed since 2025-10-01", "super", "distributed_since=2025-10-01",
         FOLLOW_UP_TERRITORY_TARGET_MS),
        ("territory: reminder, by class", "super",
         f"activation=inactive&distributed_before={REMINDER_DAY}&sort=class", FOLLOW_UP_TERRITORY_TARGET_MS),
        ("territory: search \"mar\"", "super", "q=mar", FOLLOW_UP_TERRITORY_TARGET_MS),
    ]


#: The page "Suivi des activations": (label, role, query string, target ms).
FOLLOW_UPS = [
    ("school, by class", "adml_a", "", FOLLOW_UP_SCHOOL_TARGET_MS),
    ("territory, by school", "super", "", FOLLOW_UP_TERRITORY_TARGET_MS),
    ("territory, one school by class", "super", "school=A", FOLLOW_UP_TERRITORY_TARGET_MS),
]


def median_ms(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    result = fn()  # warm-up: caches, compiled statements
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def ours(app: Flask, role: str, query: str, reps: int) -> dict[str, Any]:
    """As the preview does it: counters + one page (recipients built with their
    classes and children). Deep pages: the middle of the list reached by "Suivante"
    (keyset), the last page ("Dernière"), and for comparison OFFSET."""
    with app.test_request_context(f"/?{query}", headers={"X-Test-User": role}):
        def selection() -> Selection:
            return Selection.from_args(MultiDict(_pairs(query)), current_scope())

        def first() -> tuple[int, list[Any]]:
            chosen = selection()
            return count(chosen).selected, recipients_page(chosen, 1, PAGE_SIZE)

        first_ms, (selected, rows) = median_ms(first, reps)
        last_number = max(1, -(-selected // PAGE_SIZE))
        middle = max(1, last_number // 2)
        boundary_rows = recipients_page(selection(), middle, PAGE_SIZE)
        boundary = boundary_rows[-1].id if boundary_rows else None

        def keyset() -> list[Any]:
            chosen = selection()
            count(chosen)
            return page_next_to(chosen, boundary, PAGE_SIZE) or []

        def last() -> list[Any]:
            chosen = selection()
            return last_page(chosen, count(chosen).selected, PAGE_SIZE)

        def offset() -> list[Any]:
            chosen = selection()
            count(chosen)
            return recipients_page(chosen, last_number, PAGE_SIZE)

        keyset_ms, keyset_rows = median_ms(keyset, reps)
        last_ms, last_rows = median_ms(last, reps)
        offset_ms, offset_rows = median_ms(offset, reps)
        expected_next = recipients_page(selection(), middle + 1, PAGE_SIZE)
        assert [r.id for r in keyset_rows] == [r.id for r in expected_next], "keyset != OFFSET"
        assert [r.id for r in last_rows] == [r.id for r in offset_rows], "last page != OFFSET"
        db.session.remove()
    return {"rows": selected, "first_ms": first_ms, "keyset_ms": keyset_ms, "last_ms": last_ms,
            "offset_ms": offset_ms, "page": last_number, "middle": middle + 1,
            "first_logins": [r.login for r in rows]}


def preview_request_ms(app: Flask, role: str, query: str, reps: int, page: str = "preview") -> float:
    client = app.test_client()
    url = f"/imports-exports/publipostage/{page}?{query}"

    def get() -> int:
        response = client.get(url, headers={"X-Test-User": role, "X-Requested-With": "fetch"})
        assert response.status_code == 200, response.status_code
        return len(response.data)

    return median_ms(get, reps)[0]


def _pairs(query: str) -> list[tuple[str, str]]:
    return [tuple(p.split("=", 1)) for p in query.split("&") if p]  # type: ignore[misc]


# -- the naive way, for comparison ----------------------------------------------------


def naive(app: Flask, role: str, query: str, reps: int) -> dict[str, Any]:
    """Load the scope's users with classes and children through the ORM; filter in Python."""
    args = MultiDict(_pairs(query))
    zone = ZoneInfo("Europe/Paris")
    profiles = {PROFILE_CODES[p] for p in args.getlist("profile")}
    classes = {int(c) for c in args.getlist("class")}

    def local_day(moment: datetime) -> date:
        return moment.replace(tzinfo=UTC).astimezone(zone).date()

    def run() -> tuple[int, list[str]]:
        with app.test_request_context(f"/?{query}", headers={"X-Test-User": role}):
            scope = current_scope()
            stmt = sa.select(Personne).options(
                selectinload(Personne.divisions),
                selectinload(Personne.enfants).selectinload(Personne.divisions),
            )
            if scope.users is not None:
                stmt = stmt.where(scope.users)
            users = db.session.execute(stmt).scalars().all()
            school_names = dict(db.session.execute(sa.select(Ecole.code, Ecole.appellation)).all())
            latest: dict[str, datetime] = {}
            if any(k.startswith("distributed") for k in args):
                items = RunItem.__table__.c
                for user_id, at in db.session.execute(
                    sa.select(items.user_id, items.distributed_at).where(items.distributed_at.is_not(None))
                ):
                    latest[user_id] = max(at, latest.get(user_id, at))
            words = (fold_for_sort(args.get("q", "")) or "").split()
            kept = []
            for u in users:
                last_at = latest.get(str(u.uid))
                if args.get("distributed") == "never" and last_at is not None:
                    continue
                if args.get("distributed") == "yes" and last_at is None:
                    continue
                if args.get("distributed_since") and (
                    last_at is None or local_day(last_at) < date.fromisoformat(args["distributed_since"])
                ):
                    continue
                if args.get("distributed_before") and (
                    last_at is None or local_day(last_at) > date.fromisoformat(args["distributed_before"])
                ):
                    continue
                names = [fold_for_sort(v) or "" for v in (u.nom_famille, u.prenom_usuel, u.identifiant)]
                if not all(any(n.startswith(w) for n in names) for w in words):
                    continue
                own = {d.ref for d in u.divisions}
                via = {d.ref for c in u.enfants for d in c.divisions}
                if profiles and u.categorie not in profiles:
                    continue
                if classes and not (own | via) & classes:
                    continue
                if args.get("activation") == "inactive" and u.compte_ouvert:
                    continue
                if args.get("activation") == "active" and not u.compte_ouvert:
                    continue
                if args.get("email") == "with" and not u.adresse_mel:
                    continue
                if args.get("email") == "without" and u.adresse_mel:
                    continue
                if args.get("local_admin") == "exclude" and u.referent:
                    continue
                if args.get("local_admin") == "only" and not u.referent:
                    continue
                day = local_day(u.cree_le)
                if args.get("created_since") and day < date.fromisoformat(args["created_since"]):
                    continue
                if args.get("created_before") and day > date.fromisoformat(args["created_before"]):
                    continue
                kept.append(u)

            def class_key(u: Personne) -> tuple[int, str]:
                # Classes in school order (the rule SQLite calls), then their id.
                keys = [school_order_text(d.libelle) + str(d.ref) for d in u.divisions if not classes or d.ref in classes]
                if not keys:
                    keys = [
                        school_order_text(d.libelle) + str(d.ref)
                        for c in u.enfants for d in c.divisions if not classes or d.ref in classes
                    ]
                if not keys:
                    return (1, "")
                return (0, min(keys))

            keys = [k for k in (args.get("sort"), args.get("then")) if k and k != "none"]
            rank = {code: i for i, code in enumerate(("PROF", "ELEVE", "PARENT", "PERS", "INVITE"))}

            def school_key(u: Personne) -> tuple[Any, ...]:
                name = school_names.get(u.ecole)
                return (1,) if name is None else (0, fold_for_sort(name), u.ecole)

            def sort_key(u: Personne) -> tuple[Any, ...]:
                parts: list[Any] = []
                for key in keys:
                    if key == "class":
                        parts.append(class_key(u))
                    elif key == "school":
                        parts.append(school_key(u))
                    else:
                        parts.append(rank.get(u.categorie, 9))
                return (*parts, *name_sort_key(u.nom_famille, u.prenom_usuel, u.identifiant), u.uid)

            kept.sort(key=sort_key)
            page = [u.identifiant for u in kept[:PAGE_SIZE]]
            db.session.remove()
            return len(kept), page

    ms, (selected, page) = median_ms(run, reps)
    return {"rows": selected, "ms": ms, "first_logins": page}


# -- query plans ----------------------------------------------------------------------


def plan(app: Flask, role: str, query: str) -> list[str]:
    with app.test_request_context(f"/?{query}", headers={"X-Test-User": role}):
        selection = Selection.from_args(MultiDict(_pairs(query)), current_scope())
        state = app.extensions["publipostage"]
        stmt = selection.statement(state.host).limit(PAGE_SIZE)
        connection = db.session.connection()
        compiled = stmt.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
        if connection.dialect.name == "sqlite":
            params = tuple(compiled.params[k] for k in compiled.positiontup or ())
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).all()
            depth: dict[int, int] = {0: 0}
            lines = []
            for node, parent, _unused, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                lines.append("  " * depth[node] + detail)
        else:
            rows = connection.exec_driver_sql(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON) " + str(compiled), compiled.params
            ).all()
            lines = [r[0] for r in rows]
        db.session.remove()
        return lines


# -- CSV of the whole territory, in a fresh process ----------------------------------------


def csv_child(url: str, instance: str) -> None:
    app = make_bench_app(url, instance, fresh=False)
    client = app.test_client()
    rss_before = _proc_status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        reset = True
    except OSError:
        reset = False
    started = time.perf_counter()
    cpu = time.process_time()
    response = client.get(
        "/imports-exports/publipostage/export.csv", headers={"X-Test-User": "super"}, buffered=False
    )
    lines = size = 0
    first_byte = None
    for chunk in response.response:
        if first_byte is None:
            first_byte = time.perf_counter() - started
        lines += chunk.count(b"\n") if isinstance(chunk, bytes) else chunk.count("\n")
        size += len(chunk)
    response.close()
    seconds = time.perf_counter() - started
    print(json.dumps({
        "seconds": seconds, "cpu_seconds": time.process_time() - cpu, "first_byte": first_byte, "rows": lines - 1, "bytes": size,
        "rss_before_mib": rss_before / 1024, "peak_rss_mib": _proc_status("VmHWM") / 1024,
        "peak_reset": reset,
    }))


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def csv_run(url: str, instance: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_selection", "--csv-child", url, "--instance", instance],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- a filter change in Chromium ---------------------------------------------------------


def browser_ms(app: Flask, changes: int = 10) -> tuple[float, float] | None:
    if not os.path.exists(CHROMIUM):
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )
            context = browser.new_context(base_url=f"http://127.0.0.1:{httpd.server_port}")
            context.set_extra_http_headers({"X-Test-User": "adml_a"})
            page = context.new_page()
            page.goto("/imports-exports/publipostage/")
            page.evaluate(
                "() => { window.__t = []; let t0 = null;"
                " document.getElementById('pp-filters').addEventListener('change', () => { t0 = performance.now(); }, true);"
                " document.addEventListener('publipostage:updated', () => { if (t0 !== null) { window.__t.push(performance.now() - t0); t0 = null; } }); }"
            )
            controls = [
                "input[name=profile][value=Student]", "input[name=activation][value=inactive]",
                "input[name=profile][value=Relative]", "input[name=email][value=with]",
                "input[name=activation][value=all]", "input[name=email][value=all]",
            ]
            for index in range(changes):
                page.click(controls[index % len(controls)])
                page.wait_for_function("n => window.__t.length >= n", arg=index + 1)
                time.sleep(0.05)
            times = sorted(page.evaluate("window.__t"))
            browser.close()
        return statistics.median(times), times[-1]
    finally:
        httpd.shutdown()
        thread.join(timeout=5)


# -- the run ---------------------------------------------------------------------------


def run_database(label: str, url: str, args: argparse.Namespace, instance: str) -> dict[str, Any]:
    fresh = not args.reuse
    app = make_bench_app(url, instance, fresh=fresh)
    if fresh or account_count(app) < args.accounts:
        if not fresh:
            app = make_bench_app(url, instance, fresh=True)
        seconds = load(app, args.accounts, args.schools)
        print(f"[{label}] loaded {account_count(app):,} accounts in {seconds:.1f} s", flush=True)
    items, seconds = load_history(app)
    print(f"[{label}] history: {items:,} items in {seconds:.1f} s", flush=True)
    create_indexes(app, wanted=not args.no_indexes)
    report: dict[str, Any] = {"label": label, "cases": [], "items": items}
    for name, role, query, target in cases(app):
        if not chosen(name, args):
            continue
        result = ours(app, role, query, args.reps)
        naive_reps = args.naive_reps if role == "super" else args.reps
        base = naive(app, role, query, naive_reps) if naive_reps else {**result, "ms": float("nan")}
        assert base["rows"] == result["rows"], (name, base["rows"], result["rows"])
        same_page = base["first_logins"] == result["first_logins"]
        report["cases"].append({"name": name, "target": target, **result, "naive_ms": base["ms"],
                                "naive_agrees": same_page})
        print(f"[{label}] {name}: {result['rows']:,} rows, {result['first_ms']:.1f} ms, "
              f"keyset {result['keyset_ms']:.1f} ms, last {result['last_ms']:.1f} ms, "
              f"offset {result['offset_ms']:.1f} ms, naive {base['ms']:.0f} ms"
              f"{'' if same_page else ' (naive order differs)'}", flush=True)
    report["preview_school_ms"] = preview_request_ms(app, "adml_a", "", args.reps)
    report["preview_territory_ms"] = preview_request_ms(app, "super", "sort=class", args.reps)
    report["follow_ups"] = []
    for name, role, query, target in FOLLOW_UPS:
        if not chosen(f"follow-up, {name}", args):
            continue
        ms = preview_request_ms(app, role, query, args.reps, page="follow-up")
        report["follow_ups"].append({"name": name, "ms": ms, "target": target})
        print(f"[{label}] follow-up, {name}: {ms:.1f} ms", flush=True)
    all_filters = cases(app)[4]
    report["plans"] = {
        "school, all filters, by class then profile": plan(app, "adml_a", all_filters[2]),
        "territory, sorted by class": plan(app, "super", "sort=class"),
        "territory, reminder by class": plan(app, "super", f"activation=inactive&distributed_before={REMINDER_DAY}&sort=class"),
    }
    if not args.no_csv:
        report["csv"] = csv_run(url, instance)
        print(f"[{label}] CSV: {report['csv']}", flush=True)
    if not args.no_browser:
        report["browser"] = browser_ms(app)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    return report


def chosen(name: str, args: argparse.Namespace) -> bool:
    """The case is measured: no ``--cases``, or its name holds one of them."""
    return not args.cases or any(part in name for part in args.cases.split(","))


def print_report(reports: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(f"Machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    print(f"History: {reports[0]['items']:,} items (a PDF and a campaign per school, a CSV export or a reprint "
          "for half the accounts)")
    print(f"Territory: {args.accounts:,} accounts over {args.schools} schools; school A ≈ "
          f"{args.accounts // args.schools:,}; median of {args.reps} (naive, territory: {args.naive_reps}); "
          f"indexes: {'none' if args.no_indexes else ', '.join(i[0] for i in INDEXES)}")
    print()
    head = f"| {'selection':44} | {'rows':>7} |"
    rule = f"|{'-' * 46}|{'-' * 9}:|"
    for r in reports:
        head += (f" {r['label']}: count + page 1 | + middle page (keyset) | + last page | (OFFSET last)"
                 f" | naive | ours vs naive | target |")
        rule += "---:|---:|---:|---:|---:|---:|:---:|"
    print(head)
    print(rule)
    for index, case in enumerate(reports[0]["cases"]):
        line = f"| {case['name']:44} | {case['rows']:>7,} |"
        for r in reports:
            c = r["cases"][index]
            worst = max(c["first_ms"], c["keyset_ms"], c["last_ms"])
            ok = worst <= c["target"]
            line += (f" {c['first_ms']:.1f} | {c['keyset_ms']:.1f} (p.{c['middle']}) | {c['last_ms']:.1f} (p.{c['page']})"
                     f" | ({c['offset_ms']:.1f}) | {c['naive_ms']:.0f} | {c['naive_ms'] / c['first_ms']:.0f}× faster"
                     f" | {'✓' if ok else '✗'} ≤{c['target']} |")
        print(line)
    print()
    print("ms, median; each column is what the page runs: the counters (one query) and 50 recipients")
    print("(3 queries: accounts, classes, children); naive = load the scope's accounts with their")
    print("classes and children through the ORM, filter and sort in Python.")
    print()
    for r in reports:
        print(f"{r['label']}: GET /preview (HTML, school, no filter) {r['preview_school_ms']:.1f} ms; "
              f"(territory, by class) {r['preview_territory_ms']:.1f} ms")
        if "csv" in r:
            c = r["csv"]
            ok = c["seconds"] <= CSV_TARGET_S
            print(f"{r['label']}: CSV of the territory: {c['rows']:,} rows, {c['bytes'] / 2**20:.1f} MiB in "
                  f"{c['seconds']:.2f} s (web process CPU {c['cpu_seconds']:.2f} s; first byte "
                  f"{c['first_byte'] * 1000:.0f} ms), peak RSS "
                  f"{c['peak_rss_mib']:.0f} MiB for {c['rss_before_mib']:.0f} MiB before "
                  f"({'✓' if ok else '✗'} ≤ {CSV_TARGET_S:.0f} s)")
        for f in r["follow_ups"]:
            print(f"{r['label']}: GET /follow-up ({f['name']}) {f['ms']:.1f} ms "
                  f"({'✓' if f['ms'] <= f['target'] else '✗'} ≤ {f['target']} ms)")
        if r.get("browser"):
            median, worst = r["browser"]
            print(f"{r['label']}: Chromium, filter change -> new table (debounce 150 ms included): "
                  f"median {median:.0f} ms, max {worst:.0f} ms ({'✓' if median <= BROWSER_TARGET_MS else '✗'} "
                  f"≤ {BROWSER_TARGET_MS} ms)")
    print()
    for r in reports:
        for title, lines in r["plans"].items():
            print(f"Plan, {r['label']}, {title}:")
            for line in lines[:60]:
                print("    " + line)
            print()
    print("Indexes a host should have (the primary keys of the link tables serve the other way):")
    for _name, table, columns, why in INDEXES:
        print(f"  {table.name}({', '.join(columns)})  -- {why}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--schools", type=int, default=50)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--naive-reps", type=int, default=3, help="0: no naive way over the territory")
    parser.add_argument("--reuse", action="store_true", help="keep the data of a previous run")
    parser.add_argument("--no-indexes", action="store_true", help="measure without the secondary indexes")
    parser.add_argument("--no-csv", action="store_true")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default both)")
    parser.add_argument("--cases", default="",
                        help="comma-separated parts of the names of the selections and follow-ups to measure "
                             "(default all), e.g. 'territory: sorted,follow-up, territory'")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--csv-child", help=argparse.SUPPRESS)
    parser.add_argument("--instance", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.csv_child:
        csv_child(args.csv_child, args.instance)
        return

    folder = Path(tempfile.gettempdir()) / "publipostage-bench"
    folder.mkdir(exist_ok=True)
    wanted = {d.strip().lower() for d in args.databases.split(",")}
    databases = []
    if "sqlite" in wanted:
        databases.append(("SQLite", f"sqlite:///{folder / 'territory.sqlite3'}"))
    pg = os.environ.get("PUBLIPOSTAGE_BENCH_DATABASE_URL")
    if pg and "postgresql" in wanted:
        databases.append(("PostgreSQL", pg))
    elif "postgresql" in wanted:
        print("PostgreSQL skipped: set PUBLIPOSTAGE_BENCH_DATABASE_URL "
              "(e.g. postgresql://postgres@127.0.0.1:5432/test; the bench uses its own schema)")
    reports = [run_database(label, url, args, str(folder / "instance")) for label, url in databases]
    print_report(reports, args)
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2, default=str))


if __name__ == "__main__":
    main()
