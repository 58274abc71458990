"""Crash safety: the SMTP server dies mid-campaign, the sending process is killed,
a restarted runner picks up an interrupted campaign."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.models import utcnow
from flask_publipostage.runs import core
from flask_publipostage.runs.models import Run, RunItem
from flask_publipostage.selection import Selection

from .conftest import RoleClient
from .hosts import db
from .runs import Campaign, campaign, drive_elsewhere_and_kill, held, stop_active_runs
from .smtp import SmtpServer, populate, wait_for


@pytest.fixture
def app_config(smtp: SmtpServer, mail_config: dict[str, Any]) -> dict[str, Any]:
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_MAIL_CONNECTIONS": 4,
        "PUBLIPOSTAGE_MAIL_BATCH_SIZE": 50,
        "PUBLIPOSTAGE_MAIL_RETRY_DELAY": 0.2,
        "PUBLIPOSTAGE_MAIL_MAX_RETRY_DELAY": 1.0,
        "PUBLIPOSTAGE_MAIL_TIMEOUT": 5,
        **mail_config,
    }


@pytest.fixture(autouse=True)
def stop_campaigns(app: Flask, smtp: SmtpServer) -> Iterator[None]:
    """A failed assertion must not leave a campaign sending while the app shuts
    down (the thread runner would wait for it forever)."""
    yield
    with app.app_context():
        stop_active_runs()


def everyone() -> Selection:
    return Selection.from_args({}, Scope(actor="super", key="*"), extra_params=())


def delivery_states(campaign_id: int) -> dict[str, int]:
    rows = db.session.execute(
        sa.select(RunItem.state, sa.func.count()).where(RunItem.run_id == campaign_id).group_by(RunItem.state)
    ).all()
    return {state: number for state, number in rows}


def check_everyone_reached(smtp: SmtpServer, addresses: list[str], found: Campaign) -> int:
    """Each address got its message; copies beyond the first are all reported."""
    received = smtp.by_recipient()
    assert set(received) == set(addresses), "lost recipients"
    extra = sum(n - 1 for n in received.values())
    assert extra <= found.duplicates, (extra, found.duplicates)
    flagged = db.session.execute(
        sa.select(sa.func.count()).where(RunItem.run_id == found.id, RunItem.possibly_duplicate.is_(True))
    ).scalar()
    assert flagged == found.duplicates
    return extra


@pytest.mark.parametrize("mail_config", [{"PUBLIPOSTAGE_JOB_BACKEND": "thread"}], indirect=True)
@pytest.mark.parametrize("smtp_options", [{"kill_after": 100}], indirect=True)
def test_smtp_server_dies_and_comes_back(app_ctx: Flask, smtp: SmtpServer) -> None:
    addresses = populate(500)
    started, _created = campaigns.start(everyone())
    assert smtp.killed.wait(30), "the server was never killed"
    # While it is down the campaign waits, says why, and keeps what was sent.
    wait_for(lambda: campaign(started.id).state == "waiting", timeout=20)
    waiting = campaign(started.id)
    assert "refusée" in (waiting.last_error or "") or "perdue" in (waiting.last_error or "")
    # Every lane gave its batch back; what the server acknowledged is recorded as sent
    # (100 stored, of which at most one per connection without its reply).
    wait_for(lambda: delivery_states(started.id).get("sending", 0) == 0, timeout=20)
    assert 96 <= delivery_states(started.id).get("sent", 0) <= 100
    time.sleep(1.0)
    smtp.restart()
    wait_for(lambda: campaign(started.id).state == "done", timeout=60)
    found = campaign(started.id)
    assert (found.sent, found.failed, found.skipped) == (500, 0, 0)
    extra = check_everyone_reached(smtp, addresses, found)
    # The 100th message was stored but never acknowledged: it came twice, as reported.
    assert found.duplicates >= 1
    # At most the message in flight on each connection.
    assert extra <= found.duplicates <= 4


@pytest.mark.parametrize(
    "mail_config", [{"PUBLIPOSTAGE_MAIL_MAX_WAIT": 0.5, "PUBLIPOSTAGE_MAIL_RETRY_DELAY": 0.05}], indirect=True
)
def test_unreachable_server_stops_the_campaign_then_resume(client: RoleClient, app_ctx: Flask, smtp: SmtpServer) -> None:
    addresses = populate(20)
    smtp.kill()
    wait_for(smtp.killed.is_set)
    started, _created = campaigns.start(everyone())  # eager: returns when it gives up
    stopped = campaign(started.id)
    assert stopped.state == "failed"
    assert "connexion refusée" in (stopped.last_error or "")
    assert stopped.active_key is None
    page = client.get(f"/imports-exports/publipostage/mail/campaigns/{started.id}", "super").data.decode()
    assert "Reprendre l" in page
    smtp.restart()
    response = client.post(f"/imports-exports/publipostage/mail/campaigns/{started.id}/resume", "super")
    assert response.status_code == 303
    found = campaign(started.id)
    assert found.state == "done" and found.sent == 20
    check_everyone_reached(smtp, addresses, found)
    assert found.duplicates == 0


@pytest.mark.parametrize(
    "mail_config",
    [
        {
            "PUBLIPOSTAGE_MAIL_CONNECTIONS": 2,
            "PUBLIPOSTAGE_MAIL_BATCH_SIZE": 25,
            "PUBLIPOSTAGE_MAIL_JOURNAL_GROUP": 5,
            "PUBLIPOSTAGE_MAIL_RATE_LIMIT": 3000,
            "PUBLIPOSTAGE_STALE_AFTER": 1,
        }
    ],
    indirect=True,
)
def test_killed_sender_resumes_without_loss(
    app: Flask, app_config: dict[str, Any], database_url: str, tmp_path: Path, smtp: SmtpServer
) -> None:
    with app.app_context():
        addresses = populate(300)
        with held():
            created, _new = campaigns.start(everyone())
        campaign_id = created.id
    drive_elsewhere_and_kill(tmp_path, database_url, app_config, campaign_id, lambda: smtp.count() >= 100)
    with app.app_context():
        interrupted = campaign(campaign_id)
        assert interrupted.state == "running"
        states = delivery_states(campaign_id)
        assert states.get("sent", 0) >= 50 and states.get("pending", 0) > 0
        in_flight = states.get("sending", 0)
        assert in_flight <= 2 * 5  # one journal group per connection
    result = app.test_cli_runner().invoke(args=["publipostage", "resume", str(campaign_id)])
    assert result.exit_code == 0, result.output
    assert "Reprise de la campagne" in result.output
    with app.app_context():
        found = campaign(campaign_id)
        assert found.state == "done" and found.sent == 300 and found.failed == 0
        check_everyone_reached(smtp, addresses, found)
        assert found.duplicates <= 2 * 5


@pytest.mark.parametrize(
    "mail_config", [{"PUBLIPOSTAGE_JOB_BACKEND": "thread", "PUBLIPOSTAGE_STALE_AFTER": 1}], indirect=True
)
def test_runner_start_resumes_interrupted_campaigns(app: Flask, smtp: SmtpServer) -> None:
    with app.app_context():
        addresses = populate(40)
        with held():
            created, _new = campaigns.start(everyone())
        rows = db.session.execute(
            sa.select(RunItem.id, RunItem.email).where(RunItem.run_id == created.id).order_by(RunItem.position)
        ).all()
        ids = [row.id for row in rows]
        sent_before = {row.email for row in rows[:5]}
        old = utcnow() - timedelta(seconds=30)
        # What a process killed mid-batch leaves behind.
        db.session.execute(sa.update(Run).where(Run.id == created.id).values(
            state="running", heartbeat_at=utcnow(), started_at=old))
        db.session.execute(sa.update(RunItem).where(RunItem.id.in_(ids[:5])).values(
            state="sent", attempts=1, done_at=old, claim_token=None))
        db.session.execute(sa.update(RunItem).where(RunItem.id.in_(ids[5:8])).values(
            state="sending", claim_token="dead", claimed_at=old))
        db.session.execute(sa.update(RunItem).where(RunItem.id.in_(ids[8:20])).values(
            claim_token="dead", claimed_at=old))
        db.session.commit()
        campaign_id = created.id

    # A fresh heartbeat: somebody may still be sending, resume refuses to barge in.
    result = app.test_cli_runner().invoke(args=["publipostage", "resume", str(campaign_id), "--no-wait"])
    assert result.exit_code != 0 and "autre processus" in result.output

    core.resume_stale(app)  # what every runner does regularly
    with app.app_context():
        wait_for(lambda: campaign(campaign_id).state == "done", timeout=30)
        found = campaign(campaign_id)
        assert found.sent == 40 and found.duplicates == 3
        received = smtp.by_recipient()
        assert set(received) == set(addresses) - sent_before
        assert all(n == 1 for n in received.values())
        flagged = set(db.session.execute(
            sa.select(RunItem.id).where(RunItem.run_id == campaign_id, RunItem.possibly_duplicate.is_(True))
        ).scalars())
        assert flagged == set(ids[5:8])
