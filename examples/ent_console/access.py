"""Who may administer what in the console: two callables handed to the extension, and
who reads which messages of the demo outbox.

Admins (the territory's super admin, a school's local admins) administer accounts.
A class teacher administers nothing but prints the credentials of their own class:
the pupils of the classes they teach and those pupils' parents, on paper only (the
capability ``print``, never ``send``: the codes go from hand to hand, as the ENT's
guide says), and the page speaks to them as to a teacher (``audience="teacher"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from flask import Flask
from flask_login import current_user
from sqlalchemy.orm import aliased

from flask_publipostage import Scope

from .models import Classe, Etablissement, Utilisateur, db, lien_parent_enfant, utilisateur_classe

CAPACITES = ("view", "print", "send", "renew")
#: A class teacher prints for their class; sending stays with the admins.
CAPACITES_ENSEIGNANT = ("view", "print")


def _utilisateur_connecte() -> Utilisateur | None:
    # Outside a request (CLI, background jobs) there is no current user at all.
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    if user is None or not user.is_authenticated:
        return None
    return user  # type: ignore[no-any-return]


def est_enseignant_de_classe(user: Utilisateur) -> bool:
    """A teacher of the school, without admin rights, who teaches at least one class."""
    return (
        user.profil == "Teacher"
        and not user.est_admin
        and user.etablissement_id is not None
        and bool(user.classes)
    )


def current_admin_scope() -> Scope | None:
    """The accounts and classes the logged-in user may administer (None: logged out)."""
    user = _utilisateur_connecte()
    return None if user is None else scope_of(user)


def cli_scope(actor: str, scope_key: str) -> Scope | None:
    """The perimeter of ``flask publipostage`` commands (``extras["cli_scope"]``):
    ``--as-actor`` is a login, ``--scope-key`` must be that user's perimeter
    (``etab:3``, ``enseignant:12``, ``*``); None otherwise."""
    user = db.session.scalar(sa.select(Utilisateur).where(Utilisateur.login == actor))
    scope = scope_of(user) if user is not None else None
    return scope if scope is not None and scope.key == scope_key else None


def scope_of(user: Utilisateur) -> Scope:
    """The accounts and classes ``user`` may administer."""
    # The journal names the admin as people know them.
    name = f"{user.nom_complet} ({user.login})"
    if user.is_super_admin:
        return Scope(actor=f"user:{user.id}", key="*", actor_email=user.courriel, actor_name=name)
    etablissement = db.session.get(Etablissement, user.etablissement_id) if user.etablissement_id else None
    if etablissement is not None and est_enseignant_de_classe(user):
        return _scope_of_a_class_teacher(user, etablissement, name)
    if not user.is_adml or etablissement is None:
        # Logged in without admin rights: an empty perimeter (the permission says no anyway).
        return Scope(
            actor=f"user:{user.id}",
            users=sa.false(),
            classes=sa.false(),
            key=f"user:{user.id}",
            actor_email=user.courriel,
            actor_name=name,
        )
    return Scope(
        actor=f"user:{user.id}",
        # A local admin never sees the territory's super admins, even if attached here.
        users=(Utilisateur.etablissement_id == etablissement.id) & Utilisateur.is_super_admin.is_(False),
        classes=Classe.etablissement_id == etablissement.id,
        key=f"etab:{etablissement.id}",
        school_name=etablissement.nom,
        actor_email=user.courriel,
        actor_name=name,
    )


def _scope_of_a_class_teacher(user: Utilisateur, etablissement: Etablissement, name: str) -> Scope:
    """The classes ``user`` teaches, their pupils, and those pupils' parents.

    Read in SQL at each request (a class given or taken back counts at once). The
    conditions name only the link tables and an alias of their own: the extension
    applies ``users`` to aliases of ``Utilisateur`` too (a parent's children).
    """
    taught = sa.select(utilisateur_classe.c.classe_id).where(utilisateur_classe.c.utilisateur_id == user.id)
    eleve = aliased(Utilisateur, name="eleve_de_la_classe")
    pupils = (
        sa.select(eleve.id)
        .join(utilisateur_classe, utilisateur_classe.c.utilisateur_id == eleve.id)
        .where(
            utilisateur_classe.c.classe_id.in_(taught),
            eleve.profil == "Student",
            eleve.etablissement_id == etablissement.id,
        )
    )
    parents = sa.select(lien_parent_enfant.c.parent_id).where(lien_parent_enfant.c.enfant_id.in_(pupils))
    return Scope(
        actor=f"user:{user.id}",
        users=sa.and_(
            Utilisateur.is_super_admin.is_(False),
            sa.or_(
                sa.and_(Utilisateur.profil == "Student", Utilisateur.id.in_(pupils)),
                sa.and_(Utilisateur.profil == "Relative", Utilisateur.id.in_(parents)),
            ),
        ),
        classes=Classe.id.in_(taught),
        # Their own journal: what they printed, not the school's.
        key=f"enseignant:{user.id}",
        school_name=etablissement.nom,
        actor_email=user.courriel,
        actor_name=name,
        audience="teacher",
    )


def current_admin_can(capability: str) -> bool:
    """Super admins and local admins may view, print, send and have renewal codes
    issued; a class teacher may view and print (their class); nobody else anything."""
    user = _utilisateur_connecte()
    if user is None or capability not in CAPACITES:
        return False
    if user.is_super_admin or user.is_adml:
        return True
    return capability in CAPACITES_ENSEIGNANT and est_enseignant_de_classe(user)


def est_admin() -> bool:
    user = _utilisateur_connecte()
    return user is not None and user.est_admin


def outbox_schools() -> frozenset[str] | None:
    """The schools (UAI) whose outbox messages the logged-in user reads; None: every message.

    A super admin reads them all; a local admin those stored for their school; anybody
    else none.
    """
    user = _utilisateur_connecte()
    if user is not None and user.is_super_admin:
        return None
    if user is None or not user.is_adml or user.etablissement is None:
        return frozenset()
    return frozenset({user.etablissement.uai})


def school_of_recipients(app: Flask) -> Callable[[Sequence[str]], str | None]:
    """The outbox's directory look-up: the UAI of the one school whose accounts own every
    one of these addresses, else None.

    None as well when an address belongs to no account, to a super admin, to an account
    without a school, or to accounts of two schools: such a message is not shown to a
    local admin, whose scope would not show the account either.
    """

    def school_of(addresses: Sequence[str]) -> str | None:
        wanted = {address.strip().lower() for address in addresses if address.strip()}
        if not wanted:
            return None
        address = sa.func.lower(Utilisateur.courriel)
        with app.app_context():
            rows = db.session.execute(
                sa.select(address, Etablissement.uai, Utilisateur.is_super_admin)
                .outerjoin(Etablissement, Utilisateur.etablissement_id == Etablissement.id)
                .where(address.in_(wanted))
            ).all()
        if {row[0] for row in rows} != wanted:
            return None
        schools = {None if super_admin else uai for _, uai, super_admin in rows}
        return schools.pop() if len(schools) == 1 else None

    return school_of
