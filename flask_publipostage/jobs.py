"""Background work: an in-process runner by default, Celery when the host has it.

Work is a *task*: a function registered under a name with :func:`task` and called
with JSON-friendly keyword arguments inside an application context. Both backends
run the same functions, so a territory-wide run spreads over Celery workers on the
same code path the in-process runner uses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flask import Flask
from flask_babel import force_locale

from .config import config_value

log = logging.getLogger(__name__)

#: Task functions by name (code, not per-app state).
TASKS: dict[str, Callable[..., Any]] = {}
#: Called with the app when a runner starts (resuming interrupted work).
STARTUP_HOOKS: list[Callable[[Flask], None]] = []

CELERY_TASK_NAME = "flask_publipostage.run"


def task(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        TASKS[name] = fn
        return fn

    return register


def on_startup(fn: Callable[[Flask], None]) -> Callable[[Flask], None]:
    if fn not in STARTUP_HOOKS:
        STARTUP_HOOKS.append(fn)
    return fn


def run_task(app: Flask, name: str, kwargs: dict[str, Any]) -> Any:
    """Run a registered task in an app context, in French (emails, letters)."""
    with app.app_context(), force_locale("fr"):
        try:
            return TASKS[name](**kwargs)
        except Exception:
            # The task name only: arguments may hold personal data.
            log.exception("publipostage task %s failed", name)
            raise
        finally:
            app.extensions["publipostage"].db.session.remove()


class ThreadRunner:
    """Runs tasks on a small thread pool inside the web process."""

    def __init__(self, workers: int = 4) -> None:
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.app: Flask | None = None

    def start(self, app: Flask) -> None:
        self.app = app
        for hook in STARTUP_HOOKS:
            hook(app)

    def submit(self, name: str, **kwargs: Any) -> Future[Any]:
        assert self.app is not None, "runner not started"
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="publipostage")
        return self._executor.submit(run_task, self.app, name, kwargs)

    def shutdown(self, wait: bool = True) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait)
            self._executor = None


class EagerRunner(ThreadRunner):
    """Runs each task at once in the caller's thread (tests, command line)."""

    def submit(self, name: str, **kwargs: Any) -> Future[Any]:
        assert self.app is not None, "runner not started"
        future: Future[Any] = Future()
        try:
            future.set_result(run_task(self.app, name, kwargs))
        except Exception as exc:  # the future carries it, as a thread would
            future.set_exception(exc)
        return future


class CeleryRunner:
    """Sends tasks to the host's Celery app; its workers import the host app."""

    def __init__(self, celery_app: Any) -> None:
        self.celery = celery_app
        self.app: Flask | None = None
        self._task: Any = None

    def start(self, app: Flask) -> None:
        self.app = app

        def run(name: str, kwargs: dict[str, Any]) -> Any:
            return run_task(app, name, kwargs)

        self._task = self.celery.task(name=CELERY_TASK_NAME, acks_late=True)(run)
        for hook in STARTUP_HOOKS:
            hook(app)

    def submit(self, name: str, **kwargs: Any) -> Any:
        return self._task.apply_async(args=(name, kwargs))

    def shutdown(self, wait: bool = True) -> None:
        pass


def make_runner(app: Flask) -> Any:
    backend = config_value("JOB_BACKEND", app)
    if backend == "thread":
        return ThreadRunner()
    if backend == "eager":
        return EagerRunner()
    if backend == "celery":
        celery_app = config_value("CELERY_APP", app)
        if celery_app is None:
            raise RuntimeError("PUBLIPOSTAGE_JOB_BACKEND is 'celery' but PUBLIPOSTAGE_CELERY_APP is not set")
        return CeleryRunner(celery_app)
    raise RuntimeError(f"unknown PUBLIPOSTAGE_JOB_BACKEND {backend!r}")


def submit(app: Flask, name: str, **kwargs: Any) -> Any:
    return app.extensions["publipostage"].runner.submit(name, **kwargs)
