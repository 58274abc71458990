"""Where background work runs: threads of this process, Celery workers, or at once.

Work is a *task*: a function registered under a name with :func:`task` and called
with JSON-friendly keyword arguments inside an application context. Every backend
runs the same functions, so a territory-wide run spreads over Celery workers on the
code path the in-process runner uses. This module is the only reader of
``PUBLIPOSTAGE_JOB_BACKEND``.

Every runner but the eager one also *watches*: every third of ``STALE_AFTER`` it
calls the function it was given (:func:`flask_publipostage.runs.core.resume_stale`),
so a run whose process died is taken over by another one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from flask import Flask
from flask_babel import force_locale

from ..config import config_value
from ..state import state

log = logging.getLogger(__name__)

#: Task functions by name (code, not per-app state).
TASKS: dict[str, Callable[..., Any]] = {}

CELERY_TASK_NAME = "flask_publipostage.run"


def task(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        TASKS[name] = fn
        return fn

    return register


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
            state(app).session.remove()


def watch_every(app: Flask | None = None) -> float:
    return max(0.2, float(config_value("STALE_AFTER", app)) / 3)


class Runner:
    """Base of the runners: the app, the watcher, and a stop signal that long
    tasks look at (``stopping``) when the process shuts down."""

    #: Tasks run in other processes (a task must not wait for another one).
    distributed = False

    def __init__(self, watch: Callable[[Flask], None] | None = None) -> None:
        self.app: Flask | None = None
        self.stopping = threading.Event()
        self._watch = watch
        self._watcher: threading.Thread | None = None

    def start(self, app: Flask) -> None:
        self.app = app
        if self._watch is not None:
            self._watcher = threading.Thread(target=self._watch_loop, name="publipostage-watch", daemon=True)
            self._watcher.start()

    def _watch_loop(self) -> None:
        assert self.app is not None and self._watch is not None
        # Not at once: a short command (``flask shell``) must not take runs over.
        while not self.stopping.wait(watch_every(self.app)):
            try:
                self._watch(self.app)
            except Exception:  # noqa: BLE001 (the watcher must outlive a database hiccup)
                log.exception("publipostage: looking for interrupted runs failed")

    def submit(self, name: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def shutdown(self, wait: bool = True) -> None:
        self.stopping.set()
        if wait and self._watcher is not None:
            self._watcher.join()


class ThreadRunner(Runner):
    """Each task on a thread of its own, in the web process. Tasks are run drivers
    and sending lanes; their number is bounded by ``MAX_RUNNING_JOBS`` per admin
    and ``MAIL_CONNECTIONS`` per campaign."""

    def __init__(self, watch: Callable[[Flask], None] | None = None) -> None:
        super().__init__(watch)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def submit(self, name: str, **kwargs: Any) -> threading.Thread:
        assert self.app is not None, "runner not started"
        thread = threading.Thread(target=self._run, args=(name, kwargs), name=f"publipostage-{name}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _run(self, name: str, kwargs: dict[str, Any]) -> None:
        assert self.app is not None
        try:
            run_task(self.app, name, kwargs)
        except Exception:  # noqa: BLE001 (logged by run_task; a thread has nobody to tell)
            pass
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def shutdown(self, wait: bool = True) -> None:
        super().shutdown(wait)
        while wait:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                break
            for thread in threads:
                thread.join()


class EagerRunner(Runner):
    """Runs each task at once in the caller's thread (tests, scripts)."""

    def __init__(self, watch: Callable[[Flask], None] | None = None) -> None:
        super().__init__(None)

    def submit(self, name: str, **kwargs: Any) -> Future[Any]:
        assert self.app is not None, "runner not started"
        future: Future[Any] = Future()
        try:
            future.set_result(run_task(self.app, name, kwargs))
        except Exception as exc:  # the future carries it, as a thread would
            future.set_exception(exc)
        return future


class CeleryRunner(Runner):
    """Sends tasks to the host's Celery app; its workers import the host app."""

    distributed = True

    def __init__(self, celery_app: Any, watch: Callable[[Flask], None] | None = None) -> None:
        super().__init__(watch)
        self.celery = celery_app
        self._task: Any = None

    def start(self, app: Flask) -> None:
        def run(name: str, kwargs: dict[str, Any]) -> Any:
            return run_task(app, name, kwargs)

        self._task = self.celery.task(name=CELERY_TASK_NAME, acks_late=True)(run)
        super().start(app)

    def submit(self, name: str, **kwargs: Any) -> Any:
        return self._task.apply_async(args=(name, kwargs))


def make_runner(app: Flask, watch: Callable[[Flask], None] | None = None) -> Runner:
    backend = config_value("JOB_BACKEND", app)
    if backend == "thread":
        return ThreadRunner(watch)
    if backend == "eager":
        return EagerRunner()
    if backend == "celery":
        celery_app = config_value("CELERY_APP", app)
        if celery_app is None:
            raise RuntimeError("PUBLIPOSTAGE_JOB_BACKEND is 'celery' but PUBLIPOSTAGE_CELERY_APP is not set")
        return CeleryRunner(celery_app, watch)
    raise RuntimeError(f"unknown PUBLIPOSTAGE_JOB_BACKEND {backend!r}")


def runner(app: Flask | None = None) -> Runner:
    return state(app).runner  # type: ignore[no-any-return]


def submit(name: str, app: Flask | None = None, **kwargs: Any) -> Any:
    """Hand the task ``name`` to the app's runner."""
    return runner(app).submit(name, **kwargs)
