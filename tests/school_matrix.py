"""The hand-built school of ``school.py`` plus the people the filter matrix needs.

Added to school A:

* three more Abel pupils whose first names only sort right in French order
  ("Elodie", "Émile", "Léa" with the last name in capitals);
* accounts created exactly on day boundaries in Europe/Paris: midnight of
  1 September 2025 (summer time, UTC+2), the last second of that day, and
  midnight of 15 January 2026 (winter time, UTC+1);
* a parent whose only child is in no class, and a local admin not yet activated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .hosts import Personne, add_person, db
from .school import School, build_school


@dataclass
class MatrixSchool(School):
    @property
    def class_ids(self) -> dict[str, int]:
        return {"cp": self.cp.ref, "cm1": self.cm1.ref, "ce2": self.ce2.ref, "b": self.other_school_class.ref}


def build_matrix_school() -> MatrixSchool:
    base = build_school()
    logins: dict[str, Personne] = dict(base.logins)

    def add(login: str, *args, **kwargs) -> Personne:
        logins[login] = add_person(login, *args, **kwargs)
        return logins[login]

    add(
        "elodie.abel", "Elodie", "Abel", "ELEVE", divisions=[base.ce2],
        created=datetime(2025, 8, 31, 22, 0, 0),  # 2025-09-01 00:00:00 in Paris
    )
    add(
        "emile.abel", "Émile", "Abel", "ELEVE", divisions=[base.cp],
        created=datetime(2025, 9, 1, 21, 59, 59),  # 2025-09-01 23:59:59 in Paris
    )
    add(
        "lea.abel", "Léa", "ABEL", "ELEVE", divisions=[base.cm1], activated=True,
        created=datetime(2025, 9, 2, 0, 0),
    )
    add(
        "hugo.sansclasse", "Hugo", "Sansclasse", "PARENT", email="hugo@example.org",
        enfants=[logins["nina.sansclasse"]],
    )
    add("claire.pers", "Claire", "Bénard", "PERS", adml=True)
    add(
        "yves.noel", "Yves", "Noël", "INVITE",
        created=datetime(2026, 1, 14, 23, 0),  # 2026-01-15 00:00 in Paris
    )
    db.session.commit()
    return MatrixSchool(base.cp, base.cm1, base.ce2, base.other_school_class, logins)
