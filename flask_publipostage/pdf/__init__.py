"""PDF letters and cut-out cards.

Importing the package registers its tables (``models``); the routes and the
background tasks are in ``views`` and ``background``, imported by the blueprint.
"""

from . import models  # noqa: F401
