"""A local SMTP server for the demo that keeps every message as an .eml file.

Run it alone with ``python -m examples.ent_console.outbox``; ``serve`` starts it in a
background thread. Mail really goes through SMTP (the extension cannot tell it from
a relay), then lands in ``instance/outbox/`` where the console's page "Boîte
d'envoi" shows it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
_FILE_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9]{6}-[0-9]+\.eml$")
_counter = itertools.count(1)


def smtp_port() -> int:
    return int(os.environ.get("ENT_CONSOLE_SMTP_PORT", DEFAULT_PORT))


class OutboxHandler:
    """aiosmtpd handler: every accepted message becomes one file."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        # The envelope says who really receives it (Bcc included), as a relay's log would.
        header = f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        now = datetime.now(UTC)
        name = f"{now:%Y%m%dT%H%M%S}-{now.microsecond:06d}-{next(_counter)}.eml"
        temporary = self.directory / f".{name}.tmp"
        temporary.write_bytes(header + content)
        temporary.replace(self.directory / name)  # readers never see half a file
        return "250 Message accepted for delivery"


def start_outbox(
    directory: str | os.PathLike[str], host: str = DEFAULT_HOST, port: int | None = None
) -> Controller:
    """Start the SMTP server in a background thread; ``stop()`` the result to end it."""
    controller = Controller(
        OutboxHandler(directory),
        hostname=host,
        port=smtp_port() if port is None else port,
        enable_SMTPUTF8=True,
    )
    controller.start()
    return controller


@dataclass(frozen=True)
class StoredMessage:
    """One received message, as listed by the console."""

    name: str
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


def read_message(directory: str | os.PathLike[str], name: str) -> StoredMessage | None:
    """A stored message by file name; None for any name this server did not write."""
    if not _FILE_NAME.match(name):
        return None
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
        received=received,
        sender=str(message["From"] or ""),
        to=str(message["To"] or message["X-Envelope-To"] or ""),
        subject=str(message["Subject"] or ""),
        message=message,
    )


def list_messages(directory: str | os.PathLike[str], limit: int | None = None) -> list[StoredMessage]:
    """Received messages, newest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    names = sorted((p.name for p in folder.glob("*.eml")), reverse=True)
    if limit is not None:
        names = names[:limit]
    return [m for m in (read_message(folder, n) for n in names) if m is not None]


def count_messages(directory: str | os.PathLike[str]) -> int:
    folder = Path(directory)
    return sum(1 for _ in folder.glob("*.eml")) if folder.is_dir() else 0


def clear_messages(directory: str | os.PathLike[str]) -> int:
    removed = 0
    for path in Path(directory).glob("*.eml"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def main(argv: list[str] | None = None) -> None:
    from . import default_instance_path

    parser = argparse.ArgumentParser(description="Serveur SMTP local de démonstration.")
    parser.add_argument("--port", type=int, default=smtp_port())
    parser.add_argument(
        "--dir",
        default=os.environ.get("ENT_CONSOLE_OUTBOX_DIR") or os.path.join(default_instance_path(), "outbox"),
        help="dossier où chaque message est enregistré (.eml)",
    )
    args = parser.parse_args(argv)
    controller = start_outbox(args.dir, port=args.port)
    print(f"SMTP de démonstration sur {DEFAULT_HOST}:{args.port}, messages dans {args.dir}")
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
