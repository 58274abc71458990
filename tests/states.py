"""A school with an account in each state, for the tests of the account states
(federated, blocked, code expiry, renewal codes): see ``build_states``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from flask_publipostage.models import metadata

from .hosts import Division, Personne, add_person, db

#: A code still valid (naive UTC, as the test host writes): 31/12/2099 in Paris.
VALID_UNTIL = datetime(2099, 12, 31, 18, 0)
#: A code that expired: 15/01/2020 in Paris.
EXPIRED_ON = datetime(2020, 1, 15, 12, 0)


@dataclass
class States:
    """The accounts by login, and the class of school A."""

    people: dict[str, Personne] = field(default_factory=dict)
    ce1: Any = None
    other_class: Any = None

    def uid(self, login: str) -> int:
        return int(self.people[login].uid)


def build_states() -> States:
    """School A: a pupil not activated whose code is valid (``leo.nouveau``), one
    whose code expired (``ines.expire``, with an email too), an activated pupil
    without an email (``zoe.active``), an activated parent with one
    (``anne.active``), a federated parent who still has a code in the directory
    (``paul.federe``), a blocked pupil (``max.bloque``), and a super admin attached
    to the school (``root.super``). School B: an activated pupil without an email
    (``bob.autre``)."""
    found = States()
    found.ce1 = Division(libelle="CE1 Lune", ecole="A")
    found.other_class = Division(libelle="CE1 Soleil", ecole="B")
    db.session.add_all([found.ce1, found.other_class])
    people = found.people
    people["leo.nouveau"] = add_person(
        "leo.nouveau", "Léo", "Nouveau", "ELEVE", divisions=[found.ce1], code_until=VALID_UNTIL, email="leo@example.org"
    )
    people["ines.expire"] = add_person(
        "ines.expire", "Inès", "Expire", "ELEVE", divisions=[found.ce1], code_until=EXPIRED_ON, email="ines@example.org"
    )
    people["zoe.active"] = add_person("zoe.active", "Zoé", "Active", "ELEVE", divisions=[found.ce1], activated=True)
    people["anne.active"] = add_person(
        "anne.active", "Anne", "Active", "PARENT", activated=True, email="anne@example.org",
        enfants=[people["zoe.active"]],
    )
    people["paul.federe"] = add_person(
        "paul.federe", "Paul", "Fédéré", "PARENT", federated=True, email="paul@example.org",
        enfants=[people["leo.nouveau"]], code_until=VALID_UNTIL,
    )
    people["max.bloque"] = add_person(
        "max.bloque", "Max", "Bloqué", "ELEVE", divisions=[found.ce1], blocked=True, email="max@example.org"
    )
    people["root.super"] = add_person("root.super", "Root", "Super", "PERS", activated=True, super_admin=True)
    people["bob.autre"] = add_person(
        "bob.autre", "Bob", "Autre", "ELEVE", school="B", divisions=[found.other_class], activated=True
    )
    db.session.commit()
    return found


#: Text every code of the test host starts with: activation (``CODE-``) and renewal.
CODE_MARKERS = ("CODE-", "RENEW")


def extension_tables_text() -> str:
    """Every row of the extension's own tables, as text (nothing of them may hold a code)."""
    rows = []
    with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                rows.append(" ".join(str(value) for value in row))
    return "\n".join(rows)
