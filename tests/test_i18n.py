"""The French catalog is complete and the committed .mo matches the .po."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "translations" / "fr" / "LC_MESSAGES" / "flask_publipostage"
KEYWORDS = {
    "_": None, "gettext": None, "_l": None, "lazy_gettext": None, "_pp": None,
    "ngettext": (1, 2), "_pp_n": (1, 2),
}
METHODS = [
    ("flask_publipostage/**.py", "python"),
    ("templates/**.html", "jinja2"),
    ("templates/**.txt", "jinja2"),
]


def _used_msgids() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT), METHODS, keywords=KEYWORDS, options_map={"templates/**": {"encoding": "utf-8"}}
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def _catalog() -> Any:
    with open(f"{CATALOG}.po", "rb") as f:
        return read_po(f, locale="fr")


def test_every_msgid_has_a_french_translation() -> None:
    catalog = _catalog()
    missing = []
    for msgid in sorted(_used_msgids()):
        message = catalog.get(msgid)
        strings = [] if message is None else (
            message.string if isinstance(message.string, (list, tuple)) else [message.string]
        )
        if not strings or not all(strings):
            missing.append(msgid)
    assert not missing, f"msgids without French translation: {missing}"


def test_committed_mo_matches_po() -> None:
    po = _catalog()
    with open(f"{CATALOG}.mo", "rb") as f:
        mo = read_mo(f)
    def pairs(catalog: Any) -> dict[Any, Any]:
        return {
            (m.id if isinstance(m.id, str) else tuple(m.id)):
            (m.string if isinstance(m.string, str) else tuple(m.string))
            for m in catalog if m.id and not m.fuzzy
        }
    assert pairs(po) == pairs(mo), "run `make translations` (or pybabel compile) and commit the .mo"


def test_host_catalog_untouched(client: Any, school: Any) -> None:
    """The host's own `_` still uses its own (here empty) catalog."""
    from flask import render_template_string

    with client.client.application.test_request_context():
        assert render_template_string("{{ _('Activation code') }}") == "Activation code"
        assert render_template_string("{{ _pp('Activation code') }}") == "Code d&#39;activation"


def test_the_locale_forced_within_a_request_is_followed(client: Any, school: Any) -> None:
    """The catalog is looked up once per request and locale: a ``force_locale``
    inside the request (the mail commands force French), or a ``refresh``, is
    followed at the next string, and left behind after it."""
    from flask_babel import force_locale

    from flask_publipostage.i18n import gettext, ngettext

    with client.client.application.test_request_context():
        assert gettext("Activation code") == "Code d'activation"
        with force_locale("en"):
            assert gettext("Activation code") == "Activation code"
            assert ngettext("%(num)d class", "%(num)d classes", 1) == "1 class"
        assert gettext("Activation code") == "Code d'activation"
        assert ngettext("%(num)d class", "%(num)d classes", 1) == "1 classe"
