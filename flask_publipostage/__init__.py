"""flask-publipostage: the page "Publipostage des comptes" for a Flask ENT console."""

from .access import CAPABILITIES, PRINT, SEND, VIEW, Scope
from .extension import MenuEntry, Publipostage
from .host import HostModels, MappingError
from .selection import Selection, SelectionError

__all__ = [
    "CAPABILITIES",
    "HostModels",
    "MappingError",
    "MenuEntry",
    "PRINT",
    "Publipostage",
    "SEND",
    "Scope",
    "Selection",
    "SelectionError",
    "VIEW",
]
