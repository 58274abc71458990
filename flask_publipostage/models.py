"""Base of the extension's own tables (audit, PDF jobs, mail campaigns).

They live on the host's database but in their own ``MetaData``, so they need no
foreign key to the host's tables and a host using migrations adds
``flask_publipostage.models.metadata`` to its targets (Alembic accepts a list).
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

metadata = sa.MetaData()


class Base(DeclarativeBase):
    metadata = metadata


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
