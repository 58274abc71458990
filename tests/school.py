"""A small hand-built school whose expected selections are known exactly."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .hosts import Division, Personne, add_person, db


@dataclass
class School:
    cp: Division
    cm1: Division
    ce2: Division
    other_school_class: Division
    logins: dict[str, Personne]


def build_school() -> School:
    """School A: 3 classes; school B: one class; a super admin attached to A.

    Creation dates straddle 2025-09-01 (Europe/Paris): accounts created at
    2025-08-31 22:30 UTC are on 1 September in Paris.
    """
    cp = Division(libelle="CP de Mme Émery", ecole="A")
    cm1 = Division(libelle="CM1 de M. Zola", ecole="A")
    ce2 = Division(libelle="CE2 de Mme Élise", ecole="A")
    b_class = Division(libelle="CP de l'école B", ecole="B")
    db.session.add_all([cp, cm1, ce2, b_class])
    logins: dict[str, Personne] = {}

    def add(login: str, *args, **kwargs) -> Personne:
        logins[login] = add_person(login, *args, **kwargs)
        return logins[login]

    zoe = add("zoe.abel", "Zoé", "Abel", "ELEVE", divisions=[cp], created=datetime(2025, 8, 31, 22, 30))
    elodie = add("elodie.zidane", "Élodie", "Zidane", "ELEVE", divisions=[cm1], activated=True)
    lucas = add("lucas.etienne", "Lucas", "Étienne", "ELEVE", divisions=[ce2], created=datetime(2025, 8, 31, 21, 59))
    add("nina.sansclasse", "Nina", "Sansclasse", "ELEVE", divisions=[])
    add(
        "marie.abel", "Marie", "Abel", "PARENT", email="marie.abel@example.org",
        enfants=[zoe, elodie], rue="3 rue des Lilas", ville="75011 Paris",
    )
    add("paul.etienne", "Paul", "Étienne", "PARENT", enfants=[lucas], activated=True)
    add(
        "anne.prof", "Anne", "Œillet", "PROF", email="anne.prof@example.org",
        divisions=[cp, cm1], adml=True, activated=True,
    )
    add("jean.prof", "Jean", "Dupont", "PROF", email="jean.prof@example.org", divisions=[ce2])
    add("sam.pers", "Sam", "Durand", "PERS", email="sam.pers@example.org")
    add("ines.invite", "Inès", "Martin", "INVITE", created=datetime(2026, 1, 15, 12, 0))
    add("root.admin", "Root", "Admin", "PERS", super_admin=True, email="root@example.org")
    add("bob.b", "Bob", "Bernard", "ELEVE", school="B", divisions=[b_class])
    db.session.commit()
    return School(cp, cm1, ce2, b_class, logins)
