"""PDF letters and cut-out cards: runs of the ``pdf`` kind.

Importing the package registers the kind and its tasks (``pipeline``).
"""

from . import pipeline  # noqa: F401
