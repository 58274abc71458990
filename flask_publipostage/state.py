"""The per-app state of the extension, and the one way to reach it.

``init_app`` stores a :class:`PublipostageState` in ``app.extensions["publipostage"]``;
every module reads it through :func:`state` (the current app's) rather than the
dictionary, so its shape is written down once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, has_app_context

KEY = "publipostage"


@dataclass
class PublipostageState:
    """What ``init_app`` was given and built for one app."""

    extension: Any
    db: Any
    #: The host's models seen through the field mapping (:class:`~flask_publipostage.host.HostModels`).
    host: Any
    #: ``() -> Scope | None`` (:mod:`flask_publipostage.access`).
    scope_callback: Callable[[], Any]
    permission_callback: Callable[[str], bool]
    #: The extension's own Flask-Babel domain.
    domain: Any
    #: The background runner (:mod:`flask_publipostage.runs.backends`).
    runner: Any = None
    #: ``(ids) -> {id: (code, valid_until)}``: the host issues renewal codes
    #: (:mod:`flask_publipostage.renewal`); None when it gave none.
    renew_callback: Callable[[list[Any]], Any] | None = None
    #: ``() -> bool``: is the admin's authentication recent or strong enough for
    #: codes? None: no step-up (:mod:`flask_publipostage.access`).
    step_up_callback: Callable[[], bool] | None = None
    #: ``(back) -> str``: the host's re-authentication page, returning to ``back``.
    step_up_url_callback: Callable[[str], str] | None = None
    #: Optional host hooks, e.g. ``cli_scope(actor, scope_key) -> Scope`` for the CLI.
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def session(self) -> Any:
        return self.db.session


def state(app: Flask | None = None) -> PublipostageState:
    """The state of ``app`` (default: the current app); KeyError when not mounted."""
    return (app or current_app).extensions[KEY]  # type: ignore[no-any-return]


def mounted() -> PublipostageState | None:
    """The current app's state, or None outside an app or before ``init_app``."""
    if not has_app_context():
        return None
    return current_app.extensions.get(KEY)
