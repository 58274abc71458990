"""Runs as the tests read them: a campaign's run with its counts (from its items)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.runs.models import ACTIVE_STATES, Run, RunItem

from .hosts import db

COUNTS = ("sent", "failed", "skipped", "total", "to_send", "remaining", "duplicates")


class Campaign:
    """A campaign's run; ``sent``, ``failed``... are counted from its items."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.status = campaigns.status(run)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.status if name in COUNTS else self.run, name)


def campaign(run_id: int) -> Campaign:
    db.session.expire_all()
    found = db.session.get(Run, run_id)
    assert found is not None
    return Campaign(found)


def campaign_rows() -> list[Campaign]:
    db.session.expire_all()
    return [Campaign(r) for r in db.session.execute(sa.select(Run).where(Run.kind == "mail").order_by(Run.id)).scalars()]


def items(run_id: int) -> list[RunItem]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(RunItem).where(RunItem.run_id == run_id).order_by(RunItem.position)).scalars())


def stop_active_runs() -> None:
    """A failed assertion must not leave a run going while the app shuts down."""
    db.session.execute(sa.update(Run).where(Run.state.in_(ACTIVE_STATES)).values(state="cancelled"))
    db.session.commit()
    db.session.remove()


def run_of(key: str | int) -> Run:
    """A run by what its URL names: a PDF's token, a campaign's id."""
    db.session.expire_all()
    condition = Run.id == int(key) if str(key).isdigit() else Run.token == key
    return db.session.execute(sa.select(Run).where(condition)).scalar_one()
