"""Base of the extension's own tables (audit, PDF jobs, mail campaigns).

They live on the host's database but in their own ``MetaData``, so they need no
foreign key to the host's tables and a host using migrations adds
``flask_publipostage.models.metadata`` to its targets (Alembic accepts a list).
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase

from .config import config_value

metadata = sa.MetaData()


class Base(DeclarativeBase):
    metadata = metadata


def utcnow() -> datetime:
    """Now, as the extension's tables store times: naive, in UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def local(moment: datetime) -> datetime:
    """A time of the extension's tables in the school's time zone (``TIMEZONE``)."""
    return moment.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(config_value("TIMEZONE")))


def school_midnight(day: date) -> datetime:
    """The start of ``day`` in the school's time zone, as the tables store times."""
    start = datetime.combine(day, time.min, tzinfo=ZoneInfo(config_value("TIMEZONE")))
    return start.astimezone(timezone.utc).replace(tzinfo=None)


def when(moment: datetime | None, seconds: bool = False) -> str:
    """"03/09/2026 14:21", in the school's time zone, as every page shows a time."""
    if moment is None:
        return ""
    return local(moment).strftime("%d/%m/%Y %H:%M:%S" if seconds else "%d/%m/%Y %H:%M")
