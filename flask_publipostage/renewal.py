"""Renewal codes: asked of the host while the letters are rendered, kept nowhere.

An activated account whose owner lost the password and has no email address
cannot use "Mot de passe oublié": the letter must carry a *renewal code*, as ENT
Core's ``massGeneratePasswordRenewalCode`` issues them. The host gives
``init_app`` a ``renew`` callable, ``(ids) -> {id: (code, valid_until)}``, that
creates a code for each account in its own tables; the admin asks for codes under
"Générer en PDF" and needs the capability ``renew``.

*When* codes are issued is the point of this module. A code is a secret the
extension never stores (no table, no log, not the run's options), and a large PDF
is rendered later, chunk by chunk, in a thread or a Celery worker, from the run's
frozen items. So the codes are asked for at render time, one call per chunk, for
the accounts of that chunk only, and live in memory until the chunk's HTML is
rendered into the file (which holds activation codes anyway). The run's items
record *that* a code was issued and when (``renewal_issued_at``), never the code.

The trade-off: a chunk rendered again (the process died before its file was
written, the run was taken over) asks for new codes for its accounts, and the
host replaces the earlier ones, which were never handed out; a file never
downloaded (it expired, or the run was cancelled) leaves codes issued but unseen
until they expire. Issuing every code when the run starts would instead require
keeping them somewhere until their chunk is rendered.

Who gets one is one rule (:func:`wanted`): never a federated or blocked account;
activated accounts without an email address (``without_email``) or all selected
activated accounts (``activated``); and, with ``renew_expired``, accounts whose
activation code has expired. Never an account outside the admin's perimeter:
the ids come from the run's selection and are checked again against the frozen
perimeter just before the call.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from .access import Scope
from .i18n import gettext as _
from .recipients import Recipient
from .state import state

log = logging.getLogger(__name__)

#: The choices of the PDF option ``renew`` ("" asks for none).
WITHOUT_EMAIL = "without_email"
ACTIVATED = "activated"
CHOICES = (WITHOUT_EMAIL, ACTIVATED)

#: What the host's callable returns for one account: the code, and until when it
#: works (a datetime, a date valid through that day, or None).
Issued = tuple[str, datetime | date | None]
Renew = Callable[[list[Any]], Mapping[Any, Issued]]


class RenewalError(RuntimeError):
    """The host's callable failed or answered something else than codes; the
    message never holds a code."""


#: A run failed by :class:`RenewalError` records its type, as every failed run
#: does (never data): its pages say so in words (:func:`failed_message`).
FAILED = RenewalError.__name__


def failed_message() -> str:
    return _("The renewal codes could not be issued: nothing was printed. Try again; if it fails again, "
             "contact your administrator.")


def available() -> bool:
    """The host gave ``init_app`` a ``renew`` callable."""
    return state().renew_callback is not None


def wanted(recipient: Recipient, choice: str, expired: bool) -> bool:
    """Whether ``recipient`` gets a renewal code on this output (``choice``: the
    option ``renew``; ``expired``: the option ``renew_expired``)."""
    if recipient.federated or recipient.blocked:
        return False
    if recipient.activated:
        return choice == ACTIVATED or (choice == WITHOUT_EMAIL and not recipient.has_email)
    return expired and recipient.code_expired


def issue(recipients: Sequence[Recipient], choice: str, expired: bool, scope: Scope | None) -> tuple[list[Recipient], list[Any]]:
    """``recipients`` with the renewal codes the host issued now for those
    :func:`wanted`, and the ids of those accounts. One call to the host; nothing
    is asked when nobody is wanted or no callable was given."""
    callback = state().renew_callback
    if callback is None or not (choice or expired):
        return list(recipients), []
    # Once per account, though it may have a sheet in several bundles.
    ids = list(dict.fromkeys(r.id for r in recipients if wanted(r, choice, expired)))
    ids = in_perimeter(ids, scope)
    if not ids:
        return list(recipients), []
    try:
        answer = callback(list(ids))
    except Exception as exc:
        # The host's own error may quote its data: its type only.
        raise RenewalError(_("The renewal codes could not be issued (%(error)s).", error=type(exc).__name__)) from None
    if not isinstance(answer, Mapping):
        raise RenewalError(_("The renewal codes could not be issued (%(error)s).", error=type(answer).__name__))
    by_text = {str(key): value for key, value in answer.items()}
    issued: dict[str, Issued] = {}
    for user_id in ids:
        value = by_text.get(str(user_id))
        if value is None:
            continue  # the host gave none for this account: its usual letter
        try:
            code, valid_until = (value, None) if isinstance(value, str) else tuple(value)
        except (TypeError, ValueError):
            code, valid_until = None, None
        if not isinstance(code, str) or not code.strip() or not isinstance(valid_until, (datetime, date, type(None))):
            raise RenewalError(_("The renewal codes could not be issued (%(error)s).", error=type(value).__name__))
        issued[str(user_id)] = (code.strip(), valid_until)
    log.info("publipostage: %d renewal codes issued", len(issued))
    found = []
    for recipient in recipients:
        value = issued.get(str(recipient.id))
        if value is not None:
            recipient = dataclasses.replace(recipient, renewal_code=value[0], renewal_valid_until=value[1])
        found.append(recipient)
    return found, [user_id for user_id in ids if str(user_id) in issued]


def in_perimeter(ids: Sequence[Any], scope: Scope | None) -> list[Any]:
    """Those of ``ids`` the admin's perimeter holds, in their order (the run's
    frozen one for a background run)."""
    if not ids or scope is None or scope.users is None:
        return list(ids)
    host = state().host
    inside = set(
        state().session.execute(sa.select(host.user_id).where(host.user_id.in_(list(ids)), scope.users)).scalars()
    )
    return [user_id for user_id in ids if user_id in inside]
