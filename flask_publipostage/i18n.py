"""The extension's own translation domain.

Templates translate through the Jinja globals ``_pp`` and ``_pp_n`` bound to this
domain, never through the host's ``_``: the host's catalog stays untouched.
"""

from __future__ import annotations

import os
from typing import Any

from flask import current_app, g
from flask_babel import Domain, LazyString, get_locale

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


def _catalog() -> Any:
    """The domain's translations for the current locale, None without the domain.

    Kept on ``g`` with the domain and the locale object it was looked up for (a
    ``force_locale`` or a ``refresh`` gives another): Flask-Babel's own look-up,
    at each string, costs more than the rest of a history line, and a preview
    translates thousands of strings."""
    domain = _domain()
    if domain is None:
        return None
    locale = get_locale()
    kept = g.get("_publipostage_catalog")
    if kept is not None and kept[0] is domain and kept[1] is locale:
        return kept[2]
    translations = domain.get_translations()
    g._publipostage_catalog = (domain, locale, translations)
    return translations


def gettext(string: str, **variables: Any) -> str:
    catalog = _catalog()
    if catalog is None:
        return string % variables if variables else string
    found = catalog.ugettext(string)
    return found % variables if variables else found  # type: ignore[no-any-return]


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    variables.setdefault("num", num)
    catalog = _catalog()
    if catalog is None:
        return (singular if num == 1 else plural) % variables
    return catalog.ungettext(singular, plural, num) % variables  # type: ignore[no-any-return]


def lazy_gettext(string: str, **variables: Any) -> LazyString:
    return LazyString(gettext, string, **variables)


_ = gettext
