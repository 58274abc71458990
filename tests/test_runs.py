"""The run core: one lifecycle under PDF files and campaigns, a record per account,
and the defects of the machinery it replaced (ids in paths, double downloads,
expiry, limits, stalled runs, crashed PDFs, counters)."""

from __future__ import annotations

import html
import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_publipostage.access import Scope
from flask_publipostage.config import DEFAULTS
from flask_publipostage.mail import campaign as campaigns
from flask_publipostage.models import utcnow
from flask_publipostage.pdf import pipeline, render
from flask_publipostage.runs import backends, core, files
from flask_publipostage.runs.models import Run, RunItem
from flask_publipostage.selection import Selection

from .hosts import db
from .runs import campaign, drive_elsewhere_and_kill, held, run_of, stop_active_runs
from .smtp import SmtpServer, populate, wait_for
from .test_pdf_support import URL, add_class_of, pages_text, post_pdf
from .test_security_support import all_codes, build_security_school, campaign_id_of, job_id_of, post_mail

HUGE = "9223372036854775808"


@pytest.fixture
def app_config(smtp: SmtpServer, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The test's settings (parametrize indirectly to add some)."""
    return {
        **smtp.config(),
        "PUBLIPOSTAGE_STORAGE_DIR": str(tmp_path / "storage"),
        "PUBLIPOSTAGE_PDF_QR_CODE": False,
        **getattr(request, "param", {}),
    }


@pytest.fixture(autouse=True)
def stop_runs(app: Flask) -> Any:
    yield
    with app.app_context():
        stop_active_runs()


def everyone() -> Selection:
    return Selection.from_args({}, Scope(actor="super", key="*"), extra_params=())


# -- a record per account ------------------------------------------------------------------------


def test_a_pdf_and_a_campaign_leave_one_item_per_account_without_codes(app: Flask, client: Any, smtp: SmtpServer) -> None:
    with app.app_context():
        build_security_school()
        codes = all_codes()
        db.session.remove()
    pdf = post_pdf(client, "sort=class", template="cards")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert campaign_id_of(post_mail(client, "adml_a", "")) > 0
    with app.app_context():
        runs = {r.kind: r for r in db.session.execute(sa.select(Run)).scalars()}
        printed = db.session.execute(sa.select(RunItem).where(RunItem.run_id == runs["pdf"].id)).scalars().all()
        emailed = db.session.execute(sa.select(RunItem).where(RunItem.run_id == runs["mail"].id)).scalars().all()
        # School A's ten accounts, once each, with what was done and when.
        assert len(printed) == len({i.user_id for i in printed}) == 10
        assert {(i.kind, i.state) for i in printed} == {("card", "printed")}
        assert all(i.done_at is not None for i in printed)
        assert runs["pdf"].downloaded_at is not None and runs["pdf"].file_path is None
        assert len(emailed) == len({i.user_id for i in emailed}) == 10
        assert {i.state for i in emailed} == {"sent", "skipped"}
        assert all(i.kind == "email" and (i.done_at is not None) == (i.state == "sent") for i in emailed)
        stored = json.dumps([[str(v) for v in row] for table in ("publipostage_run", "publipostage_run_item")
                             for row in db.session.execute(sa.text(f"SELECT * FROM {table}")).all()])
        assert codes and not any(code in stored for code in codes)


def test_items_outlive_their_run(app: Flask, client: Any) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()
    assert post_pdf(client, "profile=Teacher").data.startswith(b"%PDF")
    with app.app_context():
        run = db.session.execute(sa.select(Run)).scalar_one()
        db.session.execute(sa.update(Run).values(finished_at=utcnow() - timedelta(days=30)))
        db.session.commit()
        assert files.purge() == 0
        items = db.session.execute(sa.select(RunItem.state).where(RunItem.run_id == run.id)).scalars().all()
        assert items == ["printed", "printed"]


# -- ids in paths --------------------------------------------------------------------------------


def test_impossible_ids_in_paths_are_404(app: Flask, client: Any, smtp: SmtpServer) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()
    real = campaign_id_of(post_mail(client, "adml_a", "profile=Teacher"))
    assert client.get(f"{URL}/mail/campaigns/{real}", "adml_a").status_code == 200
    for key in (HUGE, "-1", "0", "1e3", "x" * 70, "99999999999999999999999"):
        for suffix in ("", "/status", "/report.csv"):
            response = client.get(f"{URL}/mail/campaigns/{key}{suffix}", "adml_a")
            assert response.status_code == 404, (key, suffix, response.status_code)
            assert "n'existe pas" in html.unescape(response.get_data(as_text=True))
        for action in ("cancel", "resume"):
            assert client.post(f"{URL}/mail/campaigns/{key}/{action}", "adml_a").status_code == 404
        assert client.get(f"{URL}/pdf/jobs/{key}", "adml_a").status_code == 404
        assert client.get(f"{URL}/?campaign={key}", "adml_a").status_code in (400, 403)
    result = app.test_cli_runner().invoke(args=["publipostage", "status", HUGE])
    assert result.exit_code != 0 and "Aucune campagne" in result.output


# -- the download ----------------------------------------------------------------------------------


@pytest.fixture
def ready_job(app: Flask, client: Any) -> str:
    app.config.update(PUBLIPOSTAGE_PDF_SYNC_LIMIT=5, PUBLIPOSTAGE_PDF_WORKERS=1)
    with app.app_context():
        add_class_of("CP Test", 40, prefix="dl")
        db.session.commit()
    job = job_id_of(post_pdf(client, "", template="cards"))
    assert client.get(f"{URL}/pdf/jobs/{job}/status", "adml_a").get_json()["state"] == "done"
    return job


def test_two_downloads_at_once_give_one_file_and_a_410(app: Flask, ready_job: str) -> None:
    barrier = threading.Barrier(4)
    answers: list[tuple[int, bytes]] = []

    def download() -> None:
        own = app.test_client()
        barrier.wait()
        response = own.get(f"{URL}/pdf/jobs/{ready_job}/download", headers={"X-Test-User": "adml_a"})
        answers.append((response.status_code, response.get_data()))

    threads = [threading.Thread(target=download) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(status for status, _body in answers)
    assert statuses == [200, 410, 410, 410], statuses
    (body,) = [b for s, b in answers if s == 200]
    assert len(pages_text(body)) == 5
    assert all("n'est plus disponible" in html.unescape(b.decode()) for s, b in answers if s == 410)
    with app.app_context():
        assert run_of(ready_job).file_path is None
        assert not any(p.suffix == ".pdf" for p in files.storage_dir().iterdir())


def test_an_interrupted_download_can_be_tried_again(app: Flask, ready_job: str) -> None:
    client = app.test_client()
    response = client.get(f"{URL}/pdf/jobs/{ready_job}/download", headers={"X-Test-User": "adml_a"}, buffered=False)
    first = next(iter(response.response))
    assert first.startswith(b"%PDF")
    response.close()  # the browser went away before the end
    again = client.get(f"{URL}/pdf/jobs/{ready_job}/download", headers={"X-Test-User": "adml_a"})
    assert again.status_code == 200 and len(pages_text(again.data)) == 5


def test_an_expired_file_is_refused_and_removed_without_a_clean_up(app: Flask, client: Any, ready_job: str) -> None:
    app.config["PUBLIPOSTAGE_FILE_EXPIRY"] = 20
    with app.app_context():
        run = run_of(ready_job)
        path = Path(run.file_path)
        db.session.execute(sa.update(Run).where(Run.id == run.id).values(finished_at=utcnow() - timedelta(seconds=45)))
        db.session.commit()
    status = client.get(f"{URL}/pdf/jobs/{ready_job}/status", "adml_a").get_json()
    assert status["download_url"] is None
    response = client.get(f"{URL}/pdf/jobs/{ready_job}/download", "adml_a")
    assert response.status_code == 410 and "n'est plus disponible" in html.unescape(response.get_data(as_text=True))
    assert not path.exists()
    with app.app_context():
        assert run_of(ready_job).file_path is None and run_of(ready_job).downloaded_at is None


# -- stalled runs, take-over ---------------------------------------------------------------------------


def test_defaults_take_a_dead_run_over_within_a_minute() -> None:
    stale = DEFAULTS["STALE_AFTER"]
    # The last heartbeat is at most a sixth of the window old; a watcher looks every third.
    assert stale + stale / 3 < 60


def test_a_stalled_campaign_says_so_and_when_it_will_be_taken_over(app: Flask, client: Any, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with app.app_context():
        build_security_school()
        db.session.remove()
    monkeypatch.setattr(backends, "submit", lambda *args, **kwargs: None)
    campaign_id = campaign_id_of(post_mail(client, "adml_a", ""))
    with app.app_context():
        last = utcnow() - timedelta(minutes=2)
        db.session.execute(sa.update(Run).where(Run.id == campaign_id).values(state="running", started_at=last, heartbeat_at=last))
        db.session.commit()
    status = client.get(f"{URL}/mail/campaigns/{campaign_id}/status", "adml_a").get_json()
    assert "Aucun signe de vie depuis" in status["stalled"] and "au plus tard à" in status["stalled"]
    page = client.get(f"{URL}/mail/campaigns/{campaign_id}", "adml_a").get_data(as_text=True)
    assert "Aucun signe de vie depuis" in page
    # A live one does not.
    with app.app_context():
        db.session.execute(sa.update(Run).where(Run.id == campaign_id).values(heartbeat_at=utcnow()))
        db.session.commit()
    assert client.get(f"{URL}/mail/campaigns/{campaign_id}/status", "adml_a").get_json()["stalled"] == ""


def test_one_driver_at_a_time(app_ctx: Flask, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(5)
    monkeypatch.setattr(backends, "submit", lambda *args, **kwargs: None)
    run, _created = campaigns.start(everyone())
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def take() -> None:
        with app_ctx.app_context():
            barrier.wait()
            results.append(core.acquire(run.id))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert not core.acquire(run.id)  # alive: nobody barges in
    db.session.execute(sa.update(Run).where(Run.id == run.id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert core.acquire(run.id)  # dead: taken over


PDF_CONFIG = {
    "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 1,
    "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 16,
    "PUBLIPOSTAGE_PDF_WORKERS": 1,
    "PUBLIPOSTAGE_STALE_AFTER": 1,
}


@pytest.mark.parametrize("app_config", [PDF_CONFIG], indirect=True)
def test_a_crashed_pdf_resumes_from_its_rendered_chunks(app: Flask, app_config: dict[str, Any], database_url: str, tmp_path: Path) -> None:
    config = app_config
    with app.app_context():
        add_class_of("CM2 Long", 160, prefix="kx")
        db.session.commit()
        with held():
            run, _ = pipeline.start(everyone(), render.Options(template="letter"))
        run_id, parts = run.id, files.parts_dir(run)

    def some_chunks() -> bool:
        return parts.exists() and len(list(parts.glob("*.pdf"))) >= 3

    drive_elsewhere_and_kill(tmp_path, database_url, {**config, "PUBLIPOSTAGE_JOB_BACKEND": "eager"}, run_id, some_chunks)
    with app.app_context():
        assert run_of(run_id).state == "running"
        chunks = dict(db.session.execute(
            sa.select(RunItem.chunk, sa.func.min(RunItem.state)).where(RunItem.run_id == run_id).group_by(RunItem.chunk)
        ).all())
    # Chunks whose items are all rendered are on disk: those are not rendered again.
    done_before = {index for index, state in chunks.items() if state == "rendered" and (parts / f"{index:06d}.pdf").exists()}
    assert done_before and len(done_before) < len(chunks)
    read_after: list[int] = []
    real_sheets = pipeline.Job.sheets

    def spy(job: pipeline.Job, index: int) -> Any:
        read_after.append(index)
        return real_sheets(job, index)

    pipeline.Job.sheets = spy  # type: ignore[method-assign]
    try:
        time.sleep(1.2)  # the dead process's heartbeat goes stale
        core.resume_stale(app)  # what every runner does regularly
    finally:
        pipeline.Job.sheets = real_sheets  # type: ignore[method-assign]
    with app.app_context():
        wait_for(lambda: run_of(run_id).state == "done", timeout=60)
        done = run_of(run_id)
        assert done.takeovers == 1
        data = Path(done.file_path).read_bytes()
    assert sorted(read_after) == sorted(set(chunks) - done_before)  # each chunk left read once, no other
    texts = pages_text(data)
    assert len(texts) == 160
    for index, text in enumerate(texts):
        assert f"kx{index:04d}" in text


MAIL_CONFIG = {
    "PUBLIPOSTAGE_STALE_AFTER": 1,
    "PUBLIPOSTAGE_MAIL_CONNECTIONS": 2,
    "PUBLIPOSTAGE_MAIL_BATCH_SIZE": 20,
    "PUBLIPOSTAGE_MAIL_JOURNAL_GROUP": 5,
    "PUBLIPOSTAGE_MAIL_RATE_LIMIT": 3000,
    "PUBLIPOSTAGE_JOB_BACKEND": "thread",
}


@pytest.mark.parametrize("app_config", [MAIL_CONFIG], indirect=True)
def test_a_killed_campaign_is_taken_over_by_a_live_process(app: Flask, app_config: dict[str, Any], smtp: SmtpServer, database_url: str, tmp_path: Path) -> None:
    config = app_config
    with app.app_context():
        addresses = populate(200)
        with held():
            run, _ = campaigns.start(everyone())
        run_id = run.id
    drive_elsewhere_and_kill(tmp_path, database_url, {**config, "PUBLIPOSTAGE_JOB_BACKEND": "eager"}, run_id, lambda: smtp.count() >= 60)
    # This process's runner watches: it takes the campaign over by itself.
    with app.app_context():
        wait_for(lambda: campaign(run_id).state == "done", timeout=30)
        found = campaign(run_id)
        assert found.takeovers == 1 and found.sent == 200
    received = smtp.by_recipient()
    assert set(received) == set(addresses)
    assert sum(n - 1 for n in received.values()) <= found.duplicates <= 2 * 5


# -- counters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("smtp_options", [{"delay": 0.01}], indirect=True)
@pytest.mark.parametrize("app_config", [{"PUBLIPOSTAGE_JOB_BACKEND": "thread", "PUBLIPOSTAGE_MAIL_CONNECTIONS": 1}], indirect=True)
def test_counters_after_a_cancel_are_the_items(app: Flask, client: Any, smtp: SmtpServer) -> None:
    with app.app_context():
        populate(300)
        db.session.remove()
    campaign_id = campaign_id_of(post_mail(client, "super", ""))
    wait_for(lambda: smtp.count() >= 20, timeout=30)
    assert client.post(f"{URL}/mail/campaigns/{campaign_id}/cancel", "super").status_code == 303
    app.extensions["publipostage"].runner.shutdown(wait=True)
    status = client.get(f"{URL}/mail/campaigns/{campaign_id}/status", "super").get_json()
    assert status["state"] == "cancelled"
    with app.app_context():
        sent = db.session.execute(
            sa.select(sa.func.count()).where(RunItem.run_id == campaign_id, RunItem.state == "sent")
        ).scalar()
    assert status["sent"] == sent == smtp.count() < 300
    assert status["remaining"] == 300 - sent


# -- from version 0.1 ---------------------------------------------------------------------------------


def _tables_of_0_1() -> tuple[sa.Table, sa.Table, sa.Table]:
    old = sa.MetaData()
    text, when = sa.String(200), sa.DateTime
    campaign = sa.Table(
        "publipostage_campaign", old,
        sa.Column("id", sa.Integer, primary_key=True), sa.Column("actor", text), sa.Column("scope_key", text),
        sa.Column("school_name", text), sa.Column("selection", sa.Text), sa.Column("active_key", sa.String(64)),
        sa.Column("token", sa.String(32)), sa.Column("state", sa.String(20)), sa.Column("total", sa.Integer),
        sa.Column("to_send", sa.Integer), sa.Column("skipped", sa.Integer), sa.Column("sent", sa.Integer),
        sa.Column("failed", sa.Integer), sa.Column("duplicates", sa.Integer), sa.Column("created_at", when),
        sa.Column("started_at", when), sa.Column("finished_at", when), sa.Column("heartbeat_at", when),
        sa.Column("waiting_since", when), sa.Column("last_error", sa.String(500)), sa.Column("scope_users", sa.Boolean),
        sa.Column("scope_classes", sa.Text),
    )
    delivery = sa.Table(
        "publipostage_delivery", old,
        sa.Column("id", sa.Integer, primary_key=True), sa.Column("campaign_id", sa.Integer),
        sa.Column("user_id", sa.String(64)), sa.Column("email", sa.String(320)), sa.Column("name", sa.String(300)),
        sa.Column("state", sa.String(10)), sa.Column("attempts", sa.Integer), sa.Column("reason", sa.String(500)),
        sa.Column("sent_at", when), sa.Column("message_id", sa.String(255)), sa.Column("possibly_duplicate", sa.Boolean),
        sa.Column("claim_token", sa.String(32)), sa.Column("claimed_at", when), sa.Column("next_attempt_at", when),
    )
    perimeter = sa.Table(
        "publipostage_campaign_perimeter", old,
        sa.Column("campaign_id", sa.Integer, primary_key=True), sa.Column("user_id", sa.String(64), primary_key=True),
    )
    return campaign, delivery, perimeter


def test_upgrade_db_copies_the_campaigns_of_0_1(app: Flask, client: Any) -> None:
    campaign_t, delivery_t, perimeter_t = old = _tables_of_0_1()
    with app.app_context():
        school = build_security_school()
        logins = {login: str(person.uid) for login, person in school.logins.items()}
        old[0].metadata.create_all(db.engine)
        now = utcnow()
        db.session.execute(campaign_t.insert().values(
            id=7, actor="adml_a", scope_key="ecole:A", school_name="École A", selection="{}", token="0123456789abcdef",
            state="done", total=3, to_send=2, skipped=1, sent=1, failed=1, duplicates=0, created_at=now,
            started_at=now, finished_at=now, scope_users=False))
        row = dict.fromkeys(("email", "reason", "sent_at"))
        db.session.execute(delivery_t.insert(), [
            {**row, "id": 1, "campaign_id": 7, "user_id": logins["marie.abel"], "email": "marie.abel@example.org",
             "name": "Marie Abel", "state": "sent", "attempts": 1, "sent_at": now, "possibly_duplicate": False},
            {**row, "id": 2, "campaign_id": 7, "user_id": logins["jean.prof"], "email": "jean.prof@example.org",
             "name": "Jean Dupont", "state": "failed", "attempts": 1, "reason": "550 User unknown", "possibly_duplicate": False},
            {**row, "id": 3, "campaign_id": 7, "user_id": logins["zoe.abel"], "name": "Zoé Abel", "state": "skipped",
             "attempts": 0, "reason": "Aucune adresse électronique.", "possibly_duplicate": False},
        ])
        db.session.commit()
    try:
        result = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
        assert result.exit_code == 0, result.output
        assert "1 campagne et 3 destinataires copiés" in result.output
        assert "DROP TABLE publipostage_campaign_perimeter; DROP TABLE publipostage_delivery; DROP TABLE publipostage_campaign;" in result.output
        page = html.unescape(client.get(f"{URL}/mail/campaigns/7", "adml_a").get_data(as_text=True))
        assert "1 envoyé, 1 en échec, 1 ignoré (sans courriel)" in page and "550 User unknown" in page
        preview = html.unescape(client.get(f"{URL}/preview?campaign=7", "adml_a").get_data(as_text=True))
        assert "jean.prof" in preview and "zoe.abel" in preview and "marie.abel" not in preview
        again = app.test_cli_runner().invoke(args=["publipostage", "upgrade-db"])
        assert again.exit_code != 0 and "déjà" in again.output
        # New runs carry on after the copied ids.
        assert campaign_id_of(post_mail(client, "adml_a", "profile=Teacher")) > 7
    finally:
        with app.app_context():
            old[0].metadata.drop_all(db.engine)
