"""Scale-out: a 1,000-account PDF rendered as chunks by two Celery worker processes.

The web side (this test's app) only freezes the accounts and queues the run; the
workers plan it, render its chunks (one task each), and the last one merges them
into the file the admin downloads. Needs PostgreSQL
(``PUBLIPOSTAGE_TEST_DATABASE_URL``: the workers are other processes) and Redis
(``PUBLIPOSTAGE_TEST_REDIS_URL``, the broker).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_publipostage.pdf import pipeline
from flask_publipostage.runs import core

from .celery_workers import REDIS_URL, Worker, celery_workers, delete_queue, make_celery, new_queue
from .conftest import POSTGRES_URL
from .hosts import db
from .runs import stop_active_runs
from .smtp import wait_for
from .test_pdf_jobs import _job_id, run_of
from .test_pdf_support import URL, add_class_of, page_count, pdftotext, post_pdf

pytestmark = [
    pytest.mark.skipif(not REDIS_URL, reason="Celery: set PUBLIPOSTAGE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0) to run it"),
    pytest.mark.skipif(not POSTGRES_URL, reason="Celery: set PUBLIPOSTAGE_TEST_DATABASE_URL (PostgreSQL) to run it"),
]

#: Three classes of 1,000 pupils in all, in school order (CP < CE1 < CM2) and login order.
CLASSES = {"CP Vert": ("a", 333), "CE1 Bleu": ("b", 412), "CM2 Rouge": ("c", 255)}
LOGIN = re.compile(r"(?<![\w-])[abc]x\d{4}\b")


@pytest.fixture
def database_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def queue() -> Iterator[str]:
    name = new_queue()
    yield name
    delete_queue(name)


@pytest.fixture
def pdf_config(tmp_path: Path) -> dict[str, Any]:
    """What the web process and the workers share: the chunking and the folder
    where the chunks and the file are written."""
    return {
        "PUBLIPOSTAGE_STORAGE_DIR": str(tmp_path / "storage"),
        "PUBLIPOSTAGE_PDF_SYNC_LIMIT": 20,
        "PUBLIPOSTAGE_PDF_CHUNK_SIZE": 100,
    }


@pytest.fixture
def app_config(queue: str, pdf_config: dict[str, Any]) -> dict[str, Any]:
    return {"PUBLIPOSTAGE_JOB_BACKEND": "celery", "PUBLIPOSTAGE_CELERY_APP": make_celery(queue), **pdf_config}


@pytest.fixture
def workers(app: Flask, database_url: str, tmp_path: Path, queue: str, pdf_config: dict[str, Any]) -> Iterator[list[Worker]]:
    # One task at a time per worker: a chunk is CPU work, the two processes are the parallelism.
    with celery_workers(database_url, tmp_path, queue, pdf_config, concurrency=1) as started:
        yield started


def test_two_workers_render_the_chunks_of_a_thousand_accounts_and_merge_them(
    app: Flask, client: Any, workers: list[Worker]
) -> None:
    with app.app_context():
        for name, (prefix, size) in CLASSES.items():
            add_class_of(name, size, prefix=f"{prefix}x", activated_every=7)
        db.session.commit()

    job_id = _job_id(post_pdf(client, "sort=class&activation=all"))
    try:
        with app.app_context():
            wait_for(lambda: run_of(job_id).state not in ("queued", "running"), timeout=90, interval=0.2)
            run = run_of(job_id)
            assert run.state == "done", run.last_error
            chunks = len(pipeline.Job(run, core.frozen_scope(run)).chunks)
    finally:
        with app.app_context():
            stop_active_runs()

    # Every chunk rendered once, some by each worker; one merge.
    tasks = {worker.name: worker.tasks() for worker in workers}
    rendered = {name: [t["kwargs"]["index"] for t in found if t["task"] == pipeline.CHUNK_TASK] for name, found in tasks.items()}
    assert all(rendered.values()), rendered
    assert sorted(i for indexes in rendered.values() for i in indexes) == list(range(chunks))
    assert len({t["pid"] for found in tasks.values() for t in found}) == 2
    assert sum(t["task"] == pipeline.FINISH_TASK for found in tasks.values() for t in found) == 1
    assert sum(t["task"] == core.DRIVE for found in tasks.values() for t in found) == 1

    # The merged file: one letter per account, classes in school order, logins in order.
    status = client.get(f"{URL}/pdf/jobs/{job_id}/status", "adml_a").get_json()
    with client.get(status["download_url"], "adml_a") as download:
        assert download.status_code == 200
        data = download.get_data()
    assert page_count(data) == 1000
    texts = pdftotext(data).split("\f")[:-1]
    order = [LOGIN.search(page).group(0) for page in texts]  # type: ignore[union-attr]
    expected = [f"{prefix}x{n:04d}" for prefix, size in CLASSES.values() for n in range(size)]
    assert order == expected
    assert set(Counter(LOGIN.findall("\n".join(texts))).values()) == {1}
