"""Who may do what, and on which accounts: both decided by the host.

The host gives two callables to ``init_app``:

* ``scope() -> Scope | None``: the accounts and classes the current admin may see
  (``None`` when nobody is logged in);
* ``permission(capability) -> bool`` for the capabilities ``view``, ``print``
  (PDF, CSV) and ``send`` (mail).

Without them ``init_app`` refuses to start: the page fails closed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import abort, current_app

from .state import state

VIEW = "view"
PRINT = "print"
SEND = "send"
CAPABILITIES = (VIEW, PRINT, SEND)


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
    """

    actor: str
    users: Any = None
    classes: Any = None
    key: str = "*"
    school_name: str = ""
    actor_email: str | None = None
    actor_name: str = ""

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
