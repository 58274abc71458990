"""Run the demo as in production: gunicorn with several worker processes, and the
SMTP outbox in a process of its own, on 127.0.0.1:5000.

``python -m examples.ent_console.serve`` (after ``python -m examples.ent_console.seed``).
The ports come from ``ENT_CONSOLE_PORT`` (the console, 5000) and
``ENT_CONSOLE_SMTP_PORT`` (the SMTP outbox, 8025), the address from
``ENT_CONSOLE_HOST``; ``ENT_CONSOLE_WORKERS`` (default: 2 × cores + 1) and
``ENT_CONSOLE_THREADS`` (default 2) size the server.

Why it holds together with several processes:

- each worker builds its own app after the fork (no ``preload``), so each has its
  own database pool and its own job runner; a PDF file or a campaign is a run in the
  database, driven by the worker that started it, with heartbeats: its progress
  page and its download may be served by any worker, and a run whose worker died
  is taken over by another one (``STALE_AFTER``);
- the outbox is one process for all of them (one SMTP port), started here before
  the server and stopped with it;
- this process reads the settings with an app whose runner is ``eager``: it starts
  no thread, so the workers are forked from a process without any.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from . import create_app, env_number, env_port
from .auth import DEMO_ACCOUNTS

DEFAULT_PORT = 5000


def env_count(name: str, default: int) -> int:
    """A number of processes or threads from ``$name``, else ``default``."""
    return env_number(name, default, 256)


def start_outbox_process(port: int, directory: str) -> subprocess.Popen[str] | str:
    """``python -m examples.ent_console.outbox`` in a child process, once it
    listens; else the reason it did not start (the port is taken...)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.ent_console.outbox", "--port", str(port), "--dir", directory],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline() and process.poll() is None:  # its "listening" line, or EOF when it stopped
        return process
    _out, error = process.communicate()
    return (error.strip().splitlines() or ["arrêté"])[-1]


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    try:
        port = env_port("ENT_CONSOLE_PORT", DEFAULT_PORT)
        workers = env_count("ENT_CONSOLE_WORKERS", 2 * (os.cpu_count() or 1) + 1)
        threads = env_count("ENT_CONSOLE_THREADS", 2)
        # The settings, read once here; ``eager``: no runner thread in this process.
        app = create_app({"PUBLIPOSTAGE_JOB_BACKEND": "eager"})  # reads ENT_CONSOLE_SMTP_PORT
    except ValueError as error:
        print(f"Démonstration non démarrée : {error}", file=sys.stderr)
        return 2
    host = os.environ.get("ENT_CONSOLE_HOST", "127.0.0.1")
    smtp_port = int(app.config["MAIL_PORT"])
    outbox_dir = app.config["ENT_CONSOLE_OUTBOX_DIR"]
    database = app.config["SQLALCHEMY_DATABASE_URI"]
    with app.app_context():
        from .models import db

        db.engine.dispose()  # no connection is inherited by the workers
    outbox = start_outbox_process(smtp_port, outbox_dir)
    if isinstance(outbox, str):
        # Another outbox (python -m examples.ent_console.outbox) may already listen there.
        prefix = f"Serveur SMTP de démonstration non démarré sur le port {smtp_port}"
        print(outbox if outbox.startswith(prefix) else f"{prefix} : {outbox}", file=sys.stderr)

    print("ENT Lumière — console d'administration de démonstration")
    print(f"  Console : http://{host}:{port}/ (gunicorn, {workers} processus × {threads} fils)")
    print(f"  SMTP    : 127.0.0.1:{smtp_port}, messages dans {outbox_dir} (page « Boîte d'envoi »)")
    print(f"  Base    : {database}")
    print("  Comptes de démonstration :")
    for login, password, role in DEMO_ACCOUNTS:
        print(f"    {login:<13} / {password:<5} {role}")
    sys.stdout.flush()
    try:
        Server(f"{host}:{port}", workers, threads).run()
    finally:
        if not isinstance(outbox, str):
            stop(outbox)
    return 0


class Server:
    """gunicorn, configured here rather than by a file (``make demo`` runs this module)."""

    def __init__(self, bind: str, workers: int, threads: int) -> None:
        from gunicorn.app.base import BaseApplication

        options: dict[str, Any] = {
            "bind": bind,
            "workers": workers,
            # Threads: a slow download or a long CSV export does not hold a whole process,
            # and the worker's heartbeat to gunicorn does not wait for a request.
            "worker_class": "gthread",
            "threads": threads,
            # The sync PDF (up to PDF_SYNC_LIMIT letters) takes seconds on a busy machine.
            "timeout": 120,
            "graceful_timeout": 20,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "ent-console",
        }

        class Application(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                for key, value in options.items():
                    self.cfg.set(key, value)

            def load(self) -> Any:
                return create_app()  # in each worker, after the fork

        self.application = Application()

    def run(self) -> None:
        self.application.run()


if __name__ == "__main__":
    sys.exit(main())
