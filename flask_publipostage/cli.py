"""The ``flask publipostage`` command group."""

from __future__ import annotations

from flask.cli import AppGroup

publipostage_cli = AppGroup("publipostage", help="Publipostage des comptes.")

from .mail import commands as mail_commands  # noqa: E402,F401
from .pdf import commands as pdf_commands  # noqa: E402,F401
