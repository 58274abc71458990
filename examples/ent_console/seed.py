"""Fill the console's database with two realistic schools, and import a BE1D extraction.

``python -m examples.ent_console.seed [--reset] [--import-be1d DIR] [--seed N]``; ``--reset``
empties the database and the demo outbox first (``make demo`` does, unless ``DEMO_KEEP=1``).

The generated data is deterministic for a given seed: the same accounts, logins and
activation codes each time (only the password hashes of the demo accounts, salted,
differ). Rows are written with bulk inserts, so the whole run takes a few seconds.
"""

from __future__ import annotations

import argparse
import csv
import logging
import random
import re
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, scoped_session
from werkzeug.security import generate_password_hash

from . import names
from .models import Classe, Etablissement, Utilisateur, lien_parent_enfant, utilisateur_classe
from .outbox import clear_messages

log = logging.getLogger(__name__)

#: A plain session or Flask-SQLAlchemy's ``db.session``.
SessionLike = Session | scoped_session[Any]

DEFAULT_SEED = 2026
#: Activation codes avoid the characters read one for another: 0/O, 1/I/l.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
DEMO_PASSWORD = "demo"
BE1D_SCHOOL_NAME = "Ecole primaire Emile Zola"

# Two school years of account creations: the big import at each rentrée, then
# newcomers all year long.
_WAVES = {
    1: (datetime(2025, 8, 28, 6, 0), datetime(2026, 7, 3, 17, 0)),
    2: (datetime(2026, 8, 27, 6, 0), datetime(2026, 11, 13, 17, 0)),
}
#: Probability that an account is activated, by profile, for each wave.
_ACTIVATION = {
    "Teacher": (0.8, 0.45),
    "Personnel": (0.7, 0.4),
    "Student": (0.36, 0.1),
    "Relative": (0.36, 0.1),
    "Guest": (0.3, 0.1),
}
_PARENT_DOMAINS = ("example.fr", "example.com", "example.net", "example.org")
_ACADEMIC_DOMAIN = "ac-lumiere.example.fr"

# Letters that Unicode does not decompose into an ASCII base letter.
_FOLD = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ø": "o",
        "Ø": "O",
        "ı": "i",
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "þ": "th",
        "Þ": "TH",
    }
)


def ascii_fold(text: str) -> str:
    """ "Żółć" -> "Zolc", "Œillet" -> "OEillet": the ASCII a login or address can use."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return "".join(c for c in decomposed if not unicodedata.combining(c) and ord(c) < 128)


def _slug(text: str) -> str:
    folded = ascii_fold(text).lower().replace("'", "").replace("’", "")
    folded = re.sub(r"[^a-z0-9]+", "-", folded)
    return re.sub(r"-{2,}", "-", folded).strip("-")


def login_base(prenom: str, nom: str) -> str:
    """ "Jean-Rémi", "D'Alembert" -> "jean-remi.dalembert"."""
    return f"{_slug(prenom) or 'x'}.{_slug(nom) or 'x'}"


@dataclass
class _Family:
    surname: str
    children: list[int] = field(default_factory=list)
    address: tuple[str, str, str] = ("", "", "")


class _Builder:
    """Accumulates rows with their ids, then writes them in a few bulk inserts."""

    def __init__(self, session: SessionLike, rng: random.Random) -> None:
        self.session = session
        self.rng = rng
        self._ids: dict[type[Any], int] = {
            model: (session.scalar(sa.select(sa.func.max(model.id))) or 0)
            for model in (Etablissement, Classe, Utilisateur)
        }
        self.logins: set[str] = set(session.scalars(sa.select(Utilisateur.login)))
        self.emails: set[str] = set(
            session.scalars(sa.select(Utilisateur.courriel).where(Utilisateur.courriel.is_not(None)))
        )
        # Codes are unique across schools: an import next to the generated schools, with
        # the same seed, draws codes that those schools already hold.
        self.codes: set[str] = set(
            session.scalars(
                sa.select(Utilisateur.code_activation).where(Utilisateur.code_activation.is_not(None))
            )
        )
        self._hashes: dict[str, str] = {}
        self.etablissements: list[dict[str, Any]] = []
        self.classes: list[dict[str, Any]] = []
        self.users: list[dict[str, Any]] = []
        self.user_classes: list[dict[str, int]] = []
        self.parent_links: list[dict[str, int]] = []

    def _next_id(self, model: type) -> int:
        self._ids[model] += 1
        return self._ids[model]

    # -- rows ------------------------------------------------------------------

    def etablissement(self, nom: str, uai: str, type_: str, adresse: tuple[str, str, str]) -> int:
        ident = self._next_id(Etablissement)
        ligne1, code_postal, ville = adresse
        self.etablissements.append(
            dict(
                id=ident,
                nom=nom,
                uai=uai,
                type=type_,
                adresse_ligne1=ligne1,
                code_postal=code_postal,
                ville=ville,
            )
        )
        return ident

    def classe(self, nom: str, niveau: str | None, etablissement_id: int) -> int:
        ident = self._next_id(Classe)
        self.classes.append(dict(id=ident, nom=nom, niveau=niveau, etablissement_id=etablissement_id))
        return ident

    def unique_login(self, prenom: str, nom: str) -> str:
        base = login_base(prenom, nom)
        login, number = base, 1
        while login in self.logins:
            number += 1
            login = f"{base}{number}"
        self.logins.add(login)
        return login

    def unique_email(self, prenom: str, nom: str, domain: str) -> str:
        base = login_base(prenom, nom)
        email, number = f"{base}@{domain}", 1
        while email in self.emails:
            number += 1
            email = f"{base}{number}@{domain}"
        self.emails.add(email)
        return email

    def password_hash(self, password: str) -> str:
        # The demo accounts share one published password: hash it once, scrypt is slow.
        if password not in self._hashes:
            self._hashes[password] = generate_password_hash(password)
        return self._hashes[password]

    def activation_code(self) -> str:
        while True:
            code = "".join(self.rng.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            if code not in self.codes:
                self.codes.add(code)
                return code

    def user(
        self,
        profil: str,
        prenom: str,
        nom: str,
        etablissement_id: int | None,
        created: datetime,
        *,
        activated: bool,
        email: str | None = None,
        email_domain: str | None = None,
        login: str | None = None,
        password: str | None = None,
        is_adml: bool = False,
        is_super_admin: bool = False,
        address: tuple[str, str, str] | None = None,
        classes: Iterable[int] = (),
    ) -> int:
        ident = self._next_id(Utilisateur)
        if login is None:
            login = self.unique_login(prenom, nom)
        else:
            self.logins.add(login)
        if email is None and email_domain is not None:
            email = self.unique_email(prenom, nom, email_domain)
        ligne1, code_postal, ville = address or (None, None, None)
        self.users.append(
            dict(
                id=ident,
                login=login,
                prenom=prenom,
                nom=nom,
                profil=profil,
                courriel=email,
                code_activation=None if activated else self.activation_code(),
                code_activation_expire_le=None,
                federe=False,
                bloque=False,
                date_creation=created,
                etablissement_id=etablissement_id,
                is_adml=is_adml,
                is_super_admin=is_super_admin,
                mot_de_passe_hash=self.password_hash(password) if password else None,
                adresse_ligne1=ligne1,
                adresse_code_postal=code_postal,
                adresse_ville=ville,
            )
        )
        for classe_id in dict.fromkeys(classes):  # once each, in order
            self.user_classes.append(dict(utilisateur_id=ident, classe_id=classe_id))
        return ident

    def link_parent(self, parent_id: int, enfant_id: int) -> None:
        self.parent_links.append(dict(parent_id=parent_id, enfant_id=enfant_id))

    # -- random helpers ----------------------------------------------------------

    def created(self, wave: int) -> datetime:
        start, end = _WAVES[wave]
        if self.rng.random() < 0.75:
            days = self.rng.randint(0, 6)
        else:
            days = self.rng.randint(0, (end - start).days)
        # Office hours (the times are UTC, start is 06:00).
        return start + timedelta(days=days, seconds=self.rng.randint(0, 11 * 3600))

    def activated(self, profil: str, wave: int) -> bool:
        return self.rng.random() < _ACTIVATION[profil][wave - 1]

    def person(self, sex: str | None = None) -> tuple[str, str, str]:
        sex = sex or self.rng.choice("FM")
        first = self.rng.choice(names.FIRST_NAMES_F if sex == "F" else names.FIRST_NAMES_M)
        return first, self.rng.choice(names.LAST_NAMES), sex

    def first_name(self, sex: str) -> str:
        return self.rng.choice(names.FIRST_NAMES_F if sex == "F" else names.FIRST_NAMES_M)

    def address(self) -> tuple[str, str, str]:
        number = self.rng.randint(1, 140)
        suffix = self.rng.choice(("", "", "", "", " bis", " ter"))
        code_postal, ville = self.rng.choice(names.TOWNS)
        return f"{number}{suffix} {self.rng.choice(names.STREETS)}", code_postal, ville

    # -- writing -----------------------------------------------------------------

    def write(self) -> None:
        session = self.session
        # Core inserts on the tables: one executemany per table, no ORM bookkeeping.
        for table, rows in (
            (Etablissement.__table__, self.etablissements),
            (Classe.__table__, self.classes),
            (Utilisateur.__table__, self.users),
            (utilisateur_classe, self.user_classes),
            (lien_parent_enfant, self.parent_links),
        ):
            if rows:
                session.execute(table.insert(), rows)
        if session.get_bind().dialect.name == "postgresql":
            # Explicit ids leave the serial sequences behind: move them past the rows.
            for table in ("etablissement", "classe", "utilisateur"):
                session.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table}), 1))"
                    )
                )
        session.flush()


# -- families ----------------------------------------------------------------------


def _weighted(rng: random.Random, weights: Sequence[tuple[int, float]]) -> int:
    return rng.choices([v for v, _ in weights], [w for _, w in weights])[0]


def _families(
    builder: _Builder,
    etablissement_id: int,
    places: dict[int, int],
    levels: dict[int, int],
    wave_of_level: dict[int, int],
    children_weights: Sequence[tuple[int, float]],
    parents_weights: Sequence[tuple[int, float]],
    specials: Sequence[int],
) -> None:
    """Pupils and their parents, family by family, until every class is full.

    ``places``: class id -> seats left; ``levels``: class id -> level rank (siblings
    sit at different levels); ``specials``: indexes into ``names.SPECIAL_PEOPLE`` whose
    families go to this school.
    """
    rng = builder.rng
    special_queue = list(specials)
    while any(places.values()):
        free = [c for c, n in places.items() if n > 0]
        wanted = _weighted(rng, children_weights)
        chosen: list[int] = []
        for classe_id in rng.sample(free, len(free)):
            if len(chosen) == wanted:
                break
            if all(levels[classe_id] != levels[c] for c in chosen):
                chosen.append(classe_id)

        special = special_queue.pop(0) if special_queue else None
        if special is not None:
            parent_first, surname, parent_sex = names.SPECIAL_PEOPLE[special]
        else:
            parent_first, surname, parent_sex = builder.person()
        family = _Family(surname=surname, address=builder.address())

        n_parents = _weighted(rng, parents_weights)
        parents: list[tuple[str, str, str]] = [(parent_first, surname, parent_sex)]
        for _ in range(n_parents - 1):
            sex = "M" if parents[-1][2] == "F" else "F"
            other_surname = surname if rng.random() < 0.5 else rng.choice(names.LAST_NAMES)
            parents.append((builder.first_name(sex), other_surname, sex))
        child_surname = surname
        if len(parents) > 1 and parents[1][1] != surname and rng.random() < 0.15:
            child_surname = f"{surname}-{parents[1][1]}"

        wave = min(wave_of_level[levels[c]] for c in chosen)
        for index, classe_id in enumerate(chosen):
            places[classe_id] -= 1
            if special is not None and index == 0:
                first, sex = names.SPECIAL_CHILDREN[special]
            else:
                sex = rng.choice("FM")
                first = builder.first_name(sex)
            child_wave = wave_of_level[levels[classe_id]]
            family.children.append(
                builder.user(
                    "Student",
                    first,
                    child_surname,
                    etablissement_id,
                    builder.created(child_wave),
                    activated=builder.activated("Student", child_wave),
                    classes=[classe_id],
                )
            )

        for rank, (first, last, _sex) in enumerate(parents):
            # Separated parents and step-parents often live elsewhere.
            moved = rank > 0 and last != surname and rng.random() < 0.3
            parent_id = builder.user(
                "Relative",
                first,
                last,
                etablissement_id,
                builder.created(wave),
                activated=builder.activated("Relative", wave),
                email_domain=rng.choice(_PARENT_DOMAINS) if rng.random() < 0.6 else None,
                address=builder.address() if moved else family.address,
            )
            for child_id in family.children:
                builder.link_parent(parent_id, child_id)


def _civility(sex: str) -> str:
    return "Mme" if sex == "F" else "M."


# -- the two demo schools -------------------------------------------------------------

_ECOLE_LEVELS = ("TPS", "PS", "MS", "GS", "CP", "CE1", "CE2", "CM1", "CM2")
_ECOLE_SIZES = (16, 28, 29, 29, 30, 29, 30, 29, 30)  # 250 pupils


def _ecole(builder: _Builder, specials: Sequence[int]) -> int:
    rng = builder.rng
    etab = builder.etablissement(
        "École élémentaire Jules Ferry", "0370001A", "école", ("12 rue Jules Ferry", "37000", "Tours")
    )
    # The titular teacher names the class: "CP de Mme Martin".
    titulars: list[tuple[str, str, str]] = []
    for level in _ECOLE_LEVELS:
        if level == "CE2":
            titulars.append(("Camille", "Rousseau", "F"))  # prof.ecole
        elif level == "CM2":
            titulars.append(("Hélène", "Marchand", "F"))  # adml.ecole, the head teacher
        else:
            titulars.append(builder.person())
    class_ids = [
        builder.classe(f"{level} de {_civility(sex)} {last}", level, etab)
        for level, (_first, last, sex) in zip(_ECOLE_LEVELS, titulars, strict=True)
    ]

    for level, classe_id, (first, last, _sex) in zip(_ECOLE_LEVELS, class_ids, titulars, strict=True):
        # Exchanges of classes for some subjects ("décloisonnement").
        classes = [classe_id]
        if rng.random() < 0.3:
            classes.append(rng.choice(class_ids))
        if level == "CE2":
            builder.user(
                "Teacher",
                first,
                last,
                etab,
                _WAVES[1][0],
                activated=True,
                login="prof.ecole",
                password=DEMO_PASSWORD,
                email_domain=_ACADEMIC_DOMAIN,
                classes=[classe_id],
            )
        elif level == "CM2":
            builder.user(
                "Teacher",
                first,
                last,
                etab,
                _WAVES[1][0],
                activated=True,
                login="adml.ecole",
                password=DEMO_PASSWORD,
                is_adml=True,
                email_domain=_ACADEMIC_DOMAIN,
                classes=[classe_id],
            )
        else:
            wave = 1 if rng.random() < 0.7 else 2
            builder.user(
                "Teacher",
                first,
                last,
                etab,
                builder.created(wave),
                activated=builder.activated("Teacher", wave),
                email_domain=_ACADEMIC_DOMAIN,
                classes=classes,
            )
    # Half-time teachers, the head teacher's replacement, the special-needs teacher…
    for index in range(6):
        first, last, _sex = builder.person()
        wave = 1 if rng.random() < 0.5 else 2
        builder.user(
            "Teacher",
            first,
            last,
            etab,
            builder.created(wave),
            activated=builder.activated("Teacher", wave),
            email_domain=_ACADEMIC_DOMAIN,
            is_adml=index == 0,  # the school's digital referent
            classes=rng.sample(class_ids, rng.randint(1, 2)),
        )
    # ATSEM of the nursery classes and the after-school team.
    for _ in range(4):
        first, last, _sex = builder.person("F" if rng.random() < 0.8 else "M")
        builder.user(
            "Personnel",
            first,
            last,
            etab,
            builder.created(1),
            activated=builder.activated("Personnel", 1),
            email_domain=rng.choice(_PARENT_DOMAINS) if rng.random() < 0.5 else None,
        )
    for _ in range(2):
        first, last, _sex = builder.person()
        builder.user(
            "Guest",
            first,
            last,
            etab,
            builder.created(2),
            activated=builder.activated("Guest", 2),
            email_domain=rng.choice(_PARENT_DOMAINS),
        )

    places = dict(zip(class_ids, _ECOLE_SIZES, strict=True))
    levels = {c: rank for rank, c in enumerate(class_ids)}
    # Nursery newcomers arrived at the second rentrée; the others mostly at the first.
    waves = {rank: 2 if rank <= 1 else (1 if rng.random() < 0.85 else 2) for rank in range(len(class_ids))}
    _families(
        builder,
        etab,
        places,
        levels,
        waves,
        children_weights=((1, 0.93), (2, 0.06), (3, 0.01)),
        parents_weights=((1, 0.04), (2, 0.90), (3, 0.05), (4, 0.01)),
        specials=specials,
    )
    return etab


_COLLEGE_LEVELS = ("6e", "5e", "4e", "3e")
_COLLEGE_SECTIONS = ("A", "B", "C", "D")


def _college(builder: _Builder, specials: Sequence[int]) -> int:
    rng = builder.rng
    etab = builder.etablissement(
        "Collège Victor Hugo", "0370002B", "collège", ("3 avenue de la République", "37100", "Tours")
    )
    class_ids: list[int] = []
    levels: dict[int, int] = {}
    for rank, level in enumerate(_COLLEGE_LEVELS):
        for section in _COLLEGE_SECTIONS:
            classe_id = builder.classe(f"{level}{section}", level, etab)
            class_ids.append(classe_id)
            levels[classe_id] = rank

    builder.user(
        "Personnel",
        "Karim",
        "Benali",
        etab,
        _WAVES[1][0],
        activated=True,
        login="adml.college",
        password=DEMO_PASSWORD,
        is_adml=True,
        email_domain=_ACADEMIC_DOMAIN,
    )
    for index in range(60):
        first, last, _sex = builder.person()
        wave = 1 if rng.random() < 0.75 else 2
        builder.user(
            "Teacher",
            first,
            last,
            etab,
            builder.created(wave),
            activated=builder.activated("Teacher", wave),
            email_domain=_ACADEMIC_DOMAIN,
            is_adml=index == 0,  # the digital referent
            classes=rng.sample(class_ids, rng.randint(3, 6)),
        )
    # Head, CPE, office, nurse, librarian, teaching assistants, technical staff.
    for index in range(20):
        first, last, _sex = builder.person()
        wave = 1 if rng.random() < 0.7 else 2
        builder.user(
            "Personnel",
            first,
            last,
            etab,
            builder.created(wave),
            activated=builder.activated("Personnel", wave),
            is_adml=index == 0,
            email_domain=_ACADEMIC_DOMAIN if rng.random() < 0.8 else None,
        )
    for _ in range(4):
        first, last, _sex = builder.person()
        builder.user(
            "Guest",
            first,
            last,
            etab,
            builder.created(2),
            activated=builder.activated("Guest", 2),
            email_domain=rng.choice(_PARENT_DOMAINS),
        )

    sizes = [38] * 8 + [37] * 8  # 600 pupils
    places = dict(zip(class_ids, sizes, strict=True))
    waves = {0: 2, 1: 1, 2: 1, 3: 1}  # the 6e came in at the last rentrée
    _families(
        builder,
        etab,
        places,
        levels,
        waves,
        children_weights=((1, 0.90), (2, 0.09), (3, 0.01)),
        parents_weights=((1, 0.20), (2, 0.76), (3, 0.03), (4, 0.01)),
        specials=specials,
    )
    return etab


#: Accounts in each state besides activation (a generator of their own, so the
#: accounts, logins and codes stay those of the seed): parents and collège pupils
#: who sign in with ÉduConnect (federated), blocked accounts, codes that expired.
_FEDERATED = {("Relative", "école"): 0.25, ("Relative", "collège"): 0.35, ("Student", "collège"): 0.2}
_BLOCKED = 0.02
_EXPIRED = 0.06
#: How long an activation code is valid from the seeding; an expired one ended this long ago.
_CODE_VALIDITY = timedelta(days=120)
_EXPIRED_SINCE = timedelta(days=20)


def _states(builder: _Builder, rng: random.Random, college: int) -> None:
    """Give the generated accounts their states; the demo accounts and the admins keep none.
    Code validity counts from today, so a reseeded demo always has valid and expired codes."""
    now = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    for user in builder.users:
        if user["is_super_admin"] or user["is_adml"] or user["mot_de_passe_hash"]:
            continue
        kind = "collège" if user["etablissement_id"] == college else "école"
        user["federe"] = rng.random() < _FEDERATED.get((user["profil"], kind), 0.0)
        user["bloque"] = rng.random() < _BLOCKED
        if user["code_activation"] is not None:
            expired = rng.random() < _EXPIRED
            user["code_activation_expire_le"] = now - _EXPIRED_SINCE if expired else now + _CODE_VALIDITY


def seed_database(session: SessionLike, seed: int = DEFAULT_SEED) -> list[Etablissement]:
    """Create the two demo schools and the demo accounts; return the schools.

    The caller commits.
    """
    rng = random.Random(seed)
    builder = _Builder(session, rng)
    # The territory's super admin belongs to no school.
    builder.user(
        "Personnel",
        "Anne-Sophie",
        "Duval",
        None,
        _WAVES[1][0],
        activated=True,
        login="admin.ent",
        password=DEMO_PASSWORD,
        is_super_admin=True,
        email="admin.ent@ent.lumiere.example.fr",
    )
    specials = list(range(len(names.SPECIAL_PEOPLE)))
    ecole = _ecole(builder, specials[0::2])
    college = _college(builder, specials[1::2])
    _states(builder, random.Random(seed + 1), college)
    builder.write()
    return [session.get(Etablissement, ecole), session.get(Etablissement, college)]  # type: ignore[list-item]


# -- BE1D import -------------------------------------------------------------------------


def _fold_key(text: str) -> str:
    return " ".join(ascii_fold(text).casefold().split())


class _Csv:
    """A BE1D file: Latin-1, ';'-separated, quoted, with repeated column names."""

    def __init__(self, path: Path) -> None:
        with path.open(encoding="latin-1", newline="") as handle:
            rows = list(csv.reader(handle, delimiter=";", quotechar='"'))
        if not rows:
            raise ValueError(f"{path.name} est vide")
        self.path = path
        self.header = [_fold_key(h) for h in rows[0]]
        self.rows = [r for r in rows[1:] if any(cell.strip() for cell in r)]

    def indexes(self, name: str) -> list[int]:
        key = _fold_key(name)
        found = [i for i, h in enumerate(self.header) if h == key]
        if not found:
            raise ValueError(f"{self.path.name} : colonne « {name} » absente")
        return found

    def index(self, name: str) -> int:
        return self.indexes(name)[0]

    @staticmethod
    def cell(row: list[str], index: int) -> str:
        return row[index].strip() if index < len(row) else ""


def _be1d_file(directory: Path, suffix: str) -> Path:
    matches = sorted(directory.glob(f"be1d_*{suffix}.csv"))
    if not matches:
        raise FileNotFoundError(f"aucun fichier be1d_*{suffix}.csv dans {directory}")
    return matches[0]


def _split_classes(value: str) -> list[str]:
    return [c.strip() for c in re.split(r"[,|]", value) if c.strip()]


def import_be1d(session: SessionLike, directory: str | Path, seed: int = DEFAULT_SEED) -> Etablissement:
    """Load a BE1D extraction (pupils, teachers, parents) as a new school; return it.

    Classes come from the pupils' "Classe" column; teachers join their class; a parent
    row names up to three children, found by (family name, first name, class). The
    accounts get a login and an activation code; the caller commits.
    """
    directory = Path(directory)
    eleves = _Csv(_be1d_file(directory, "eleves"))
    enseignants = _Csv(_be1d_file(directory, "enseignants"))
    responsables = _Csv(_be1d_file(directory, "responsables"))

    builder = _Builder(session, random.Random(seed))
    now = datetime.now(UTC).replace(tzinfo=None)
    town = None
    adresse_col = responsables.index("Commune responsable")
    for row in responsables.rows:
        town = town or _Csv.cell(row, adresse_col) or None
    uai = f"0{builder.rng.randint(100000, 999999)}{builder.rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}"
    etab = builder.etablissement(BE1D_SCHOOL_NAME, uai, "école", ("", "", town or ""))

    classes: dict[str, int] = {}

    def classe_id(name: str, niveau: str | None = None) -> int:
        if name not in classes:
            classes[name] = builder.classe(name, niveau or name, etab)
        return classes[name]

    # Pupils.
    nom, usage, prenom = (
        eleves.index("Nom Elève"),
        eleves.index("Nom d'usage Elève"),
        eleves.index("Prénom Elève"),
    )
    niveau, classe = eleves.index("Niveau"), eleves.index("Classe")
    adresse, cp, commune = eleves.index("Adresse1"), eleves.index("Cp1"), eleves.index("Commune1")
    by_class: dict[tuple[str, str, str], int] = {}
    by_name: dict[tuple[str, str], list[int]] = {}
    for row in eleves.rows:
        family_name, first = _Csv.cell(row, nom), _Csv.cell(row, prenom)
        shown_name = _Csv.cell(row, usage) or family_name
        class_names = _split_classes(_Csv.cell(row, classe))
        address = (_Csv.cell(row, adresse), _Csv.cell(row, cp), _Csv.cell(row, commune))
        pupil = builder.user(
            "Student",
            first,
            shown_name,
            etab,
            now,
            activated=False,
            address=address if address[0] else None,
            classes=[classe_id(c, _Csv.cell(row, niveau)) for c in class_names],
        )
        for surname in dict.fromkeys((family_name, shown_name)):
            by_name.setdefault((_fold_key(surname), _fold_key(first)), []).append(pupil)
            for c in class_names:
                by_class[(_fold_key(surname), _fold_key(first), _fold_key(c))] = pupil

    # Teachers: the head teacher ("Directeur") administers the school.
    t_usage, t_nom, t_prenom = (
        enseignants.index("Nom usage"),
        enseignants.index("Nom"),
        enseignants.index("Prénom"),
    )
    t_mail, t_head, t_classe = (
        enseignants.index("Courriel"),
        enseignants.index("Directeur"),
        enseignants.index("Classe"),
    )
    for row in enseignants.rows:
        builder.user(
            "Teacher",
            _Csv.cell(row, t_prenom),
            _Csv.cell(row, t_usage) or _Csv.cell(row, t_nom),
            etab,
            now,
            activated=False,
            email=_valid_email(_Csv.cell(row, t_mail)),
            is_adml=_fold_key(_Csv.cell(row, t_head)) == "oui",
            classes=[classe_id(c) for c in _split_classes(_Csv.cell(row, t_classe))],
        )

    # Parents and their children (up to three per row).
    r_usage, r_nom, r_prenom = (
        responsables.index(n) for n in ("Nom usage responsable", "Nom responsable", "Prénom responsable")
    )
    r_adresse, r_cp, r_commune = (
        responsables.index(n) for n in ("Adresse responsable", "CP responsable", "Commune responsable")
    )
    r_mail = responsables.index("Courriel")
    child_groups = responsables.indexes("Nom d'usage enfant")
    for row in responsables.rows:
        children: list[int] = []
        for start in child_groups:
            child_usage, child_family, child_first, child_classes = (
                _Csv.cell(row, start + k) for k in range(4)
            )
            if not child_first:
                continue
            child = _match_child(by_class, by_name, child_usage, child_family, child_first, child_classes)
            if child is None:
                log.warning(
                    "%s : enfant introuvable : %s %s (%s)",
                    responsables.path.name,
                    child_first,
                    child_family or child_usage,
                    child_classes,
                )
            elif child not in children:
                children.append(child)
        address = (_Csv.cell(row, r_adresse), _Csv.cell(row, r_cp), _Csv.cell(row, r_commune))
        parent = builder.user(
            "Relative",
            _Csv.cell(row, r_prenom),
            _Csv.cell(row, r_usage) or _Csv.cell(row, r_nom),
            etab,
            now,
            activated=False,
            email=_valid_email(_Csv.cell(row, r_mail)),
            address=address if address[0] else None,
        )
        for child in children:
            builder.link_parent(parent, child)

    builder.write()
    school = session.get(Etablissement, etab)
    assert school is not None
    return school


def _match_child(
    by_class: dict[tuple[str, str, str], int],
    by_name: dict[tuple[str, str], list[int]],
    usage: str,
    family: str,
    first: str,
    class_names: str,
) -> int | None:
    for surname in (family, usage):
        if not surname:
            continue
        for classe in _split_classes(class_names):
            found = by_class.get((_fold_key(surname), _fold_key(first), _fold_key(classe)))
            if found is not None:
                return found
        candidates = by_name.get((_fold_key(surname), _fold_key(first)), [])
        if len(candidates) == 1:  # class changed since the extraction, name still unique
            return candidates[0]
    return None


def _valid_email(value: str) -> str | None:
    value = value.strip()
    return value if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value) else None


# -- command line --------------------------------------------------------------------------


def seed_history(app: Any) -> str:
    """The rentrée under way: the école's local admin has printed the letters of
    its first two classes, through ``flask publipostage pdf`` as from a shell (her
    perimeter, her journal), so "Suivi des activations" has something to follow
    from the start. What was done, in a line."""
    from .models import db

    admin = db.session.scalar(sa.select(Utilisateur).where(Utilisateur.login == "adml.ecole"))
    if admin is None or admin.etablissement_id is None:
        return "Historique : aucune administratrice d'école."
    classes = db.session.scalars(
        sa.select(Classe).where(Classe.etablissement_id == admin.etablissement_id).order_by(Classe.nom).limit(2)
    ).all()
    db.session.commit()
    with tempfile.TemporaryDirectory() as folder:
        result = app.test_cli_runner().invoke(args=[
            "publipostage", "pdf", "--as-actor", admin.login, "--scope-key", f"etab:{admin.etablissement_id}",
            "--sort", "class", *(option for classe in classes for option in ("--class", str(classe.id))),
            "--output", str(Path(folder) / "lettres.pdf"),
        ])
    if result.exit_code != 0:
        raise RuntimeError(f"flask publipostage pdf : {result.output.strip()}")
    noms = ", ".join(classe.nom for classe in classes)
    return f"Historique : lettres des classes {noms} imprimées par {admin.login}."


def reset_database() -> None:
    """Drop every table of the database (the extension's too), then create them again."""
    from flask import current_app

    from flask_publipostage import Publipostage

    from .models import db

    metadata = sa.MetaData()
    metadata.reflect(bind=db.engine)
    metadata.drop_all(bind=db.engine)
    db.create_all()
    Publipostage.create_tables(current_app._get_current_object())  # type: ignore[attr-defined]


def _summary(session: SessionLike) -> str:
    lines = []
    counts = session.execute(
        sa.select(Etablissement.nom, Utilisateur.profil, sa.func.count())
        .join(Etablissement, Utilisateur.etablissement_id == Etablissement.id)
        .group_by(Etablissement.nom, Utilisateur.profil)
        .order_by(Etablissement.nom, Utilisateur.profil)
    )
    per_school: dict[str, list[str]] = {}
    for school, profil, number in counts:
        per_school.setdefault(school, []).append(f"{profil} {number}")
    for school, parts in per_school.items():
        lines.append(f"  {school} : {', '.join(parts)}")
    total = session.scalar(sa.select(sa.func.count()).select_from(Utilisateur)) or 0
    activated = (
        session.scalar(
            sa.select(sa.func.count()).select_from(Utilisateur).where(Utilisateur.code_activation.is_(None))
        )
        or 0
    )
    lines.append(f"  {total} comptes, dont {activated} activés ({activated / max(total, 1):.0%})")
    federes, bloques, expires = (
        session.scalar(sa.select(sa.func.count()).select_from(Utilisateur).where(condition)) or 0
        for condition in (
            Utilisateur.federe.is_(True),
            Utilisateur.bloque.is_(True),
            Utilisateur.code_activation_expire_le < datetime.now(UTC).replace(tzinfo=None),
        )
    )
    lines.append(f"  {federes} comptes ÉduConnect, {bloques} bloqués, {expires} codes d'activation expirés")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.ent_console.seed",
        description="Remplit la base de la console ENT Lumière avec des données de démonstration.",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="vider la base et la boîte d'envoi avant de remplir la base",
    )
    parser.add_argument(
        "--import-be1d",
        metavar="DOSSIER",
        type=Path,
        help="importer une extraction BE1D (be1d_*eleves.csv, *enseignants.csv, *responsables.csv)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="graine du générateur (défaut : %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from . import create_app
    from .auth import DEMO_ACCOUNTS
    from .models import db

    app = create_app()
    with app.app_context():
        started = time.perf_counter()
        if args.reset:
            reset_database()
            # The messages of the previous run name accounts and campaigns that are gone.
            clear_messages(app.config["ENT_CONSOLE_OUTBOX_DIR"])
        if db.session.scalar(sa.select(sa.func.count()).select_from(Etablissement)):
            print(
                "La base contient déjà des établissements : rien n'est généré "
                "(--reset pour repartir de zéro)."
            )
        else:
            seed_database(db.session, seed=args.seed)
            db.session.commit()
            print(seed_history(app))
        if args.import_be1d is not None:
            exists = db.session.scalar(
                sa.select(Etablissement.id).where(Etablissement.nom == BE1D_SCHOOL_NAME)
            )
            if exists:
                print(f"« {BE1D_SCHOOL_NAME} » est déjà importée.")
            else:
                try:
                    import_be1d(db.session, args.import_be1d, seed=args.seed)
                except (OSError, ValueError) as error:
                    db.session.rollback()
                    print(f"Import BE1D impossible : {error}", file=sys.stderr)
                    return 1
                db.session.commit()
        print(f"Base : {app.config['SQLALCHEMY_DATABASE_URI']} ({time.perf_counter() - started:.1f} s)")
        print(_summary(db.session))
    print("Comptes de démonstration (mot de passe « demo ») : " + ", ".join(a[0] for a in DEMO_ACCOUNTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
