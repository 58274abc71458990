"""Scale-out: two Celery worker processes send one campaign without overlap.

Needs PostgreSQL (``PUBLIPOSTAGE_TEST_DATABASE_URL``: SKIP LOCKED claims) and Redis
(``PUBLIPOSTAGE_TEST_REDIS_URL``, the broker).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.runs.models import Run, RunItem
from flask_publipostage.selection import Selection

from .conftest import POSTGRES_URL
from .hosts import db
from .runs import campaign
from .smtp import SmtpServer, populate, wait_for

REDIS_URL = os.environ.get("PUBLIPOSTAGE_TEST_REDIS_URL")
ROOT = Path(__file__).resolve().parents[1]
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

WORKER_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from celery import Celery
from tests import hosts
from flask_publipostage import models

# The test process created the tables and holds the campaign: keep them.
hosts.db.drop_all = lambda *args, **kwargs: None
models.metadata.drop_all = lambda *args, **kwargs: None
url, instance, port, queue, name, broker = sys.argv[1:7]
celery_app = Celery("publipostage-test", broker=broker)
celery_app.conf.update({celery_conf!r}, task_default_queue=queue)
app = hosts.make_app(
    url, instance, MAIL_SERVER="127.0.0.1", MAIL_PORT=int(port), MAIL_SUPPRESS_SEND=False,
    PUBLIPOSTAGE_JOB_BACKEND="celery", PUBLIPOSTAGE_CELERY_APP=celery_app, **{mail_config!r}
)
celery_app.worker_main([
    "worker", "-P", "threads", "-c", "2", "-Q", queue, "-n", name + "@%h",
    "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
])
"""

CELERY_CONF = {
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
}


def make_celery(queue: str) -> Any:
    from celery import Celery

    celery_app = Celery("publipostage-test", broker=REDIS_URL)
    celery_app.conf.update(CELERY_CONF, task_default_queue=queue)
    return celery_app


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"publipostage-test-{uuid.uuid4().hex[:12]}"
    yield name
    import redis

    redis.Redis.from_url(str(REDIS_URL)).delete(name)


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
) -> Iterator[list[Path]]:
    script = tmp_path / "worker.py"
    script.write_text(
        WORKER_SCRIPT.format(root=str(ROOT), celery_conf=CELERY_CONF, mail_config={**MAIL_CONFIG, **worker_config})
    )
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    processes = []
    for i, log in enumerate(logs):
        with open(log, "wb") as out:
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(script), database_url, str(tmp_path / f"w{i}"), str(smtp.port), queue, f"w{i}-{queue}", str(REDIS_URL)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=str(ROOT),
                )
            )
    try:
        wait_for(lambda: all(b" ready." in log.read_bytes() or p.poll() is not None for log, p in zip(logs, processes)), timeout=60)
        assert all(p.poll() is None for p in processes), [log.read_text() for log in logs]
        yield logs
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in processes:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def test_two_workers_send_one_campaign_without_overlap(app: Flask, smtp: SmtpServer, workers: list[Path]) -> None:
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
    # Both workers took batches.
    for log in workers:
        assert log.read_bytes().count(b"succeeded in") >= 1, log.read_text()[-3000:]


@pytest.mark.parametrize("smtp_options", [{"auth": ("ent-relay", "s3cret")}], indirect=True)
@pytest.mark.parametrize("worker_config", [{"MAIL_USERNAME": "ent-relay", "MAIL_PASSWORD": "wrong"}], indirect=True)
def test_workers_suspend_a_campaign_whose_login_is_refused(app: Flask, smtp: SmtpServer, workers: list[Path]) -> None:
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
