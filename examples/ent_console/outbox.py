"""A local SMTP server for the demo that keeps every message as an .eml file.

Run it alone with ``python -m examples.ent_console.outbox``; ``serve`` starts it in a
background thread. Mail really goes through SMTP (the extension cannot tell it from
a relay), then lands in ``instance/outbox/`` where the console's page "Boîte
d'envoi" shows it.

The messages hold activation codes, so each one is tied to a school when it is
stored: the server asks the directory which school the envelope's recipients belong
to and writes that school's UAI in the file name (``<time>-<n>.<UAI>.eml``). The name
is chosen by the server alone, so a message cannot claim a school, and later changes
to the directory do not move a message. A message whose recipients are not all
accounts of one same school gets no school: only a super admin reads it.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flask import Flask

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
_SCHOOL = re.compile(r"[0-9A-Za-z]{1,8}")  # a UAI ("0370001A"), the only school key a file name may carry
_FILE_NAME = re.compile(
    rf"^[0-9]{{8}}T[0-9]{{6}}-[0-9]{{6}}-[0-9]+(?:\.(?P<school>{_SCHOOL.pattern}))?\.eml$"
)
_counter = itertools.count(1)

#: The envelope's recipients -> the UAI of the one school they all belong to, else None.
SchoolOf = Callable[[Sequence[str]], str | None]


def smtp_port() -> int:
    from . import env_port

    return env_port("ENT_CONSOLE_SMTP_PORT", DEFAULT_PORT)


class OutboxHandler:
    """aiosmtpd handler: every accepted message becomes one file."""

    def __init__(self, directory: str | os.PathLike[str], school_of: SchoolOf | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.school_of = school_of

    def school(self, recipients: Sequence[str]) -> str | None:
        if self.school_of is None:
            return None
        try:
            school = self.school_of(recipients)
        except Exception:  # the directory is unreachable: keep the message, for super admins only
            log.exception("Boîte d'envoi : établissement des destinataires introuvable")
            return None
        return school if school is not None and _SCHOOL.fullmatch(school) else None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # The directory look-up blocks the loop a few milliseconds: fine for a demo server.
        content: bytes = envelope.original_content or envelope.content
        # The envelope says who really receives it (Bcc included), as a relay's log would.
        header = f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        school = self.school(envelope.rcpt_tos)
        now = datetime.now(UTC)
        name = f"{now:%Y%m%dT%H%M%S}-{now.microsecond:06d}-{next(_counter)}"
        name += f".{school}.eml" if school else ".eml"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(header + content)
        temporary.replace(self.directory / name)  # readers never see half a file
        return "250 Message accepted for delivery"


def start_outbox(
    directory: str | os.PathLike[str],
    host: str = DEFAULT_HOST,
    port: int | None = None,
    school_of: SchoolOf | None = None,
) -> Controller:
    """Start the SMTP server in a background thread; ``stop()`` the result to end it.

    Without ``school_of`` no message is tied to a school (only a super admin reads them).
    """
    controller = Controller(
        OutboxHandler(directory, school_of),
        hostname=host,
        port=smtp_port() if port is None else port,
        enable_SMTPUTF8=True,
    )
    controller.start()
    return controller


def start_console_outbox(app: Flask, port: int | None = None) -> Controller:
    """The outbox of a console: its folder, its SMTP port, its directory's schools."""
    from .access import school_of_recipients

    return start_outbox(
        app.config["ENT_CONSOLE_OUTBOX_DIR"],
        port=int(app.config["MAIL_PORT"]) if port is None else port,
        school_of=school_of_recipients(app),
    )


@dataclass(frozen=True)
class StoredMessage:
    """One received message, as listed by the console."""

    name: str
    #: UAI of the school the message was stored for; None: super admins only.
    school: str | None
    received: datetime
    sender: str
    to: str
    subject: str
    message: EmailMessage

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        if body is None:
            return ""
        return str(body.get_content())  # type: ignore[attr-defined]

    @property
    def html(self) -> str | None:
        body = self.message.get_body(preferencelist=("html",))
        return None if body is None else str(body.get_content())  # type: ignore[attr-defined]

    @property
    def attachments(self) -> list[str]:
        return [part.get_filename() or "(sans nom)" for part in self.message.iter_attachments()]


#: Which messages a reader may see: None for all of them, else the UAIs of their schools.
Schools = Collection[str] | None


def _visible(match: re.Match[str] | None, schools: Schools) -> bool:
    return match is not None and (schools is None or match["school"] in schools)


def _names(folder: Path, schools: Schools) -> list[str]:
    """File names of the messages ``schools`` may see, newest first."""
    if not folder.is_dir():
        return []
    names = (path.name for path in folder.glob("*.eml"))
    return sorted((name for name in names if _visible(_FILE_NAME.match(name), schools)), reverse=True)


def read_message(
    directory: str | os.PathLike[str], name: str, schools: Schools = None
) -> StoredMessage | None:
    """A stored message by file name; None for a name this server did not write, or
    for a message of a school not in ``schools``."""
    match = _FILE_NAME.match(name)
    if not _visible(match, schools):
        return None
    assert match is not None
    path = Path(directory) / name
    if not path.is_file():
        return None
    with path.open("rb") as handle:
        message = BytesParser(policy=policy.default).parse(handle)
    assert isinstance(message, EmailMessage)
    try:
        received = parsedate_to_datetime(str(message["Date"]))
    except (TypeError, ValueError):
        received = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return StoredMessage(
        name=name,
        school=match["school"],
        received=received,
        sender=str(message["From"] or ""),
        to=str(message["To"] or message["X-Envelope-To"] or ""),
        subject=str(message["Subject"] or ""),
        message=message,
    )


def list_messages(
    directory: str | os.PathLike[str], limit: int | None = None, schools: Schools = None
) -> list[StoredMessage]:
    """Received messages that ``schools`` may see (None: all), newest first."""
    folder = Path(directory)
    names = _names(folder, schools)[:limit]
    return [m for m in (read_message(folder, n, schools) for n in names) if m is not None]


def count_messages(directory: str | os.PathLike[str], schools: Schools = None) -> int:
    return len(_names(Path(directory), schools))


def clear_messages(directory: str | os.PathLike[str], schools: Schools = None) -> int:
    """Delete the messages that ``schools`` may see (None: all); return how many."""
    folder = Path(directory)
    names = _names(folder, schools)
    for name in names:
        (folder / name).unlink(missing_ok=True)
    return len(names)


def main(argv: list[str] | None = None) -> None:
    from . import create_app, default_instance_path
    from .access import school_of_recipients

    parser = argparse.ArgumentParser(description="Serveur SMTP local de démonstration.")
    try:
        default_port = smtp_port()
    except ValueError as error:
        parser.error(str(error))
    parser.add_argument("--port", type=int, default=default_port, help="défaut : $ENT_CONSOLE_SMTP_PORT, sinon 8025")
    parser.add_argument(
        "--dir",
        default=os.environ.get("ENT_CONSOLE_OUTBOX_DIR") or os.path.join(default_instance_path(), "outbox"),
        help="dossier où chaque message est enregistré (.eml)",
    )
    args = parser.parse_args(argv)
    # The console's directory ties each message to its school, as under ``serve``;
    # ``eager``: this process runs no background work of the console.
    app = create_app({"PUBLIPOSTAGE_JOB_BACKEND": "eager"})
    try:
        controller = start_outbox(args.dir, port=args.port, school_of=school_of_recipients(app))
    except (OSError, RuntimeError) as error:
        parser.exit(1, f"Serveur SMTP de démonstration non démarré sur le port {args.port} : {error}\n")
    # ``serve`` waits for this line.
    print(f"SMTP de démonstration sur {DEFAULT_HOST}:{args.port}, messages dans {args.dir}", flush=True)
    stop = threading.Event()
    # Ctrl-C, and also `kill` from a script that started it in the background.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
