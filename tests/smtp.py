"""A real SMTP server for the mail tests: aiosmtpd on 127.0.0.1, a free port.

It keeps every accepted message, can refuse some recipients (5xx or 4xx), can
die after N messages like a crashed relay (the N-th is stored but never
acknowledged, every open connection is reset), and can start again on the same
port. Like a real relay it can require STARTTLS or speak TLS from the start
(SMTPS) with a certificate made for the test, require a login, and announce
8BITMIME and SMTPUTF8 or not.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

#: Relays in these tests: TLS after STARTTLS, or from the start.
STARTTLS = "starttls"
SMTPS = "smtps"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    mail_options: tuple[str, ...] = ()
    #: The message came over an encrypted connection.
    tls: bool = False

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        answer = self.server.answer_for(address)
        if answer is not None:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        encrypted = smtp.transport is not None and smtp.transport.get_extra_info("sslcontext") is not None
        self.server.store(envelope, tls=encrypted)
        return "250 Message accepted"

    async def handle_EHLO(self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not self.server.eight_bit_mime:
            responses = [r for r in responses if r[4:] != "8BITMIME"]
        return responses

    def authenticate(self, smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        with self.server._lock:
            self.server.auth_attempts += 1
        if isinstance(data, LoginPassword) and self.server.auth is not None:
            login, password = self.server.auth
            if data.login.decode() == login and data.password.decode() == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _DelayedSMTP(SMTP):
    delay = 0.0

    async def push(self, status: Any) -> None:  # type: ignore[override]
        if self.delay:
            await asyncio.sleep(self.delay)
        await super().push(status)


class SmtpServer:
    """Start with ``start()``; ``close()`` at the end."""

    def __init__(
        self,
        *,
        refuse: Callable[[str], bool] | None = None,
        tempfail: dict[str, int] | None = None,
        kill_after: int | None = None,
        delay: float = 0.0,
        tls: str | None = None,
        certificate: Any = None,
        auth: tuple[str, str] | None = None,
        eight_bit_mime: bool = True,
        smtputf8: bool = False,
    ) -> None:
        """``tls``: :data:`STARTTLS` (required before MAIL) or :data:`SMTPS`, with
        ``certificate`` (a ``trustme`` leaf certificate); ``auth``: the one login
        and password accepted, a login being required."""
        self.host = "127.0.0.1"
        self.port = free_port()
        self.refuse = refuse
        self.tempfail = dict(tempfail or {})
        self.kill_after = kill_after
        self.delay = delay
        self.tls = tls
        self.auth = auth
        self.eight_bit_mime = eight_bit_mime
        self.smtputf8 = smtputf8
        self.auth_attempts = 0
        self._tls_context = None
        if tls is not None:
            import ssl

            self._tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            certificate.configure_cert(self._tls_context)
        self.messages: list[Received] = []
        self.killed = threading.Event()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._protocols: set[SMTP] = set()
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------

    def start(self) -> SmtpServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="test-smtp", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        ready.set()
        self._loop.run_forever()
        self._abort_all()
        if self._server is not None:
            self._server.close()
        pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            self._factory, self.host, self.port, reuse_address=True,
            ssl=self._tls_context if self.tls == SMTPS else None,
        )

    def _factory(self) -> SMTP:
        protocol_class = type("TestSMTP", (_DelayedSMTP,), {"delay": self.delay})
        handler = _Handler(self)
        protocol = protocol_class(
            handler,
            hostname="test-smtp",
            loop=self._loop,
            enable_SMTPUTF8=self.smtputf8,
            tls_context=self._tls_context if self.tls == STARTTLS else None,
            require_starttls=self.tls == STARTTLS,
            auth_required=self.auth is not None,
            # Over SMTPS the connection is encrypted from the start.
            auth_require_tls=self.tls == STARTTLS,
            authenticator=handler.authenticate,
        )
        self._protocols.add(protocol)
        return protocol

    def _abort_all(self) -> None:
        for protocol in list(self._protocols):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abort()
        self._protocols.clear()

    def _kill_now(self) -> None:
        """In the loop: stop listening and reset every connection, like a crash."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._abort_all()
        self.killed.set()

    def kill(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._kill_now)

    def restart(self) -> None:
        """Listen again on the same port."""
        assert self._loop is not None
        self.killed.clear()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def close(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # -- behaviour ---------------------------------------------------------------

    def answer_for(self, address: str) -> str | None:
        if self.refuse is not None and self.refuse(address):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        with self._lock:
            left = self.tempfail.get(address, 0)
            if left > 0:
                self.tempfail[address] = left - 1
                return "451 4.7.1 Greylisted, please try again later"
        return None

    def store(self, envelope: Any, tls: bool = False) -> None:
        with self._lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    bytes(envelope.original_content or envelope.content),
                    tuple(envelope.mail_options),
                    tls,
                )
            )
            reached = len(self.messages)
        if self.kill_after is not None and reached == self.kill_after:
            self.kill_after = None
            # Stored, never acknowledged: the sender cannot know it arrived.
            self._kill_now()

    # -- reading -------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def by_recipient(self) -> Counter[str]:
        with self._lock:
            return Counter(r for m in self.messages for r in m.rcpt_tos)

    def config(self) -> dict[str, Any]:
        return {
            "MAIL_SERVER": self.host,
            "MAIL_PORT": self.port,
            "MAIL_SUPPRESS_SEND": False,
            "MAIL_USE_TLS": self.tls == STARTTLS,
            "MAIL_USE_SSL": self.tls == SMTPS,
        }


# -- helpers shared by the mail tests --------------------------------------------------


def populate(n: int, *, start: int = 0, school: str = "A", activated_every: int = 0) -> list[str]:
    """``n`` pupils with an address (bulk insert); returns their addresses."""
    from datetime import datetime

    import sqlalchemy as sa

    from .hosts import Personne, db

    rows = [
        {
            "identifiant": f"eleve.{i:06d}",
            "prenom_usuel": f"Prénom{i}",
            "nom_famille": f"Nom{i}",
            "categorie": "ELEVE",
            "adresse_mel": f"eleve.{i:06d}@example.org",
            "jeton": None if activated_every and i % activated_every == 0 else f"K{i:07d}X",
            "compte_ouvert": bool(activated_every and i % activated_every == 0),
            "cree_le": datetime(2025, 9, 1, 8, 0),
            "referent": False,
            "super_admin": False,
            "ecole": school,
        }
        for i in range(start, start + n)
    ]
    db.session.execute(sa.insert(Personne), rows)
    db.session.commit()
    return [str(r["adresse_mel"]) for r in rows]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)
