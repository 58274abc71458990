"""Who may do what, and on which accounts: both decided by the host.

The host gives two callables to ``init_app``:

* ``scope() -> Scope | None``: the accounts and classes the current admin may see
  (``None`` when nobody is logged in);
* ``permission(capability) -> bool`` for the capabilities ``view``, ``print``
  (PDF, CSV), ``send`` (mail) and ``renew`` (have the host issue renewal codes,
  printed on the letters: only with a ``renew`` callable given to ``init_app``).

Without them ``init_app`` refuses to start: the page fails closed.

A third, optional pair asks for a *recent* authentication before codes leave
(step-up, as ENT Core's ``@MfaProtected`` or Flask-Security's
``auth_required(within=...)``): ``step_up() -> bool`` says whether the admin's
authentication is recent or strong enough, ``step_up_url(back) -> str`` where the
host asks for it again, returning to ``back`` (a path of this site) afterwards.
When they are given, the codes in the preview stay hidden, and printing,
exporting, downloading a file and sending (a sample, a campaign, its resumption)
send the admin there first and back to the same selection: nothing is done on
the way. Without them, nothing changes.

The scope also says whom the page speaks to (:attr:`Scope.audience`): an ENT
admin, or a class teacher to whom the host gave the pupils of their classes and
those pupils' parents. Only the words change (the advice, the ready-made
selections): what may be seen stays with ``users`` and ``classes``, what may be
done with the permission callable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, current_app, redirect

from .state import state

VIEW = "view"
PRINT = "print"
SEND = "send"
#: Asking the host for new codes changes the accounts (an earlier code stops
#: working): a capability of its own, on top of ``print``.
RENEW = "renew"
CAPABILITIES = (VIEW, PRINT, SEND, RENEW)

#: Whom the page speaks to: an ENT admin (the ENT guide's advice for every
#: profile), or a teacher handing their classes' credentials out in person.
ADMIN = "admin"
TEACHER = "teacher"
AUDIENCES = (ADMIN, TEACHER)


@dataclass(frozen=True)
class Scope:
    """What the current admin may see.

    :param actor: a stable identifier of the admin (audit, ownership of jobs and files).
    :param users: SQL condition on the host user model restricting the accounts
        (``None``: every account, for a super admin). It must exclude accounts the
        admin must never see, such as super admins for a local admin.
    :param classes: SQL condition on the host class model restricting the classes.
    :param key: identifies the perimeter for audit visibility; ``"*"`` for a super
        admin (sees every audit row), a school id for a local admin.
    :param school_name: printed on letters and used to name files.
    :param actor_email: where "m'envoyer un exemple" sends a sample.
    :param actor_name: how the journal and the lists of runs name the admin
        ("Mme Dupont (adml.ecole)"); ``actor`` when empty.
    :param audience: whom the page speaks to: ``"admin"`` (default) or
        ``"teacher"``, a class teacher printing for their own classes (advice and
        ready-made selections in a teacher's words). It grants nothing: give such
        a user a scope of their classes and the capabilities ``view`` and
        ``print``.
    """

    actor: str
    users: Any = None
    classes: Any = None
    key: str = "*"
    school_name: str = ""
    actor_email: str | None = None
    actor_name: str = ""
    audience: str = ADMIN

    def __post_init__(self) -> None:
        if self.audience not in AUDIENCES:
            raise ValueError(f"unknown audience {self.audience!r}: one of {', '.join(AUDIENCES)}")

    @property
    def is_global(self) -> bool:
        return self.key == "*"


F = TypeVar("F", bound=Callable[..., Any])


def current_scope() -> Scope:
    """The current admin's scope; 401 (or the host's login page) when nobody is logged in.

    Asked of the host at each call, never cached: an app context (``g``) may outlive
    one request, and the scope belongs to the request's user.
    """
    scope = state().scope_callback()
    if scope is None:
        login_manager = getattr(current_app, "login_manager", None)
        if login_manager is not None:
            abort(login_manager.unauthorized())
        abort(401)
    return scope


def has_capability(capability: str) -> bool:
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}")
    return bool(state().permission_callback(capability))


def require(capability: str) -> Callable[[F], F]:
    """View decorator: a logged-in admin holding ``capability``, or 401/403."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            current_scope()
            if not has_capability(capability):
                abort(403)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def authenticated_recently() -> bool:
    """True when the host's step-up check passes, or when the host gave none."""
    check = state().step_up_callback
    return check is None or bool(check())


def step_up_url(back: str) -> str | None:
    """The host's re-authentication page returning to ``back``, when it is needed
    now; None when the admin's authentication is recent enough (or no step-up)."""
    if authenticated_recently():
        return None
    found = state().step_up_url_callback
    assert found is not None  # init_app takes both or neither
    return str(found(back))


def require_recent_authentication(back: str) -> None:
    """Before codes leave: a stale authentication is sent (303) to the host's
    re-authentication page, which returns to ``back`` (the same selection)."""
    url = step_up_url(back)
    if url is not None:
        abort(redirect(url, code=303))
