"""Renewal codes of the console: issued for the extension's letters, accepted by the
login page.

``emettre_codes(ids)`` is the ``renew`` callable given to ``init_app``: the
extension calls it while it renders a PDF whose admin asked for renewal codes
(an activated pupil who lost the password and has no email address). It creates a
code for each account, keeps only a keyed digest of it, and returns the codes:
the extension prints them and keeps none. A new code replaces the previous one.

On the login page, a renewal code works once in place of the password, until it
expires; the user then chooses a new password (``auth.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from .models import CodeRenouvellement, Utilisateur, db

#: As the activation codes: no 0/O, no 1/I/l.
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
LONGUEUR = 10
#: How long a renewal code works.
VALIDITE = timedelta(days=30)


def maintenant() -> datetime:
    """Now, naive UTC (the console's datetimes)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _empreinte(utilisateur_id: int, code: str) -> str:
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, f"{utilisateur_id}:{code.strip().upper()}".encode(), hashlib.sha256).hexdigest()


def emettre_codes(ids: Iterable[int]) -> dict[int, tuple[str, datetime]]:
    """A new renewal code for each account that may have one (neither federated
    nor blocked), valid ``VALIDITE``: ``{id: (code, valable jusqu'au)}``."""
    wanted = [int(i) for i in ids]
    if not wanted:
        return {}
    comptes = db.session.scalars(
        sa.select(Utilisateur.id).where(
            Utilisateur.id.in_(wanted), Utilisateur.federe.is_(False), Utilisateur.bloque.is_(False)
        )
    ).all()
    now = maintenant()
    jusqu_au = (now + VALIDITE).replace(microsecond=0)
    codes = {}
    for utilisateur_id in comptes:
        code = "".join(secrets.choice(ALPHABET) for _ in range(LONGUEUR))
        codes[utilisateur_id] = (code, jusqu_au)
    if codes:
        db.session.execute(sa.delete(CodeRenouvellement).where(CodeRenouvellement.utilisateur_id.in_(list(codes))))
        db.session.execute(
            sa.insert(CodeRenouvellement),
            [
                {"utilisateur_id": i, "empreinte": _empreinte(i, code), "valable_jusqu_au": until, "cree_le": now}
                for i, (code, until) in codes.items()
            ],
        )
        db.session.commit()
    return codes


def utiliser(utilisateur: Utilisateur, code: str) -> bool:
    """``code`` is ``utilisateur``'s renewal code, still valid: it is used up (True)."""
    found = db.session.get(CodeRenouvellement, utilisateur.id)
    if found is None or utilisateur.bloque or utilisateur.federe or not code.strip():
        return False
    if found.valable_jusqu_au < maintenant():
        return False
    if not hmac.compare_digest(found.empreinte, _empreinte(utilisateur.id, code)):
        return False
    db.session.delete(found)
    db.session.commit()
    return True
