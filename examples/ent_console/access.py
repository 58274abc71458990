"""Who may administer what in the console: two callables handed to the extension, and
who reads which messages of the demo outbox."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from flask import Flask
from flask_login import current_user

from flask_publipostage import Scope

from .models import Classe, Etablissement, Utilisateur, db

CAPACITES = ("view", "print", "send")


def _utilisateur_connecte() -> Utilisateur | None:
    # Outside a request (CLI, background jobs) there is no current user at all.
    user = current_user._get_current_object()  # type: ignore[attr-defined]
    if user is None or not user.is_authenticated:
        return None
    return user  # type: ignore[no-any-return]


def current_admin_scope() -> Scope | None:
    """The accounts and classes the logged-in user may administer (None: logged out)."""
    user = _utilisateur_connecte()
    if user is None:
        return None
    # The journal names the admin as people know them.
    name = f"{user.nom_complet} ({user.login})"
    if user.is_super_admin:
        return Scope(actor=f"user:{user.id}", key="*", actor_email=user.courriel, actor_name=name)
    etablissement = db.session.get(Etablissement, user.etablissement_id) if user.etablissement_id else None
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


def current_admin_can(capability: str) -> bool:
    """Super admins and local admins may view, print and send; nobody else."""
    user = _utilisateur_connecte()
    if user is None or capability not in CAPACITES:
        return False
    return bool(user.is_super_admin or user.is_adml)


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
