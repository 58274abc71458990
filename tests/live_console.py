"""The demo console as ``make demo`` serves it (gunicorn, the outbox process), and an
HTTP client of it: for the test of the production server and the load benchmark.

The client is the standard library's ``http.client``: a browser's session cookie,
the CSRF token of the forms, keep-alive or a new connection per request.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIPOSTAGE = "/imports-exports/publipostage"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class ConsoleSession:
    """One user's session on the console at ``127.0.0.1:port``."""

    def __init__(self, port: int, *, keep_alive: bool = True, timeout: float = 120) -> None:
        self.port = port
        self.keep_alive = keep_alive
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if not self.keep_alive:
            headers["Connection"] = "close"
        for attempt in (1, 2):
            connection = self._connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                connection.request(method, path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle kept-alive connection: once more on a new one.
                connection.close()
                self._connection = None
                if attempt == 2:
                    raise
        for value in answer.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if self.keep_alive and not answer.will_close:
            self._connection = connection
        else:
            connection.close()
            self._connection = None
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, form: dict[str, str], *, token_from: str) -> Response:
        """POST ``form`` with the CSRF token of the page ``token_from``."""
        return self.request("POST", path, {"csrf_token": csrf_token(self.get(token_from).text), **form})

    def login(self, login: str, password: str = "demo") -> None:
        answer = self.post("/login", {"identifiant": login, "mot_de_passe": password}, token_from="/login")
        if answer.status != 302:
            raise AssertionError(f"login of {login} refused: {answer.status}")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def csrf_token(html: str) -> str:
    found = _CSRF.search(html)
    if found is None:
        raise AssertionError("no CSRF token in the page")
    return found.group(1)


@dataclass(frozen=True)
class LiveConsole:
    port: int
    smtp_port: int
    instance: Path
    banner: str

    @property
    def outbox(self) -> Path:
        return self.instance / "outbox"


@contextlib.contextmanager
def production_console(
    instance: Path, *, seed: int | None = 5, workers: int | None = None, database_url: str | None = None
) -> Iterator[LiveConsole]:
    """``make demo`` in ``instance``: the seed (``seed``; None keeps the data), then
    ``serve`` on free ports until the block ends (SIGTERM: gunicorn stops its workers).
    ``database_url``: another database than the demo's SQLite file."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ENT_CONSOLE_")}
    environment["ENT_CONSOLE_INSTANCE_PATH"] = str(instance)
    if database_url:
        environment["ENT_CONSOLE_DATABASE_URL"] = database_url
    if seed is not None:
        command = [sys.executable, "-m", "examples.ent_console.seed", "--reset", "--seed", str(seed)]
        subprocess.run(command, cwd=ROOT, env=environment, check=True, capture_output=True)
    port, smtp_port = free_port(), free_port()
    environment.update(ENT_CONSOLE_PORT=str(port), ENT_CONSOLE_SMTP_PORT=str(smtp_port))
    if workers is not None:
        environment["ENT_CONSOLE_WORKERS"] = str(workers)
    log = instance / "serve.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "examples.ent_console.serve"], cwd=ROOT, env=environment, stdout=out,
            stderr=subprocess.STDOUT, text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve stopped:\n{log.read_text()}")
            try:
                if ConsoleSession(port, keep_alive=False, timeout=5).get("/login").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the console never answered:\n{log.read_text()}")
            time.sleep(0.2)
        yield LiveConsole(port, smtp_port, instance, log.read_text())
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
