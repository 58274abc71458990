"""flask-publipostage: the page "Publipostage des comptes" for a Flask ENT console.

The names below are imported on first use: a PDF worker process imports
``flask_publipostage.pdf.worker`` alone, not the whole extension.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module defining it.
_EXPORTS = {
    "CAPABILITIES": "access",
    "PRINT": "access",
    "RENEW": "access",
    "SEND": "access",
    "VIEW": "access",
    "Scope": "access",
    "MenuEntry": "extension",
    "Publipostage": "extension",
    "HostModels": "host",
    "MappingError": "host",
    "Selection": "selection",
    "SelectionError": "selection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
