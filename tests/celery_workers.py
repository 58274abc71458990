"""Real Celery worker processes on Redis, for the scale-out tests and the benchmarks.

Each worker is a separate Python process running the test host (:mod:`tests.hosts`)
on the database the test created, with ``JOB_BACKEND = "celery"``: the code path a
production host takes. Every task a worker finishes is recorded in its own
``<name>.tasks.jsonl`` (the task's name, its arguments, the worker's pid), so a
test can say which worker did what without trusting the log format of Celery.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("PUBLIPOSTAGE_TEST_REDIS_URL")

#: Late acknowledgement, one task at a time: a worker takes the next task when free.
CELERY_CONF = {
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "task_ignore_result": True,
    "broker_connection_retry_on_startup": True,
}

WORKER_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
from celery import Celery
from tests import hosts
from flask_publipostage.runs import backends

url, instance, queue, name, broker, concurrency, record, config = sys.argv[1:9]
celery_app = Celery("publipostage-test", broker=broker)
celery_app.conf.update({celery_conf!r}, task_default_queue=queue)
# The test process created the tables and holds the runs: keep them (reset=False).
app = hosts.make_app(
    url, instance, reset=False,
    PUBLIPOSTAGE_JOB_BACKEND="celery", PUBLIPOSTAGE_CELERY_APP=celery_app, **json.loads(config)
)
run_task = backends.run_task

def recorded(app, task, kwargs):
    result = run_task(app, task, kwargs)
    with open(record, "a", encoding="utf-8") as out:
        out.write(json.dumps({{"worker": name, "pid": os.getpid(), "task": task, "kwargs": kwargs}}) + "\\n")
    return result

backends.run_task = recorded
celery_app.worker_main([
    "worker", "-P", "threads", "-c", concurrency, "-Q", queue, "-n", name + "@%h",
    "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO",
])
"""


def make_celery(queue: str, broker: str | None = None) -> Any:
    """The Celery app a test host sends its tasks with, on ``queue``."""
    from celery import Celery

    celery_app = Celery("publipostage-test", broker=broker or REDIS_URL)
    celery_app.conf.update(CELERY_CONF, task_default_queue=queue)
    return celery_app


def new_queue() -> str:
    """A queue of one test's own: concurrent test runs share the Redis server."""
    return f"publipostage-test-{uuid.uuid4().hex[:12]}"


def delete_queue(queue: str, broker: str | None = None) -> None:
    import redis

    redis.Redis.from_url(str(broker or REDIS_URL)).delete(queue)


@dataclass(frozen=True)
class Worker:
    name: str
    log: Path
    record: Path

    def tasks(self) -> list[dict[str, Any]]:
        """The tasks this worker finished, in order."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text(encoding="utf-8").splitlines()]


@contextlib.contextmanager
def celery_workers(
    database_url: str,
    folder: Path,
    queue: str,
    config: dict[str, Any],
    *,
    count: int = 2,
    concurrency: int = 2,
    broker: str | None = None,
    timeout: float = 60,
) -> Iterator[list[Worker]]:
    """``count`` worker processes on ``queue``, ready when entered, stopped (SIGTERM,
    then SIGKILL) when left. ``config``: JSON-friendly settings of their app."""
    script = folder / "celery_worker.py"
    script.write_text(WORKER_SCRIPT.format(root=str(ROOT), celery_conf=CELERY_CONF))
    workers = [Worker(f"w{i}-{queue}", folder / f"worker{i}.log", folder / f"worker{i}.tasks.jsonl") for i in range(count)]
    processes = []
    try:
        for i, worker in enumerate(workers):
            with open(worker.log, "wb") as out:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(script), database_url, str(folder / f"w{i}"), queue, worker.name,
                         str(broker or REDIS_URL), str(concurrency), str(worker.record), json.dumps(config)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=str(ROOT),
                    )
                )
        deadline = time.monotonic() + timeout
        while not all(b" ready." in w.log.read_bytes() or p.poll() is not None for w, p in zip(workers, processes)):
            if time.monotonic() > deadline:
                raise AssertionError(f"Celery workers not ready after {timeout} s")
            time.sleep(0.05)
        if any(p.poll() is not None for p in processes):
            raise AssertionError("a Celery worker stopped:\n" + "\n".join(w.log.read_text()[-3000:] for w in workers))
        yield workers
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
