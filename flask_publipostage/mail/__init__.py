"""Email campaigns with a per-recipient journal.

Importing the package registers the tables (``publipostage_campaign``,
``publipostage_delivery``) and the background tasks ``mail.send_campaign`` and
``mail.send_batch``.
"""

from . import models, sender  # noqa: F401  (tables and tasks register on import)
from .models import Campaign, Delivery, unreached_user_ids

__all__ = ["Campaign", "Delivery", "unreached_user_ids"]
