"""Runs as the tests read them: a campaign's run with its counts (from its items)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.runs import backends
from flask_publipostage.runs.models import ACTIVE_STATES, Run, RunItem

from .hosts import db
from .smtp import wait_for

ROOT = Path(__file__).resolve().parents[1]

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


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Runs started meanwhile are recorded, but nothing runs them (a process
    that dies at once)."""
    real = backends.submit
    backends.submit = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        backends.submit = real  # type: ignore[assignment]


DRIVER_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tests import hosts
from flask_publipostage import models
from flask_publipostage.runs import backends, core
# The test created the tables and the run: keep them.
hosts.db.drop_all = lambda *args, **kwargs: None
models.metadata.drop_all = lambda *args, **kwargs: None
app = hosts.make_app(sys.argv[1], sys.argv[2], **json.loads(sys.argv[3]))
backends.submit(core.DRIVE, app=app, run_id=int(sys.argv[4]))
print("finished", flush=True)
"""


def drive_elsewhere_and_kill(
    tmp_path: Path, database_url: str, config: dict[str, Any], run_id: int, when: Callable[[], bool]
) -> None:
    """Drive the run in another process, and kill it and its workers (-9) as soon
    as ``when()``."""
    script = tmp_path / "drive.py"
    script.write_text(DRIVER_SCRIPT.format(root=str(ROOT)))
    process = subprocess.Popen(
        [sys.executable, str(script), database_url, str(tmp_path / "other"), json.dumps(config), str(run_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its worker processes die with it
    )
    try:
        wait_for(lambda: when() or process.poll() is not None, timeout=90, interval=0.05)
        assert process.poll() is None, process.communicate()
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(10)
