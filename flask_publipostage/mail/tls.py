"""TLS towards the mail servers: the SMTP relay and the mailbox receiving bounces.

Python's ``smtplib`` and ``imaplib`` encrypt without verifying anything unless
they are handed a context: the relay password and every activation code would
go to whoever answers on the relay's address. Every connection of the extension
to a mail server takes its context from :func:`context`: the system's
authorities (or the academy's own, ``MAIL_TLS_CA_FILE``) and the host name
checked. ``MAIL_TLS_VERIFY = False`` turns that off for a test relay, and says
so in the log when the application starts.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
import ssl
from typing import Any

from ..config import config_value

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    # Loading the system's authorities costs milliseconds: once per setting, and
    # one context serves every connection (it is safe to share between threads).
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def context(app: Any = None) -> ssl.SSLContext:
    """The TLS context of every connection to a mail server."""
    ca_file = config_value("MAIL_TLS_CA_FILE", app)
    return _context(bool(config_value("MAIL_TLS_VERIFY", app)), str(ca_file) if ca_file else None)


def is_certificate_error(exc: BaseException) -> bool:
    """The server's certificate was refused (unknown authority, wrong name, expired)."""
    return isinstance(exc, (ssl.SSLCertVerificationError, ssl.CertificateError))


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(app: Any) -> None:
    """At ``init_app``: a missing CA file fails now, not at the first campaign; an
    unverified or unencrypted connection that matters is said in the log."""
    ca_file = config_value("MAIL_TLS_CA_FILE", app)
    if ca_file and not os.path.isfile(str(ca_file)):
        raise RuntimeError(f"PUBLIPOSTAGE_MAIL_TLS_CA_FILE = {ca_file!r} is not a file")
    if ca_file:
        try:
            context(app)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise RuntimeError(
                f"PUBLIPOSTAGE_MAIL_TLS_CA_FILE = {ca_file!r} holds no PEM certificate ({exc})"
            ) from None
    config = app.config
    smtp_tls = bool(config.get("MAIL_USE_TLS") or config.get("MAIL_USE_SSL"))
    imap = bool(config_value("MAIL_BOUNCE_IMAP_HOST", app))
    if not config_value("MAIL_TLS_VERIFY", app) and (smtp_tls or imap):
        log.warning(
            "PUBLIPOSTAGE_MAIL_TLS_VERIFY is False: the certificates of the mail servers are not verified; "
            "the SMTP password and the messages (activation codes) may go to a server impersonating the relay"
        )
    server = str(config.get("MAIL_SERVER") or "localhost")
    if config.get("MAIL_USERNAME") and not smtp_tls and not _loopback(server):
        log.warning(
            "MAIL_USERNAME is set but neither MAIL_USE_TLS nor MAIL_USE_SSL: the SMTP password and the "
            "messages (activation codes) cross the network to %s unencrypted",
            server,
        )
