"""The credential email: French, plain text and HTML, one per account.

Rendered from ``publipostage/email/credentials_{not_activated,federated,activated}.{txt,html}``
(a host overrides them by putting files at the same paths in its own templates),
by the account's :attr:`~flask_publipostage.recipients.Recipient.content`, the
rule letters follow too. An expired code is never sent (the campaign skips the
account).
Header values never carry CR/LF; names are encoded by Flask-Mail; body lines are
wrapped because relays refuse lines over 998 bytes. Bodies go as 8-bit UTF-8 to a
relay that announces 8BITMIME (the connection declares it), as quoted-printable
to one that does not; an address with accents goes only to a relay announcing
SMTPUTF8, as UTF-8 (RFC 6531/6532), never in a half-encoded form.
"""

from __future__ import annotations

import binascii
import copy
import functools
import re
import secrets
from dataclasses import dataclass
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import formatdate, parseaddr
from typing import Any

from flask import Flask, current_app
from flask_mail import Mail, Message, sanitize_address

from ..config import EntLinks, config_value
from ..i18n import gettext as _
from ..recipients import ACTIVATION, FEDERATED, Recipient

LINE_WIDTH = 78
#: RFC 5321 allows 1000 bytes with CRLF; stay well below when a word is longer.
HARD_LINE_BYTES = 900
MAX_HEADER_CHARS = 200

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_BLANK_RUNS = re.compile(r"\n{3,}")
_LIST_MARKER = re.compile(r"(\d+\.|[-*•])\s+")


class MailConfigError(Exception):
    """The application is not configured to send (no sender)."""


def clean_header(value: Any, limit: int = MAX_HEADER_CHARS) -> str:
    """A header value on one line: control characters (CR, LF...) become spaces."""
    text = _CONTROL.sub(" ", str(value or ""))
    return _SPACES.sub(" ", text).strip()[:limit]


def address_problem(address: str | None, *, smtputf8: bool = False) -> str | None:
    """Why ``address`` cannot be sent to, in French, or None when it is fine.

    With accents, it is fine only for a relay announcing SMTPUTF8 (``smtputf8``),
    and then checked as its ASCII shape (letters for the accented letters, the
    domain in IDNA form).
    """
    if not address:
        return _("No email address.")
    checked = address
    if not address.isascii():
        if not smtputf8:
            return _(
                "The address “%(address)s” contains non-ASCII characters (accents...): "
                "the mail server does not accept them (no SMTPUTF8). Correct it in the directory.",
                address=clean_header(address, 120),
            )
        checked = _ascii_shape(address)
    if len(checked) > 254 or not _ADDRESS.match(checked) or ".." in checked:
        return _("The address “%(address)s” is not valid.", address=clean_header(address, 120))
    return None


def _ascii_shape(address: str) -> str:
    """``address`` with each accented letter of the local part as ``a`` and the
    domain in IDNA form; ``""`` when neither can be (a symbol, a bad domain)."""
    local, _at, domain = address.rpartition("@")
    if any(not c.isascii() and not c.isalnum() for c in local):
        return ""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    return "".join(c if c.isascii() else "a" for c in local) + "@" + ascii_domain


def wrap_lines(text: str, width: int = LINE_WIDTH) -> str:
    """Every line at most ``width`` characters, cut at spaces; a longer word (a
    URL) stays whole unless it would exceed what SMTP accepts."""
    text = _BLANK_RUNS.sub("\n\n", text.replace("\r\n", "\n").replace("\r", "\n")).strip("\n")
    out: list[str] = []
    for line in text.split("\n"):
        line = line.rstrip()
        if len(line) > width:
            stripped = line.lstrip()
            indent = line[: len(line) - len(stripped)]
            marker = _LIST_MARKER.match(stripped)
            follow = indent + " " * (len(marker.group(0)) if marker else 0)
            pieces = _greedy_wrap(indent, stripped, width, follow)
        else:
            pieces = [line]
        for piece in pieces:
            # Under 225 characters a line cannot exceed the byte limit.
            out.extend(_hard_split(piece) if len(piece) > HARD_LINE_BYTES // 4 else (piece,))
    return "\n".join(out) + "\n"


def _greedy_wrap(indent: str, text: str, width: int, follow: str) -> list[str]:
    # textwrap would do, five times slower; only plain spaces separate words
    # (a no-break space stays a no-break space).
    words = [w for w in text.split(" ") if w]
    if not words:
        return [""]
    pieces = []
    current = indent + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            pieces.append(current)
            current = follow + word
    pieces.append(current)
    return pieces


def _hard_split(line: str) -> list[str]:
    if len(line.encode("utf-8")) <= HARD_LINE_BYTES:
        return [line]
    # Four bytes at most per character in UTF-8.
    step = HARD_LINE_BYTES // 4
    return [line[i : i + step] for i in range(0, len(line), step)]


def ensure_mail(app: Flask | None = None) -> Any:
    """The app's Flask-Mail state; created from the config when the host has none."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    state = app.extensions.get("mail")
    if state is None:
        state = Mail().init_app(app)
    return state


def _sender_pair(value: Any) -> tuple[str, str] | None:
    if not value:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        name, address = str(value[0] or ""), str(value[1] or "")
    else:
        name, address = parseaddr(str(value))
    name, address = clean_header(name), clean_header(address, 254)
    if not address or address_problem(address):
        return None
    return name, address


@dataclass(frozen=True)
class MailSettings:
    """What every message of a run shares, read once from the config."""

    sender: tuple[str, str]
    reply_to: tuple[str, str] | None
    domain: str
    links: EntLinks
    school_name: str
    subject: str | None

    ent_name = property(lambda self: clean_header(self.links.name))
    ent_url = property(lambda self: self.links.url)
    activation_url = property(lambda self: self.links.activation_url)
    reset_url = property(lambda self: self.links.reset_url)
    federation_name = property(lambda self: clean_header(self.links.federation_name))
    federation_url = property(lambda self: self.links.federation_url)
    password_rule = property(lambda self: self.links.password_rule)

    @classmethod
    def load(cls, school_name: str = "") -> MailSettings:
        mail = ensure_mail()
        raw_sender = config_value("MAIL_SENDER") or mail.default_sender
        sender = _sender_pair(raw_sender)
        if sender is None:
            raise MailConfigError(
                _(
                    "No valid sender address is configured "
                    "(PUBLIPOSTAGE_MAIL_SENDER or MAIL_DEFAULT_SENDER)."
                )
            )
        return cls(
            sender=sender,
            reply_to=_sender_pair(config_value("MAIL_REPLY_TO")),
            domain=sender[1].rsplit("@", 1)[-1],
            links=EntLinks.from_config(),
            school_name=clean_header(school_name or config_value("SCHOOL_NAME")),
            subject=config_value("MAIL_SUBJECT"),
        )


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


#: The email of each :attr:`Recipient.content` (activated accounts, and any other).
EMAIL_KINDS = {ACTIVATION: "not_activated", FEDERATED: "federated"}


def template_names(recipient: Recipient) -> tuple[str, str]:
    kind = EMAIL_KINDS.get(recipient.content, "activated")
    return (
        f"publipostage/email/credentials_{kind}.txt",
        f"publipostage/email/credentials_{kind}.html",
    )


def subject_for(recipient: Recipient, settings: MailSettings) -> str:
    if settings.subject:
        return clean_header(str(settings.subject).replace("%(ent_name)s", settings.ent_name))
    if recipient.content == FEDERATED:
        text = _("Your %(ent_name)s account: sign in with %(federation)s", ent_name=settings.ent_name,
                 federation=settings.federation_name)
    elif recipient.activation_code:
        text = _("Your %(ent_name)s account: login and activation code", ent_name=settings.ent_name)
    else:
        text = _("Your %(ent_name)s account: your login, and how to choose a new password", ent_name=settings.ent_name)
    return clean_header(text)


class CachedGettext:
    """``_pp`` for a run of emails: each text is looked up in the catalog once."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, string: str, **variables: Any) -> str:
        translated = self._cache.get(string)
        if translated is None:
            translated = self._cache[string] = _(string)
        return translated % variables if variables else translated


def render(recipient: Recipient, settings: MailSettings, translate: CachedGettext | None = None) -> RenderedMail:
    """Subject, text and HTML of one recipient's email (lines already wrapped)."""
    text_name, html_name = template_names(recipient)
    app = current_app
    context = {
        "config": app.config,
        "_pp": translate or CachedGettext(),
        "recipient": recipient,
        # One line, whatever the directory holds (a CR/LF would split the greeting).
        "name": clean_header(recipient.full_name),
        "settings": settings,
        "ent_name": settings.ent_name,
        "ent_url": settings.ent_url,
        "activation_url": settings.activation_url,
        "reset_url": settings.reset_url,
        "federation_name": settings.federation_name,
        "federation_url": settings.federation_url,
        "password_rule": settings.password_rule,
        # The last day the activation code works ("" when the host does not say).
        "valid_until": day.strftime("%d/%m/%Y") if (day := recipient.code_valid_until_day) else "",
        # The account's own school (a territory's campaign spans many).
        "school_name": clean_header(recipient.school) or settings.school_name,
        "can_reply": settings.reply_to is not None,
    }
    subject = context["subject"] = subject_for(recipient, settings)
    # Straight to Jinja: no request here, and Flask's context processors and
    # signals would cost as much as the template.
    env = app.jinja_env
    return RenderedMail(
        subject=subject,
        text=wrap_lines(env.get_template(text_name).render(context)),
        html=wrap_lines(env.get_template(html_name).render(context)),
    )


class WirePolicy(Compat32):
    """compat32 with CRLF, writing already-encoded ASCII headers as they are.

    Used instead of Flask-Mail's ``policy.SMTP``: that policy re-folds long
    headers by parsing them, which decodes an RFC 2047 display name and writes it
    back bare ("Jean Bcc: x@evil.example" would turn To into a group), and its
    header parsing is most of the cost of ``as_bytes()``.

    ``utf8``: a message sent with SMTPUTF8, whose To header holds an address with
    accents, written as UTF-8 (RFC 6532) rather than as an RFC 2047 word that
    no mail client would take for an address.
    """

    utf8 = False

    def fold_binary(self, name: str, value: Any) -> bytes:
        if self.utf8:
            return self._fold(name, value, sanitize=False).encode("utf-8", "surrogateescape")
        return super().fold_binary(name, value)  # type: ignore[no-any-return]

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii():
            lines = value.split("\r\n")
            if (
                all(len(line) <= 900 and "\n" not in line and "\r" not in line for line in lines)
                and all(line[:1] in (" ", "\t") for line in lines[1:])
            ):
                return f"{name}: {value}{self.linesep}"
        elif self.utf8 and isinstance(value, str) and "\n" not in value and "\r" not in value:
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc,no-any-return]


WIRE_POLICY = WirePolicy(linesep="\r\n")
UTF8_WIRE_POLICY = WirePolicy(linesep="\r\n", utf8=True)


@functools.lru_cache(maxsize=256)
def encoded_header(value: str, name: str) -> str:
    """RFC 2047 form of a header value, folded with CRLF (cached: subjects repeat)."""
    if value.isascii() and len(value) + len(name) + 2 <= LINE_WIDTH:
        return value
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


_PLACEHOLDER = "x@x.invalid"


def utf8_address(name: str, address: str) -> str:
    """``"name" <address>`` with the name encoded as Flask-Mail does and the
    address as written, accents included (an SMTPUTF8 message, RFC 6532)."""
    shown = sanitize_address((name, _PLACEHOLDER))
    if name and shown.endswith(f"<{_PLACEHOLDER}>"):
        return f"{shown[: -len(_PLACEHOLDER) - 2]}<{address}>"
    return address


@functools.lru_cache(maxsize=64)
def encoded_address(name: str, address: str) -> str:
    return sanitize_address((name, address))


def _text_part(text: str, subtype: str, eight_bit: bool = True) -> MIMENonMultipart:
    """What ``MIMEText(text, subtype, "utf-8")`` gives under Flask-Mail's charset
    (8bit UTF-8), without its per-message charset machinery; quoted-printable
    (7-bit) for a relay without 8BITMIME."""
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    data = text.encode("utf-8")
    if eight_bit:
        part["Content-Transfer-Encoding"] = "8bit"
        # The generator writes str payloads as ASCII; surrogate escapes carry the bytes.
        part.set_payload(data.decode("ascii", "surrogateescape"))
    else:
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(binascii.b2a_qp(data, istext=True).decode("ascii"))
    return part


class CredentialMessage(Message):
    """A Flask-Mail message whose MIME tree is built directly.

    Same headers as Flask-Mail's, names encoded by Flask-Mail's
    ``sanitize_address``; a multipart/alternative (text, HTML) without the
    multipart/mixed wrapper, known boundaries (the generator would otherwise
    compile a regular expression per message), and :class:`WirePolicy`.
    """

    #: Display name of the single recipient; ``recipients`` holds the bare address
    #: (the envelope needs nothing more).
    to_name: str = ""
    #: Set by the connection from what the relay announces (8BITMIME, SMTPUTF8).
    eight_bit: bool = True
    utf8: bool = False

    def _message(self) -> MIMEBase:
        token = secrets.token_hex(12)
        message = MIMEMultipart(
            "alternative",
            boundary=f"=_publipostage_{token}",
            _subparts=[
                _text_part(self.body or "", "plain", self.eight_bit),
                _text_part(self.html or "", "html", self.eight_bit),
            ],
        )
        message["Subject"] = encoded_header(self.subject, "Subject")
        name, address = self.sender if isinstance(self.sender, tuple) else parseaddr(self.sender)
        message["From"] = encoded_address(name, address)
        if self.utf8:
            message["To"] = ", ".join(utf8_address(self.to_name, str(r)) for r in self.recipients)
        elif self.to_name and len(self.recipients) == 1 and isinstance(self.recipients[0], str):
            message["To"] = sanitize_address((self.to_name, self.recipients[0]))
        else:
            message["To"] = ", ".join(sanitize_address(r) for r in self.recipients)
        message["Date"] = formatdate(self.date, localtime=True)
        message["Message-ID"] = self.msgId
        if self.reply_to:
            reply_name, reply_address = self.reply_to if isinstance(self.reply_to, tuple) else parseaddr(self.reply_to)
            message["Reply-To"] = encoded_address(reply_name, reply_address)
        for key, value in (self.extra_headers or {}).items():
            message[key] = value
        message.policy = UTF8_WIRE_POLICY if self.utf8 else WIRE_POLICY
        return message


class MessageFactory:
    """Builds Flask-Mail messages for one run.

    ``Message()`` calls ``make_msgid()``, whose ``socket.getfqdn()`` costs about as
    much as building the whole message: each message is a copy of one prototype,
    with its own Message-ID.
    """

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self._prototype = CredentialMessage(
            subject="",
            recipients=[],
            sender=settings.sender,
            reply_to=settings.reply_to,
        )
        # Kept as a pair: Flask-Mail encodes the name itself (quotes, accents).
        self._prototype.sender = settings.sender
        self._translate = CachedGettext()

    def message_id(self, campaign_token: str, delivery_id: int | str) -> str:
        # Stable per delivery: a copy re-sent after a lost connection keeps the same
        # id, so mail clients can drop the duplicate.
        return f"<publipostage.{campaign_token}.{delivery_id}@{self.settings.domain}>"

    def build(self, recipient: Recipient, address: str, message_id: str) -> Message:
        rendered = render(recipient, self.settings, self._translate)
        return self.from_rendered(rendered, recipient.full_name, address, message_id)

    def from_rendered(self, rendered: RenderedMail, name: str, address: str, message_id: str) -> Message:
        message = copy.copy(self._prototype)
        message.to_name = clean_header(name)
        message.recipients = [address]
        message.subject = rendered.subject
        message.body = rendered.text
        message.alts = {"html": rendered.html}
        message.msgId = message_id
        message.extra_headers = {
            "Auto-Submitted": "auto-generated",
            "Content-Language": "fr",
        }
        return message
