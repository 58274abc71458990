"""Every configuration key the extension reads, with its default.

`init_app` fills the missing keys with ``app.config.setdefault``; the rest of the
package reads them through :func:`config_value`, which refuses unknown names so a
typo fails loudly instead of silently using a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import current_app

from .i18n import gettext as _

DEFAULTS: dict[str, Any] = {
    #: URL prefix of the page, under the host console.
    "URL_PREFIX": "/imports-exports/publipostage",
    #: The host layout that the extension's pages extend (through
    #: ``publipostage/layout.html``). It must define ``title`` and ``content`` blocks.
    "BASE_TEMPLATE": "base.html",
    #: Name of the ENT printed on letters and emails ("ENT Lumière", "ONE"...).
    "ENT_NAME": "ENT",
    #: Public address of the ENT, printed on letters and emails.
    "ENT_URL": "https://ent.example.fr",
    #: Page where a new user activates the account; default ``ENT_URL + /auth/activation``.
    "ACTIVATION_URL": None,
    #: Page "Mot de passe oublié"; default ``ENT_URL + /auth/forgot``.
    "RESET_URL": None,
    #: Page where a renewal code is entered (see ``renew`` of ``init_app``);
    #: default ``RESET_URL``.
    "RENEWAL_URL": None,
    #: The academic identity federated accounts sign in with (the optional field
    #: ``federated``): its name, printed on their letters and emails...
    "FEDERATION_NAME": "ÉduConnect",
    #: ...and its address.
    "FEDERATION_URL": "https://educonnect.education.gouv.fr",
    #: The password rule shown in the activation steps; ``None`` uses the catalog's text.
    "PASSWORD_RULE": None,
    #: Path of the logo printed on letters (PNG or JPEG); the PDF renderer may read
    #: this file and the extension's own assets, nothing else.
    "LOGO_PATH": None,
    #: School name when the admin's scope does not name one (letters, file names).
    "SCHOOL_NAME": "",
    #: Time zone of the school: creation-date filters are calendar days there, and
    #: creation dates are shown there.
    "TIMEZONE": "Europe/Paris",
    #: Time zone in which the host's naive datetimes (``created_at`` without a
    #: ``tzinfo``) are written: ``"UTC"`` for ``datetime.utcnow()`` or a
    #: ``DateTime`` column filled by the database in UTC, ``"Europe/Paris"`` for a
    #: host storing Paris wall-clock time. Aware values carry their own zone.
    "HOST_TIMEZONE": "UTC",
    #: Rows per page of the preview table.
    "PAGE_SIZE": 50,
    #: Accounts read from the database at a time when building outputs.
    "BATCH_SIZE": 500,
    #: Largest selection any output accepts; bigger ones are refused with a message.
    "MAX_SELECTION": 200_000,
    #: Up to this many accounts the PDF comes back in the request; above, a background job.
    "PDF_SYNC_LIMIT": 300,
    #: Letters per chunk rendered by one worker (cards use the next multiple of 8).
    "PDF_CHUNK_SIZE": 50,
    #: Worker processes rendering chunks in parallel (in-process backend).
    "PDF_WORKERS": 2,
    #: Sender lines of the school printed on postal letters (name, street, town),
    #: e.g. ``("École Émile Zola", "3 rue de l'École", "75011 Paris")``.
    "SCHOOL_ADDRESS": (),
    #: Language of the letters and cards (the catalog used to render them).
    "PDF_LOCALE": "fr",
    #: Print a QR code on every letter and card, leading to the activation (or
    #: password reset) page.
    "PDF_QR_CODE": True,
    #: Query appended to the QR code's link, with ``{login}`` and ``{code}``
    #: placeholders (``"?login={login}"``); ``None`` keeps the bare page address,
    #: so the printed code is never inside the QR code unless asked here.
    "PDF_QR_PARAMS": None,
    #: Rows per page of the sign-off sheet ("liste d'émargement"), at most (a row
    #: whose names wrap takes more room).
    "PDF_SIGNOFF_ROWS": 20,
    #: TrueType fonts (a path or a list of paths, tried in order) for the
    #: characters the shipped DejaVu fonts lack (Chinese, Japanese, Korean...);
    #: missing files are skipped, ``()`` uses none. The renderer may read these
    #: files. Default: Debian's ``fonts-droid-fallback``. (Noto CJK's ``.ttc``
    #: files have PostScript outlines, which the renderer cannot embed.)
    "PDF_FALLBACK_FONTS": (
        "/usr/share/fonts-droid-fallback/truetype/DroidSansFallback.ttf",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    ),
    #: Letters and cards laid out once per kind by xhtml2pdf, each account's texts
    #: drawn on them (pdf/stamp.py); ``False`` lays out every letter and every
    #: sheet of cards (slower, the same text).
    "PDF_STAMP": True,
    #: How worker processes are started: ``"spawn"`` (safe in threaded servers),
    #: ``"forkserver"`` or ``"fork"``.
    "PDF_START_METHOD": "spawn",
    #: Folder where finished PDF files wait for their download; default
    #: ``<instance_path>/publipostage``.
    "STORAGE_DIR": None,
    #: Seconds a finished file is kept when it is not downloaded; an older one is
    #: refused (and deleted) at download time.
    "FILE_EXPIRY": 3600,
    #: Sender of the credential emails; default ``MAIL_DEFAULT_SENDER``.
    "MAIL_SENDER": None,
    #: Reply-To of the credential emails (the school office, say).
    "MAIL_REPLY_TO": None,
    #: Messages sent over one SMTP connection before it is renewed.
    "MAIL_BATCH_SIZE": 100,
    #: SMTP connections used side by side by one campaign (relays limit this).
    "MAIL_CONNECTIONS": 4,
    #: Messages per minute at most, over all connections; 0 means no limit.
    "MAIL_RATE_LIMIT": 0,
    #: Attempts for a transient SMTP failure before a delivery is marked failed.
    "MAIL_MAX_ATTEMPTS": 5,
    #: First back-off delay in seconds (doubled at each attempt).
    "MAIL_RETRY_DELAY": 2.0,
    #: Longest back-off delay in seconds while the SMTP server is unreachable.
    "MAIL_MAX_RETRY_DELAY": 300.0,
    #: Seconds a campaign waits for an unreachable SMTP server before it stops as
    #: failed (``flask publipostage resume ID`` starts it again).
    "MAIL_MAX_WAIT": 3600,
    #: Subject of the credential emails; ``None`` uses the catalog's two subjects.
    #: ``%(ent_name)s`` is replaced by ``ENT_NAME``.
    "MAIL_SUBJECT": None,
    #: Messages marked "sending" together in the journal (one commit each group):
    #: after a crash of the sending process, at most this many per connection may
    #: reach their recipient twice. 1 = one commit per message.
    "MAIL_JOURNAL_GROUP": 10,
    #: Socket timeout in seconds of each SMTP connection.
    "MAIL_TIMEOUT": 60,
    #: Verify the certificate of the mail servers (the SMTP relay reached with
    #: Flask-Mail's ``MAIL_USE_TLS`` or ``MAIL_USE_SSL``, the bounce mailbox): a
    #: known authority and the host name of ``MAIL_SERVER``. ``False`` only for a
    #: test relay: the relay password and the activation codes could go to a
    #: server impersonating it; a warning says so in the log at start.
    "MAIL_TLS_VERIFY": True,
    #: PEM file of the authorities trusted for the mail servers, instead of the
    #: system's (the academy's own authority); a missing file fails at ``init_app``.
    "MAIL_TLS_CA_FILE": None,
    #: IMAP server of the mailbox receiving the bounces (the address of
    #: ``MAIL_SENDER`` or the relay's return path); ``flask publipostage bounces``
    #: reads the delivery-status notifications there. Always encrypted, verified
    #: like the relay.
    "MAIL_BOUNCE_IMAP_HOST": None,
    #: Its port: 993 (TLS from the start), or 143 with ``MAIL_BOUNCE_IMAP_STARTTLS``.
    "MAIL_BOUNCE_IMAP_PORT": 993,
    #: Plain connection upgraded with STARTTLS instead of TLS from the start.
    "MAIL_BOUNCE_IMAP_STARTTLS": False,
    #: Login and password of that mailbox.
    "MAIL_BOUNCE_IMAP_USER": None,
    "MAIL_BOUNCE_IMAP_PASSWORD": None,
    #: Folder holding the notifications.
    "MAIL_BOUNCE_IMAP_FOLDER": "INBOX",
    #: Or a Maildir on this machine where the bounces are delivered (instead of IMAP).
    "MAIL_BOUNCE_MAILDIR": None,
    #: Seconds without a sign of life after which a run (PDF or campaign) whose
    #: process stopped is taken over by another one; its driver writes one every
    #: sixth of it, and every process with a runner looks for such runs as often.
    "STALE_AFTER": 30,
    #: Times a run is taken over after its process stopped before it is failed
    #: (a run that kills its process each time must not loop forever).
    "MAX_TAKEOVERS": 3,
    #: ``"thread"`` (in-process, nothing to install), ``"celery"``, or ``"eager"``
    #: (everything in the caller, at once: tests and scripts).
    "JOB_BACKEND": "thread",
    #: The host's Celery application, when ``JOB_BACKEND`` is ``"celery"``.
    "CELERY_APP": None,
    #: Runs of one kind (PDF files, email campaigns) an admin may have queued or
    #: running at once, whatever their selections.
    "MAX_RUNNING_JOBS": 2,
    #: Days the distribution history is kept (each account's items: what was
    #: printed, emailed, exported, when, by whom; personal data): a school year
    #: and a margin. ``flask publipostage purge-history`` deletes older runs.
    "HISTORY_DAYS": 400,
    #: Create the extension's tables on ``init_app`` (turn off when migrations do it).
    "CREATE_TABLES": True,
    #: Extra catalog folders merged after the built-in one (later ones win).
    "TRANSLATION_DIRECTORIES": (),
}


#: Settings of earlier versions: ``init_app`` refuses them rather than ignore them.
RENAMED = {"PDF_STALE_AFTER": "STALE_AFTER", "MAIL_STALE_AFTER": "STALE_AFTER"}


def check_renamed(config: Any) -> None:
    for old, new in RENAMED.items():
        if f"PUBLIPOSTAGE_{old}" in config:
            raise RuntimeError(f"PUBLIPOSTAGE_{old} is no longer read: set PUBLIPOSTAGE_{new} instead")


def config_value(key: str, app: Any = None) -> Any:
    """Read ``PUBLIPOSTAGE_<key>`` from the app's config, refusing unknown keys."""
    if key not in DEFAULTS:
        raise KeyError(f"unknown publipostage setting {key!r}")
    app = app or current_app
    return app.config.get(f"PUBLIPOSTAGE_{key}", DEFAULTS[key])


#: The settings naming a time zone.
TIME_ZONES = ("TIMEZONE", "HOST_TIMEZONE")


def time_zone(key: str, app: Any = None) -> tzinfo:
    """The zone named by the setting ``key`` (one of :data:`TIME_ZONES`)."""
    if key not in TIME_ZONES:
        raise KeyError(f"{key!r} is not a time-zone setting")
    return ZoneInfo(config_value(key, app))


def check_time_zones(app: Any) -> None:
    """A misspelt zone fails at ``init_app``, not at the first date shown."""
    for key in TIME_ZONES:
        name = config_value(key, app)
        try:
            time_zone(key, app)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise RuntimeError(
                f"PUBLIPOSTAGE_{key} = {name!r} is not a time zone of the IANA database "
                "(such as \"Europe/Paris\" or \"UTC\")"
            ) from None


@dataclass(frozen=True)
class EntLinks:
    """The ENT's name, addresses and password rule, and the academic identity of
    federated accounts, as letters and emails print them."""

    name: str
    url: str
    activation_url: str
    reset_url: str
    password_rule: str
    renewal_url: str = ""
    federation_name: str = ""
    federation_url: str = ""

    @classmethod
    def from_config(cls, app: Any = None) -> "EntLinks":
        url = str(config_value("ENT_URL", app) or "").rstrip("/")
        reset_url = str(config_value("RESET_URL", app) or f"{url}/auth/forgot")
        return cls(
            name=str(config_value("ENT_NAME", app) or ""),
            url=url,
            activation_url=str(config_value("ACTIVATION_URL", app) or f"{url}/auth/activation"),
            reset_url=reset_url,
            renewal_url=str(config_value("RENEWAL_URL", app) or reset_url),
            federation_name=str(config_value("FEDERATION_NAME", app) or ""),
            federation_url=str(config_value("FEDERATION_URL", app) or ""),
            password_rule=str(
                config_value("PASSWORD_RULE", app)
                or _("at least 8 characters, with an upper-case letter, a lower-case letter and a digit")
            ),
        )
