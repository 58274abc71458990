"""The extension's own translation domain.

Templates translate through the Jinja globals ``_pp`` and ``_pp_n`` bound to this
domain, never through the host's ``_``: the host's catalog stays untouched.
"""

from __future__ import annotations

import os
from typing import Any

from flask import current_app
from flask_babel import Domain, LazyString

from .state import mounted

DOMAIN_NAME = "flask_publipostage"


def resource_dir(name: str) -> str:
    """Folder of packaged data: ``<package>/<name>`` (wheel) or ``<package>/../<name>``."""
    here = os.path.dirname(os.path.abspath(__file__))
    inside = os.path.join(here, name)
    if os.path.isdir(inside):
        return inside
    return os.path.join(os.path.dirname(here), name)


def make_domain(extra_directories: tuple[str, ...] | list[str] = ()) -> Domain:
    return Domain(
        translation_directories=[resource_dir("translations"), *extra_directories],
        domain=DOMAIN_NAME,
    )


def _domain() -> Domain | None:
    found = mounted()
    if found is None or "babel" not in current_app.extensions:
        return None
    return found.domain  # type: ignore[no-any-return]


def gettext(string: str, **variables: Any) -> str:
    domain = _domain()
    if domain is None:
        return string % variables if variables else string
    return domain.gettext(string, **variables)


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    domain = _domain()
    if domain is None:
        variables.setdefault("num", num)
        return (singular if num == 1 else plural) % variables
    return domain.ngettext(singular, plural, num, **variables)


def lazy_gettext(string: str, **variables: Any) -> LazyString:
    return LazyString(gettext, string, **variables)


_ = gettext
