"""Scale-out: two Celery worker processes send one campaign without overlap.

Needs PostgreSQL (``PUBLIPOSTAGE_TEST_DATABASE_URL``: SKIP LOCKED claims) and Redis
(``PUBLIPOSTAGE_TEST_REDIS_URL``, the broker).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.mail import sender
from flask_publipostage.runs.models import Run, RunItem
from flask_publipostage.selection import Selection

from .celery_workers import REDIS_URL, Worker, celery_workers, delete_queue, make_celery, new_queue
from .conftest import POSTGRES_URL
from .hosts import db
from .runs import campaign
from .smtp import SmtpServer, populate, wait_for

RECIPIENTS = 2000

pytestmark = [
    pytest.mark.skipif(not REDIS_URL, reason="Celery: set PUBLIPOSTAGE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run it"),
    pytest.mark.skipif(not POSTGRES_URL, reason="Celery: set PUBLIPOSTAGE_TEST_DATABASE_URL (PostgreSQL) to run it"),
]

MAIL_CONFIG = {
    "PUBLIPOSTAGE_MAIL_CONNECTIONS": 4,
    "PUBLIPOSTAGE_MAIL_BATCH_SIZE": 100,
    "PUBLIPOSTAGE_MAIL_RETRY_DELAY": 0.2,
}


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def queue() -> Iterator[str]:
    name = new_queue()
    yield name
    delete_queue(name)


@pytest.fixture
def app_config(smtp: SmtpServer, queue: str) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_JOB_BACKEND": "celery",
        "PUBLIPOSTAGE_CELERY_APP": make_celery(queue),
        **MAIL_CONFIG,
    }


@pytest.fixture
def worker_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the workers' app besides MAIL_CONFIG (parametrize indirectly)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def workers(
    app: Flask, database_url: str, tmp_path: Path, smtp: SmtpServer, queue: str, worker_config: dict[str, Any]
) -> Iterator[list[Worker]]:
    config = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": smtp.port, "MAIL_SUPPRESS_SEND": False, **MAIL_CONFIG, **worker_config}
    with celery_workers(database_url, tmp_path, queue, config) as started:
        yield started


def test_two_workers_send_one_campaign_without_overlap(app: Flask, smtp: SmtpServer, workers: list[Worker]) -> None:
    with app.app_context():
        addresses = populate(RECIPIENTS)
        started, created = campaigns.start(Selection.from_args({}, Scope(actor="super", key="*"), extra_params=()))
        assert created

        def finished() -> bool:
            return campaign(started.id).state == "done"

        try:
            wait_for(finished, timeout=120, interval=0.5)
        finally:
            db.session.execute(
                sa.update(Run).where(Run.id == started.id, Run.state != "done").values(state="cancelled")
            )
            db.session.commit()
        found = campaign(started.id)
        assert (found.sent, found.failed, found.duplicates) == (RECIPIENTS, 0, 0)
        assert db.session.execute(
            sa.select(sa.func.count()).where(RunItem.run_id == started.id, RunItem.state != "sent")
        ).scalar() == 0
    received = smtp.by_recipient()
    assert set(received) == set(addresses), "lost recipients"
    assert max(received.values()) == 1, "a recipient got two messages"
    # Both workers sent some of it.
    for worker in workers:
        assert any(t["task"] == sender.SEND_LANE for t in worker.tasks()), worker.log.read_text()[-3000:]


@pytest.mark.parametrize("smtp_options", [{"auth": ("ent-relay", "s3cret")}], indirect=True)
@pytest.mark.parametrize("worker_config", [{"MAIL_USERNAME": "ent-relay", "MAIL_PASSWORD": "wrong"}], indirect=True)
def test_workers_suspend_a_campaign_whose_login_is_refused(app: Flask, smtp: SmtpServer, workers: list[Worker]) -> None:
    with app.app_context():
        populate(300)
        started, _created = campaigns.start(Selection.from_args({}, Scope(actor="super", key="*"), extra_params=()))
        try:
            wait_for(lambda: campaign(started.id).state == "suspended", timeout=60, interval=0.3)
        finally:
            db.session.execute(
                sa.update(Run).where(Run.id == started.id, Run.state.in_(("queued", "running", "waiting")))
                .values(state="cancelled")
            )
            db.session.commit()
        found = campaign(started.id)
        assert "Identifiants SMTP refusés par le serveur (535" in (found.last_error or "")
        assert db.session.execute(
            sa.select(RunItem.state, sa.func.count()).where(RunItem.run_id == started.id).group_by(RunItem.state)
        ).all() == [("pending", 300)]
    # One login per lane at most.
    assert smtp.count() == 0 and smtp.auth_attempts <= MAIL_CONFIG["PUBLIPOSTAGE_MAIL_CONNECTIONS"]
